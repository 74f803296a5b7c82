"""Opens a volume and composes namespace, data and xattrs into the inode-level API.

Owns the lifecycle (connect, format, session, batched reclaim, clean close),
the open file handles and the per-inode write buffers of this node. ``Inodes``
is what the FUSE frontend calls; library users get the path-level
``paths.Volume`` from :func:`open_volume`, which wraps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import cast

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .. import __version__
from ..errors import BackendUnavailable, FormatError, FSError, ReadOnly, UnsafeRedis
from . import events
from .cache import ObjectCache
from .cancellation import raise_if_cancelled
from .capacity import Capacity
from .cluster import is_cluster, masters_info, memory_info
from .cluster_replicas import ClusterReplicaWait
from .connect import RedisOptions, connect, reachability_of, retry_stats
from .context import Context, now_ns
from .data import BlockStore, DirtyFile
from .events import Event
from .health import policies_of, policy_refusal
from .keys import ROOT_INO, SPREAD, TAGGED, Keys
from .lock import Lock
from .model import (
    BLOCK_SIZE,
    FORMAT_VERSION,
    MAX_FILE_SIZE,
    MAX_NAME,
    SPREAD_FORMAT_VERSION,
    Attr,
    DirEntry,
    SetAttr,
    Settings,
    StatFs,
    attr_from_pairs,
)
from .namespace import Namespace
from .paths import Volume
from .reader import READ_AHEAD_BLOCKS
from .redis_errors import redis_error
from .replicas import ReplicaWait
from .scripts import Fenced, Scripts
from .session import Sessions
from .stats import BackendStats, snapshot
from .xattrs import Xattrs

log = logging.getLogger(__name__)

RELEASE_BACKLOG = 256
"""Closed handles waiting to ride along with other requests before they are sent alone."""

RECLAIM_BATCH = 64
"""Freed inodes whose objects are deleted together, in two round trips."""

HEARTBEAT_SLACK_S = 1.0
"""Heartbeats further apart than two intervals and this are a gap (see maintain())."""

TRASH_GRACE_MS = 60_000
"""Replaced objects stay this long, so a reader holding an older block map still finds them."""


@dataclass(slots=True)
class OpenFile:
    """One open handle of this node."""

    ino: int
    flags: int

    @property
    def writable(self) -> bool:
        return (self.flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)

    @property
    def readable(self) -> bool:
        return (self.flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)

    @property
    def append(self) -> bool:
        return bool(self.flags & os.O_APPEND)


MIN_REDIS = (7, 0)
"""Redis 7 reads the flags of scripts that must run on a full Redis (see scripts.py)."""


async def _check_server(client: Redis, address: str) -> dict[str, str]:
    """Refuse, in one line, a Redis too old for the scripts, or one whose eviction
    policy may delete the volume's keys (health.py); return the policy of each
    master (of the one server: keyed by ``address``). One round trip on a single
    server, INFO being readable by a least-privileged user too."""
    if is_cluster(client):
        servers = await masters_info(client, "server")
        _, policies = await memory_info(client)
    else:
        pipe = client.pipeline(transaction=False)
        pipe.info("server")
        pipe.info("memory")
        server, memory = await pipe.execute()
        servers = {address: server}
        policies = policies_of({address: memory})
    for info in servers.values():
        version = str(info.get("redis_version", "0"))
        numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if numbers < MIN_REDIS:
            raise BackendUnavailable(
                f"Redis at {address} is version {version}; RedisFUSE needs Redis "
                f"{'.'.join(map(str, MIN_REDIS))} or newer"
            )
    refusal = policy_refusal(address, policies)
    if refusal is not None:
        raise UnsafeRedis(refusal)
    return policies


async def _load_settings(
    client: Redis, keys: Keys, codec: str, create: bool, address: str
) -> Settings:
    """Read the volume's settings, formatting the volume first if it is empty
    (and ``create`` allows it).

    A volume formatted through a cluster client spreads its objects over the
    cluster (format 2, ``objects`` spread); one formatted on a single server
    keeps them in its slot (format 1), as every volume did before clusters.
    """
    scripts = Scripts()
    await scripts.load(client)
    fields = cast(dict[bytes, bytes], await client.hgetall(keys.setting))
    if not fields and not create:
        raise FormatError(
            f"volume {keys.volume!r} does not exist in Redis at {address} (not formatted, "
            "or its keys were deleted)"
        )
    if not fields:
        now = now_ns()
        spread = is_cluster(client)
        args = [
            SPREAD_FORMAT_VERSION if spread else FORMAT_VERSION,
            BLOCK_SIZE,
            codec,
            now,
            uuid.uuid4().hex,
            stat.S_IFDIR | 0o755,
            os.getuid(),
            os.getgid(),
            SPREAD if spread else TAGGED,
        ]
        keys_ = [keys.setting, keys.inode(ROOT_INO), keys.usage, keys.counter_ino]
        formatted = await scripts.call(client, "format", keys_, args)
        if int(formatted[1]) == 1:
            log.info("formatted new volume %r", keys.volume)
        fields = cast(dict[bytes, bytes], await client.hgetall(keys.setting))
    version = int(fields.get(b"format", b"0"))
    objects = fields.get(b"objects", TAGGED.encode()).decode()
    if (version, objects) not in ((FORMAT_VERSION, TAGGED), (SPREAD_FORMAT_VERSION, SPREAD)):
        raise FormatError(
            f"volume {keys.volume!r} has format version {version} (objects {objects}); "
            f"this RedisFUSE {__version__} reads only format {FORMAT_VERSION} "
            f"(and {SPREAD_FORMAT_VERSION}, objects spread over a cluster)"
        )
    return Settings(
        format_version=version,
        block_size=int(fields[b"block_size"]),
        codec=fields[b"codec"].decode(),
        created_ns=int(fields[b"created"]),
        uuid=fields[b"uuid"].decode(),
        objects=objects,
    )


class Inodes:
    """The inode-level filesystem of an open volume (what FUSE calls). See :func:`open_volume`."""

    def __init__(
        self,
        ctx: Context,
        *,
        read_only: bool,
        cache_bytes: int,
        write_buffer_bytes: int,
        session_timeout: float = 60.0,
    ) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.read_only = read_only
        self.namespace = Namespace(ctx)
        self.xattrs = Xattrs(ctx)
        self.data = BlockStore(ctx, ObjectCache(cache_bytes))
        self.write_buffer_bytes = write_buffer_bytes
        self._handles: dict[int, OpenFile] = {}
        self._next_fh = 1
        self._dirty: dict[int, DirtyFile] = {}
        self._local_opens: dict[int, int] = {}
        self._stale: set[int] = set()
        """Handles opened in a session that was declared dead (see renew_session)."""
        self._closed = False
        self.sessions = Sessions(ctx, session_timeout)
        self.replica_wait: ReplicaWait | None = None
        """Set by open_volume when commits must reach replicas before fsync/close return."""
        self.capacity = Capacity(ctx)
        self._fenced = False
        self.event_silence = events.DEFAULT_SILENCE_S
        """A change-event subscription silent this long is replaced (open_volume: the
        read timeout)."""
        self.reset_listeners: list[Callable[[], None]] = []
        """Called, synchronously and before any request is served again, when the
        volume came back after it vanished from Redis (see :meth:`_resume`): inode
        numbers handed out before may name other files now. The FUSE frontend
        registers here to treat the inodes the kernel holds as stale."""
        self._beat_ok = time.monotonic()
        """When this node's heartbeat last went through (maintain: gaps)."""
        self._beat_interval = 2.0

    def __repr__(self) -> str:
        stats = retry_stats(self.ctx.client)
        return (
            f"<Inodes {self.keys.volume!r} session={self.ctx.session} open={len(self._handles)}"
            f" dirty={len(self._dirty)} retries={stats.total if stats else 0} {self.data.cache!r}>"
        )

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(f"{self!r} was not closed", ResourceWarning, stacklevel=1)

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def stats(self) -> BackendStats:
        """This node's counters and state now (stats.py; safe from another thread)."""
        return snapshot(self)

    def open_handle_count(self) -> int:
        return len(self._handles)

    def dirty_bytes(self) -> int:
        """Written data buffered here and not yet committed (atomic copies: any thread)."""
        total = 0
        for dirty in list(self._dirty.values()):
            for part in (dirty, dirty.committing):
                if part is not None:
                    total += sum(len(b) for b in list(part.blocks.values()))
        return total

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnly(f"volume {self.keys.volume!r} is open read-only")
        self.ctx.health.check_writable()
        if self._fenced and not self.sessions.lease_valid:
            raise FSError(
                errno.EIO,
                "this node's session lease expired; refusing to write "
                "until its heartbeat reaches Redis again",
            )

    async def _end_session(self) -> tuple[int, list[int]]:
        """Let go of what this node held in a session that is over (declared dead, or
        its volume vanished): buffered writes are dropped, the handles opened in it
        fail with EIO from now on. Returns (how many handles, inodes with lost writes)."""
        lost = sorted(ino for ino, d in self._dirty.items() if d.blocks or d.end or d.inflight)
        for dirty in self._dirty.values():
            if dirty.inflight is not None:
                dirty.inflight.cancel()  # a commit behind a writer: refused anyway
                await asyncio.wait([dirty.inflight])
                dirty.inflight = dirty.committing = None
            dirty.discard()
        stale = set(self._handles) - self._stale
        self._stale |= stale
        self.ctx.pending_releases.clear()
        self.ctx.answered.clear()
        self.ctx.acked = 0
        self.ctx.freed = 0
        return len(stale), lost

    async def _start_session(self, old: int) -> None:
        """Register a new session in place of ``old`` and reclaim what is left of that."""
        await self.sessions.register(self.sessions.mountpoint, self.sessions.event_loop)
        self.ctx.counters.session_renewals += 1
        self.ctx.declared_dead = False
        # Whatever of the old session another node has not yet reclaimed goes now
        # (its handles here are stale, so nothing releases them twice).
        await self.sessions.reclaim(old)

    async def renew_session(self) -> None:
        """Start a new session after this one was declared dead by another node.

        That node released what this one held (a mount paused or cut off past its
        session timeout): the handles opened before now fail with EIO, and the
        writes still buffered are dropped and reported, never applied over what
        others did meanwhile. Later requests run in the new session.
        """
        old = self.ctx.session
        stale, lost = await self._end_session()
        await self._start_session(old)
        log.error(
            "session %d was declared dead by another node (this node was paused or cut off "
            "for longer than its session timeout) and what it held was released there: "
            "%d open handles now fail with EIO, unflushed writes to %d files were dropped%s; "
            "continuing as session %d",
            old,
            stale,
            len(lost),
            _inodes(lost),
            self.ctx.session,
        )
        await self.sessions.announce()

    async def _settings_now(self) -> dict[bytes, bytes]:
        """The volume's setting hash as Redis holds it now: one read, allowed while the
        volume is gone (it writes nothing)."""
        try:
            return cast(dict[bytes, bytes], await self.ctx.client.hgetall(self.keys.setting))
        except (RedisError, OSError) as exc:
            raise self.ctx.translate(exc) from exc

    def _foreign(self, fields: dict[bytes, bytes]) -> str | None:
        """Why ``fields`` (the setting hash now) are not this volume's, or None when they
        are: a volume is known by its uuid (and must keep its layout to be resumed)."""
        if not fields:
            return ""
        settings = self.ctx.settings
        uuid_now = fields.get(b"uuid", b"").decode(errors="replace")
        if uuid_now != settings.uuid:
            return f" (a volume formatted there since has its name, uuid {uuid_now})"
        same_layout = (
            int(fields.get(b"block_size", b"0")) == settings.block_size
            and fields.get(b"objects", TAGGED.encode()).decode() == settings.objects
        )
        if not same_layout:
            return " (a volume with its uuid is there, but with another block size or layout)"
        return None

    def _vanish(self, detail: str) -> None:
        """The volume's keys are gone: say so once; from now on nothing reaches Redis
        but the housekeeping's one read of the setting key (see maintain)."""
        self.ctx.health.vanished(detail)
        self.ctx.cache.enabled = False
        self.ctx.cache.clear()

    async def _resume(self) -> None:
        """The same volume (same uuid) is back: restored by ``redisfuse load``, or the
        server's data came back. Work goes on in a new session, as after
        :meth:`renew_session`. A load numbers inodes and objects afresh, so every
        cache and id range of the old incarnation goes, and the reset listeners
        learn it before any request is served again."""
        old = self.ctx.session
        stale, lost = await self._end_session()
        self.ctx.cache.clear()
        self.data.forget()
        self.ctx.inode_ids.reset()
        self.ctx.object_ids.reset()
        for listener in self.reset_listeners:
            listener()
        self.ctx.health.returned()
        await self._start_session(old)
        log.info(
            "volume %r is back in Redis at %s (uuid %s): continuing as session %d; %d open "
            "handles fail with EIO, unflushed writes to %d files were dropped%s",
            self.keys.volume,
            self.ctx.address,
            self.ctx.settings.uuid,
            self.ctx.session,
            stale,
            len(lost),
            _inodes(lost),
        )
        await self.sessions.announce()

    async def _housekeep(self, rounds: int) -> None:
        """One round of :meth:`maintain`.

        A heartbeat that finds the session unregistered (or a script that refused
        it) means either that another node declared this one dead, or that the
        volume itself is gone (FLUSHALL, an empty server in its place): one read of
        the setting key tells them apart. While the volume is gone, that read is
        all a round sends, so nothing of the volume is created again, until the
        same volume is back.
        """
        if self.ctx.health.gone is not None:
            if self._foreign(await self._settings_now()) is None:
                await self._resume()
            return
        if not await self.sessions.heartbeat() or self.ctx.declared_dead:
            detail = self._foreign(await self._settings_now())
            if detail is not None:
                self._vanish(detail)
                return
            await self.renew_session()
        self._heartbeat_went_through()
        await self.capacity.poll()
        await self.sessions.refresh_peers()
        await self.ctx.flush_releases()
        await self.ctx.forget_answered()
        for sid in await self.sessions.dead():
            await self.sessions.reclaim(sid)
        if rounds % 10 == 0:
            await self.gc()

    def _heartbeat_went_through(self) -> None:
        """Note a heartbeat that got through; after a gap, give the others a grace."""
        now = time.monotonic()
        if now - self._beat_ok > 2 * self._beat_interval + HEARTBEAT_SLACK_S:
            self.sessions.back_after_gap()
        self._beat_ok = now

    async def maintain(self, interval: float | None = None) -> None:
        """Run the session's housekeeping until cancelled: heartbeat, reclaim, gc, and
        the watch over Redis' eviction policy and the volume's existence (health.py).

        The FUSE frontend runs this for the life of the mount; a library user who
        keeps a volume open for long should run it in a task too. Once it runs,
        writes are fenced: a node whose lease expired (say, frozen, or cut off
        from Redis) refuses to write instead of racing the node that reclaimed it.

        It outlives any outage: a round that fails is tried again next round
        (logged once per outage, which deadline.py reports). After a gap in its
        own heartbeats (Redis unreachable or silent, or this process stopped),
        every other session gets a grace of its own timeout before this node
        counts it dead: they could not heartbeat either (Sessions.dead).
        """
        interval = interval or min(max(self.sessions.timeout / 6, 0.2), 2.0)
        self._fenced = True
        self._beat_interval = interval
        self._beat_ok = time.monotonic()
        rounds = 0
        try:
            while True:
                raise_if_cancelled()  # one lost in a command of the last round
                try:
                    await self._housekeep(rounds)
                except Fenced as exc:
                    # The session went between the heartbeat and a later step (another
                    # node reclaimed it, or the volume vanished): the next round's
                    # heartbeat finds out which, and says so.
                    log.debug("housekeeping stopped: %s", exc)
                except FSError as exc:
                    reach = reachability_of(self.ctx.client)
                    if reach is not None and reach.warned:
                        log.debug("housekeeping failed during the outage (will retry): %s", exc)
                    else:
                        log.warning("housekeeping failed (will retry): %s", exc)
                except Exception:
                    # Housekeeping must outlive any bug in one round: the mount runs it
                    # for its whole life and would end with it.
                    log.exception("housekeeping round failed (will retry)")
                rounds += 1
                await anyio.sleep(interval)
        finally:
            self._fenced = False

    # -- lifecycle -----------------------------------------------------------

    async def _freed(self, fate: int) -> None:
        """Count inodes freed with their data; delete their objects in batches.

        Batching keeps unlink at one round trip for most calls; the volume holds no
        background task (it may be opened in one task and closed in another).
        """
        if fate == 2:
            self.ctx.freed += 1
        if self.ctx.freed >= RECLAIM_BATCH or (self.ctx.freed and self.ctx.space_short):
            # While Redis is short of memory, a freed file's data goes at once.
            await self.reclaim_pending()

    async def reclaim_pending(self) -> int:
        """Delete the block maps and objects of every freed inode; return how many."""
        await self.ctx.flush_releases()
        with self.ctx.guard():
            pending = cast(list[bytes], await self.ctx.client.zrange(self.keys.reclaim, 0, -1))
        await self.data.reclaim([int(i) for i in pending])
        self.ctx.freed = 0
        return len(pending)

    async def aclose(self) -> None:
        """Flush every buffer, release every handle, end the session, close the client."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self.data.reader.aclose()
            if self.ctx.health.gone is not None:
                # Nothing to flush or release in a volume that is not there, and
                # nothing of it may be created again.
                if self.replica_wait is not None:
                    await self.replica_wait.aclose()
                return
            for fh in list(self._handles):
                try:
                    await self.release(fh)
                except FSError as exc:
                    log.error("could not release handle %d at close: %s", fh, exc)
            try:
                await self.ctx.flush_releases()
            finally:
                # Also drops holds whose release was lost in a failed request.
                await self.sessions.reclaim(self.ctx.session)
            await self.reclaim_pending()
            if self.replica_wait is not None:
                await self.replica_wait.aclose()

    # -- change events -----------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Other nodes' changes, as they happen; turns this node's metadata cache on.

        While this iterator runs, attributes and entries are cached here and
        dropped as events arrive; ``Resync`` (first, and after any reconnect)
        clears the cache, and ``Stalled`` (the subscription went silent) clears
        it and turns it off until the next ``Resync``. Consumers (the FUSE
        frontend) use the events to invalidate their own caches too.
        """
        cache = self.ctx.cache
        counters = self.ctx.counters
        try:
            while True:
                session = self.ctx.session
                stream = events.listen(
                    self.ctx.client,
                    self.keys.events_for(session),
                    self.keys.events,
                    session,
                    lambda: self.ctx.health.gone is None,
                    silence=self.event_silence,
                    address=self.ctx.address,
                )
                try:
                    async for event in stream:
                        if isinstance(event, events.PeerJoined) and event.sid == self.ctx.session:
                            break  # this node renewed its session: listen on the new channel
                        if isinstance(event, events.InodeChanged):
                            counters.events_inode += 1
                            cache.drop_attr(event.ino)
                        elif isinstance(event, events.EntryChanged):
                            counters.events_entry += 1
                            cache.drop_entry(event.parent, event.name)
                            cache.drop_listing(event.parent)
                        elif isinstance(event, events.PeerJoined):
                            counters.events_peer += 1
                            self.sessions.add_peer(event.sid)
                        elif isinstance(event, events.Stalled):
                            counters.events_stalled += 1
                            cache.clear()
                            cache.enabled = False
                        else:
                            counters.events_resync += 1
                            cache.clear()
                            if self.ctx.health.gone is None:
                                cache.enabled = True
                                await self._rejoin()
                        yield event
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]
        finally:
            cache.enabled = False
            cache.clear()

    async def _rejoin(self) -> None:
        """Subscribed (again): make sure every live session knows to send us its changes,
        and that we know whom to send ours. A failure is left to the heartbeat, which
        re-reads the live sessions (and others re-read ours) every round."""
        try:
            await self.sessions.announce()
            await self.sessions.refresh_peers()
        except FSError as exc:
            log.debug("could not announce this session after subscribing: %s", exc)

    # -- attributes and names ------------------------------------------------

    def _overlay(self, attr: Attr) -> Attr:
        """Show buffered writes of this node in the size and in mtime/ctime (POSIX: a
        stat after write() sees the write's times, also before the commit).

        A reply older than this node's own last commit to the file (it was on its
        way while the commit completed) is replaced by what the commit returned:
        the writes it carried are no longer pending, and the reply lacks them.
        """
        dirty = self._dirty.get(attr.ino)
        if dirty is None:
            return attr
        if dirty.attr is not None and dirty.attr.version > attr.version:
            attr = dirty.attr
        end, written = dirty.pending_end_and_time()
        if end > attr.size:
            attr = replace(attr, size=end)
        if written:  # what the commit will stamp
            attr = replace(attr, mtime_ns=written, ctime_ns=max(attr.ctime_ns, written))
        return attr

    # Synchronous answers from this node's cache: the FUSE frontend asks these
    # first and crosses to the event loop only when they have no answer, because
    # beneath trio-asyncio a crossing costs more than the lookup itself.

    def cached_attr(self, ino: int) -> Attr | None:
        """The attributes of ``ino`` if the (event-coherent) cache has them."""
        attr = self.ctx.cache.attr(ino)
        return None if attr is None else self._overlay(attr)

    def cached_lookup(self, parent: int, name: bytes) -> Attr | None:
        """The attributes ``name`` in ``parent`` resolves to, if cached."""
        attr = self.ctx.cache.entry(parent, name)
        return None if attr is None else self._overlay(attr)

    def current(self, attr: Attr) -> bool:
        """Whether ``attr`` is this node's current knowledge of its inode, so that the
        kernel may cache it: a reply that an event overtook is not (the kernel's
        invalidation for that event may already be done)."""
        return self.ctx.cache.holds(attr)

    def current_entry(self, parent: int, name: bytes, ino: int) -> bool:
        """Whether ``name`` in ``parent`` naming ``ino`` is current (see :meth:`current`)."""
        return self.ctx.cache.holds_entry(parent, name, ino)

    def known_absent(self, parent: int, name: bytes) -> bool:
        """Whether the cache knows that ``parent`` has no entry ``name`` (a valid name)."""
        return 0 < len(name) <= MAX_NAME and self.ctx.cache.absent(parent, name)

    def known_without_xattrs(self, ino: int) -> bool:
        """Whether the cache knows that ``ino`` has no extended attributes."""
        attr = self.ctx.cache.attr(ino)
        return attr is not None and attr.xattr_count == 0

    async def getattr(self, ino: int) -> Attr:
        return self._overlay(await self.namespace.getattr(ino))

    async def lookup(self, parent: int, name: bytes) -> Attr:
        return self._overlay(await self.namespace.lookup(parent, name))

    async def mknod(
        self, parent: int, name: bytes, mode: int, uid: int, gid: int, rdev: int = 0
    ) -> Attr:
        self._writable()
        return await self.namespace.create(parent, name, mode, uid, gid, rdev=rdev)

    async def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        self._writable()
        mode = stat.S_IFDIR | stat.S_IMODE(mode)
        return await self.namespace.create(parent, name, mode, uid, gid)

    async def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Attr:
        self._writable()
        mode = stat.S_IFLNK | 0o777
        return await self.namespace.create(parent, name, mode, uid, gid, target=target)

    async def create(
        self, parent: int, name: bytes, mode: int, flags: int, uid: int, gid: int
    ) -> tuple[int, Attr]:
        """Create and open a regular file (O_EXCL semantics); returns (handle, attributes)."""
        self._writable()
        mode = stat.S_IFREG | stat.S_IMODE(mode)
        attr = await self.namespace.create(parent, name, mode, uid, gid, open_it=True)
        return self._new_handle(attr, flags), attr

    async def readlink(self, ino: int) -> bytes:
        return await self.namespace.readlink(ino)

    async def link(self, ino: int, parent: int, name: bytes) -> Attr:
        self._writable()
        return self._overlay(await self.namespace.link(ino, parent, name))

    async def unlink(self, parent: int, name: bytes) -> None:
        self._writable()
        await self._freed(await self.namespace.remove(parent, name, rmdir=False))

    async def rmdir(self, parent: int, name: bytes) -> None:
        self._writable()
        await self.namespace.remove(parent, name, rmdir=True)

    async def rename(
        self, parent: int, name: bytes, newparent: int, newname: bytes, flags: int = 0
    ) -> None:
        self._writable()
        await self._freed(await self.namespace.rename(parent, name, newparent, newname, flags))

    async def readdir(self, ino: int, offset: int = 0) -> list[DirEntry]:
        return await self.namespace.readdir(ino, offset)

    async def setattr(self, ino: int, changes: SetAttr) -> Attr:
        self._writable()
        # Buffered writes happened before this call: commit them first, or their
        # commit would later stamp mtime "now" over the time set here (tar, cp -a).
        if changes.size is not None or changes.mtime_ns is not None:
            dirty = self._dirty.get(ino)
            if dirty is not None:
                async with dirty.lock:
                    keys, args = await self.namespace.setattr_call(ino, changes)
                    # The commit and the setattr go in one round trip, in that order.
                    ticket = self.ctx.cache.ticket()
                    res = await self.data.flush(dirty, then=("setattr", keys, args), ticket=ticket)
                    if res is None:
                        attr = await self.namespace.setattr(ino, changes)
                    else:
                        attr = self.namespace.setattr_done(ino, res, ticket)
                    dirty.learn(attr)
                    return attr
        return await self.namespace.setattr(ino, changes)

    # -- extended attributes ---------------------------------------------------

    async def getxattr(self, ino: int, name: bytes) -> bytes:
        return await self.xattrs.get(ino, name)

    async def listxattr(self, ino: int) -> list[bytes]:
        return await self.xattrs.list(ino)

    async def setxattr(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        self._writable()
        await self.xattrs.set(ino, name, value, flags)

    async def removexattr(self, ino: int, name: bytes) -> None:
        self._writable()
        await self.xattrs.remove(ino, name)

    async def statfs(self) -> StatFs:
        """Usage against the room the volume has (capacity.py says where it comes from)."""
        return await self.capacity.statfs()

    # -- open files ------------------------------------------------------------

    def _new_handle(self, attr: Attr, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = OpenFile(attr.ino, flags)
        self._local_opens[attr.ino] = self._local_opens.get(attr.ino, 0) + 1
        dirty = self._dirty.get(attr.ino)
        if dirty is None:
            dirty = self._dirty[attr.ino] = DirtyFile(attr.ino)
        dirty.learn(attr)
        return fh

    def _file(self, fh: int) -> OpenFile:
        if fh in self._stale:
            raise FSError(
                errno.EIO, f"handle {fh} was opened in a session another node declared dead"
            )
        try:
            return self._handles[fh]
        except KeyError:
            raise FSError(errno.EBADF, f"no open handle {fh}") from None

    async def open(self, ino: int, flags: int) -> tuple[int, Attr]:
        """Open an inode; O_TRUNC truncates. Returns (handle, fresh attributes)."""
        if flags & (os.O_ACCMODE | os.O_TRUNC) != os.O_RDONLY:
            self._writable()
        keys = [
            self.keys.inode(ino),
            self.keys.open_files(self.ctx.session),
            self.keys.blockmap(ino),
        ]
        window = list(range(READ_AHEAD_BLOCKS)) if self.ctx.cache.enabled else []
        ticket = self.ctx.cache.ticket()
        res = await self.ctx.script("open", keys, [ino, *window])
        attr = attr_from_pairs(ino, res[1])
        if window and attr.is_reg:
            self.ctx.cache.put_block_map(ino, 0, list(res[2]), attr.size, attr.version, ticket)
        fh = self._new_handle(attr, flags)
        try:
            if attr.is_dir and (flags & os.O_ACCMODE) != os.O_RDONLY:
                raise FSError(errno.EISDIR, f"inode {ino} is a directory")
            if flags & os.O_TRUNC and attr.is_reg and attr.size:
                attr = await self.setattr(ino, SetAttr(size=0))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.release(fh)
            raise
        return fh, self._overlay(attr)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        of = self._file(fh)
        if not of.readable:
            raise FSError(errno.EBADF, f"handle {fh} is not open for reading")
        dirty = self._dirty.get(of.ino)
        pending = None if dirty is None else dirty.pending()
        data = await self.data.read(of.ino, offset, size, pending)
        self.ctx.counters.bytes_read += len(data)
        return data

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        """Buffer a write; it reaches Redis on flush, fsync, release or a full buffer."""
        of = self._file(fh)
        if not of.writable:
            raise FSError(errno.EBADF, f"handle {fh} is not open for writing")
        self._writable()
        if offset < 0:
            raise FSError(errno.EINVAL, "negative offset")
        dirty = self._dirty[of.ino]
        async with dirty.lock:
            if dirty.error is not None:
                # A commit behind this writer failed (a full Redis: ENOSPC): the
                # writer learns it now, not only at close. Its blocks stay
                # buffered and are committed again by the next flush.
                error, dirty.error = dirty.error, None
                raise error
            if of.append:
                await self._append(dirty, data)
                self.ctx.counters.bytes_written += len(data)
                return len(data)
            if offset + len(data) > MAX_FILE_SIZE:
                raise FSError(errno.EFBIG, f"write past the maximum file size {MAX_FILE_SIZE}")
            await self.data.write(dirty, offset, data)
            if dirty.buffered >= self.write_buffer_bytes:
                await self.data.flush_behind(dirty)
        self.ctx.counters.bytes_written += len(data)
        return len(data)

    async def _append(self, dirty: DirtyFile, data: bytes) -> None:
        """O_APPEND: place ``data`` at the end of file as Redis sees it, under the inode lock.

        The end is read and the write committed while the lock is held, so appends
        from several nodes never overwrite each other.
        """
        async with Lock(self.ctx, self.keys.inode_lock(dirty.ino), renew=False):
            await self.data.flush(dirty)
            dirty.known_size = await self.data.committed_size(dirty.ino)
            offset = max(dirty.known_size, dirty.end)
            if offset + len(data) > MAX_FILE_SIZE:
                raise FSError(errno.EFBIG, f"write past the maximum file size {MAX_FILE_SIZE}")
            await self.data.write(dirty, offset, data)
            await self.data.flush(dirty)

    async def flush(self, fh: int) -> None:
        """Commit this node's buffered writes to the handle's inode.

        close(2) reports what flush returns, so with ``replicas`` set a writable
        handle's flush also waits for the replicas (fsync and release call it).
        """
        of = self._file(fh)
        dirty = self._dirty.get(of.ino)
        if dirty is not None and (dirty.blocks or dirty.end or dirty.inflight):
            async with dirty.lock:
                await self.data.flush(dirty)
        if of.writable and self.replica_wait is not None:
            await self.replica_wait.confirm()

    async def fsync(self, fh: int) -> None:
        """Like flush: returns once Redis has acknowledged the commit."""
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        """Close a handle: flush, then drop this session's hold on the inode."""
        if fh in self._stale:
            # Its hold went with the dead session; nothing of it is left in Redis.
            self._stale.discard(fh)
            of = self._handles.pop(fh)
            self._drop_local_open(of.ino)
            return
        of = self._file(fh)
        try:
            await self.flush(fh)
        except FSError:
            if of.writable and not any(
                h.writable and h.ino == of.ino for f, h in self._handles.items() if f != fh
            ):
                # This close reports the failure; the writes that failed are dropped
                # with it, as a local disk drops them, instead of resurfacing in the
                # close of a handle (a reader's, say) that never wrote them.
                self._dirty[of.ino].discard()
            raise
        finally:
            del self._handles[fh]
            self._drop_local_open(of.ino)
            cached = self.ctx.cache.attr(of.ino)
            if (cached is not None and cached.nlink > 0) or self.ctx.outage:
                # The file keeps a name (and events would have told us otherwise), so
                # dropping our hold changes nothing anyone can see: let it ride along
                # with the next request instead of costing a round trip now. While
                # Redis does not answer, every release waits for the next request.
                pending = self.ctx.pending_releases
                pending[of.ino] = pending.get(of.ino, 0) + 1
                if len(pending) >= RELEASE_BACKLOG:
                    await self.ctx.flush_releases()
                await self._freed(0)
            else:
                res = await self.ctx.script(
                    "release", self.ctx.release_keys(of.ino), [of.ino, 1, now_ns() // 1_000_000]
                )
                await self._freed(int(res[1]))

    def _drop_local_open(self, ino: int) -> None:
        left = self._local_opens[ino] - 1
        if left:
            self._local_opens[ino] = left
        else:
            del self._local_opens[ino]
            self._dirty.pop(ino, None)

    async def gc(self, grace_ms: int = TRASH_GRACE_MS) -> int:
        """Delete replaced objects older than the grace period and finish pending reclaims."""
        await self.reclaim_pending()
        return await self.data.purge_trash(now_ns() // 1_000_000 - grace_ms)


def _inodes(lost: list[int]) -> str:
    """`` (inodes 3, 9)``: the inodes whose buffered writes were dropped, for a log line."""
    return f" (inodes {', '.join(map(str, lost[:20]))})" if lost else ""


@contextlib.asynccontextmanager
async def open_volume(
    url: str | None = None,
    *,
    volume: str = "default",
    host: str = "localhost",
    port: int = 6379,
    db: int = 0,
    password: str | None = None,
    read_only: bool = False,
    create: bool = True,
    codec: str = "zlib",
    cache_bytes: int = 64 << 20,
    write_buffer_bytes: int = 4 << 20,
    mountpoint: str = "",
    options: RedisOptions | None = None,
    session_timeout: float = 60.0,
    metadata_ttl: float = 10.0,
    quota_bytes: int | None = None,
    quota_inodes: int | None = None,
    event_loop: str = "",
) -> AsyncIterator[Volume]:
    """Open (and on first use format) a volume; close it cleanly on exit.

    Pass a Redis URL (``redis://``, ``rediss://``, ``unix://``) or host, port, db
    and password. Raises BackendUnavailable when Redis cannot be reached and
    FormatError when the volume was formatted by an incompatible version (or was
    never formatted and may not be: opened ``read_only``, or without ``create``,
    as the tools that inspect or repair a volume open it); UnsafeRedis when Redis' eviction
    policy may delete the volume's keys (health.py); other FSErrors when Redis
    refuses (NoSpace: full and the volume not yet formatted; ReadOnly: a replica).
    ``quota_bytes`` and ``quota_inodes`` set the volume's quotas (0 removes one;
    None leaves it as it is): every mount of the volume reports and enforces them.
    ``mountpoint`` and ``event_loop`` are only recorded in the session, for
    ``redisfuse status``.
    """
    opts = options or RedisOptions(url=url, host=host, port=port, db=db, password=password)
    keys = Keys(volume)
    client = await connect(opts)
    try:
        try:
            policies = await _check_server(client, opts.address)
            settings = await _load_settings(
                client, keys, codec, create and not read_only, opts.address
            )
        except RedisError as exc:
            # Full, a read-only replica, a command renamed or denied: one clear error.
            raise redis_error(exc, opts.address) from exc
        keys = keys.with_layout(settings.objects)
        ctx = Context(client, keys, Scripts(), settings, opts.address)
        ctx.health.note_policies(policies)
        inodes = Inodes(
            ctx,
            read_only=read_only,
            cache_bytes=cache_bytes,
            write_buffer_bytes=write_buffer_bytes,
            session_timeout=session_timeout,
        )
        ctx.cache.ttl = metadata_ttl
        inodes.event_silence = opts.read_timeout
        if opts.replicas > 0:
            barrier = ClusterReplicaWait if is_cluster(client) else ReplicaWait
            inodes.replica_wait = barrier(ctx, opts.replicas, opts.replica_timeout)
            if isinstance(inodes.replica_wait, ClusterReplicaWait) and keys.spread:
                inodes.data.objects.replicated = inodes.replica_wait
        try:
            await inodes.sessions.register(mountpoint, event_loop)
            if quota_bytes is not None or quota_inodes is not None:
                inodes._writable()
                await inodes.capacity.set_quota(bytes_=quota_bytes, inodes=quota_inodes)
            yield Volume(inodes)
        finally:
            await inodes.aclose()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
