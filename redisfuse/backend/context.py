"""What every part of an open volume shares: client, keys, scripts, ids, clock.

Holds no filesystem rules itself; namespace.py, data.py and the others take a
Context so that they can be composed by volume.py and tested alone.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from ..errors import FSError, NoSpace, VolumeGone
from . import events
from .connect import reachability_of
from .health import Health
from .keys import Keys, SessionId
from .metacache import MetaCache
from .model import Settings
from .redis_errors import RateLimitedLog, redis_error
from .scripts import ONCE_SCRIPTS, Fenced, Scripts, check
from .stats import Counters

FORGET_BATCH = 256
"""At most this many answered request ids ride along with one request."""

SPACE_SHORT_S = 60.0
"""After Redis refused a write for lack of memory, freed files are reclaimed at once this long."""


def now_ns() -> int:
    """Wall-clock time in nanoseconds (what POSIX timestamps hold)."""
    return time.time_ns()


class QuickLock:
    """A FIFO lock that costs no event-loop turn and no task lookup when it is free.

    ``anyio.Lock`` checkpoints (yields to the loop) on every acquire, and looks up
    the current task when it is made, taken and released (through sniffio and
    ``asyncio.current_task``, which on Python 3.11 is a ``getpid`` system call
    each time): 5 % of a mount's CPU creating small files, where every open file
    has a lock taken by each write and flush. This one is a flag while nobody
    waits; a waiter waits on an ``anyio.Event``, so cancellation is anyio's, and
    the lock is handed to the first waiter in turn.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: collections.deque[anyio.Event] | None = None

    def locked(self) -> bool:
        return self._held

    async def __aenter__(self) -> None:
        if self._held or self._waiters:
            await self._wait()
        else:
            self._held = True

    async def _wait(self) -> None:
        if self._waiters is None:
            self._waiters = collections.deque()
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # handed the lock, then cancelled: hand it on
                self._release()
            else:
                self._waiters.remove(turn)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        waiters = self._waiters
        if waiters:
            waiters.popleft().set()  # the lock passes to it, held all along
        else:
            self._held = False


class IdAllocator:
    """Hands out ids from ranges reserved with one INCRBY, so most ids cost no round trip.

    A lost reply to INCRBY wastes a range but never hands one id out twice. Requests
    that waited for a reservation that failed fail with it: Redis not answering
    would otherwise hold each of them for another attempt in turn.
    """

    def __init__(
        self,
        client: Redis,
        key: str,
        batch: int,
        guard: Callable[[], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._client = client
        self._guard = guard
        self._key = key
        self._batch = batch
        self._next = 0
        self._end = 0
        self._lock = QuickLock()
        self._failures = 0
        self._failure: FSError | None = None

    def __repr__(self) -> str:
        return f"<IdAllocator {self._key} next={self._next} end={self._end}>"

    def reset(self) -> None:
        """Forget the reserved range: the counter it came from is not the volume's any
        more (the volume vanished and came back restored, with a counter of its own)."""
        self._next = self._end = 0

    async def take(self, count: int = 1) -> list[int]:
        """Return ``count`` fresh ids (without awaiting while the reserved range lasts)."""
        if self._end - self._next >= count and not self._lock.locked():
            first = self._next
            self._next += count
            return list(range(first, first + count))
        out: list[int] = []
        failures = self._failures
        async with self._lock:
            if self._failures != failures and self._failure is not None:
                raise FSError(self._failure.errno or errno.EIO, self._failure.strerror)
            while len(out) < count:
                if self._next >= self._end:
                    want = max(self._batch, count - len(out))
                    try:
                        with self._guard():
                            top = int(await self._client.incrby(self._key, want))
                    except FSError as exc:
                        self._failures += 1
                        self._failure = exc
                        raise
                    self._next, self._end = top - want + 1, top + 1
                take = min(count - len(out), self._end - self._next)
                out.extend(range(self._next, self._next + take))
                self._next += take
        return out


@dataclass(eq=False)
class Context:
    """The shared state of one open volume on this node."""

    client: Redis
    keys: Keys
    scripts: Scripts
    settings: Settings
    address: str
    session: SessionId = SessionId(0)
    peers: tuple[int, ...] = ()
    """The other live sessions of the volume: where change events go."""
    pending_releases: dict[int, int] = field(default_factory=dict)
    """Closed handles (inode -> count) not yet released in Redis: they ride along
    with the next script this node sends, so a close costs no round trip of its own."""
    freed: int = 0
    """Inodes freed with data by piggybacked releases, not yet reclaimed."""
    cache: MetaCache = field(default_factory=lambda: MetaCache(ttl=10.0))
    inode_ids: IdAllocator = field(init=False)
    object_ids: IdAllocator = field(init=False)
    requests: int = 0
    """Ids handed to this session's mutating requests so far (see prepare())."""
    answered: list[str] = field(default_factory=list)
    """Ids of requests answered since the last request that carried such ids."""
    acked: int = 0
    """Successes this session received of its mutating requests (``acked`` of
    ``rq:SID`` in keys.py counts them on the server)."""
    declared_dead: bool = False
    """A script refused this session as dead (Fenced): the volume starts a new one."""
    space_short_until: float = 0.0
    """Until this time (monotonic), space is short: freed data is deleted at once."""
    counters: Counters = field(default_factory=Counters)
    """What this node did (bytes, events...), for the metrics (stats.py)."""
    reply_hook: Callable[[str], Awaitable[None]] | None = None
    """Test hook awaited with a script's name as soon as its reply arrived, before
    anything uses it: a test holds a reply there while a change event overtakes it."""
    health: Health = field(init=False)
    """Whether Redis may be trusted with the volume now (evicting policy, volume gone)."""
    _oom_log: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(5.0))

    @property
    def outage(self) -> bool:
        """Whether Redis is known not to answer: a request failed at its deadline and
        none was answered since (deadline.py). Clean-up after a failure then leaves
        what can wait (a lock's release: its TTL; a close's release: the next request)
        rather than make the failed FUSE request wait another read timeout."""
        reach = reachability_of(self.client)
        return reach is not None and reach.unavailable

    @property
    def space_short(self) -> bool:
        """Whether Redis refused a write for lack of memory in the last minute."""
        return time.monotonic() < self.space_short_until

    def __post_init__(self) -> None:
        self.health = Health(self.keys.volume, self.address)
        self.inode_ids = IdAllocator(self.client, self.keys.counter_ino, 256, self.guard)
        self.object_ids = IdAllocator(self.client, self.keys.counter_obj, 1024, self.guard)

    def prepare(
        self, name: str, keys: list[str], args: list[Any]
    ) -> tuple[list[str], list[Any], str | None]:
        """KEYS, ARGV and request id of a script call. An ONCE_SCRIPTS script gets what
        once() needs: a fresh request id, and the ids of requests answered since."""
        if name not in ONCE_SCRIPTS:
            return keys, args, None
        assert self.session, f"{name}: a mutating script before the session is registered"
        self.requests += 1
        rid = str(self.requests)
        answered, self.answered = self.answered[:FORGET_BATCH], self.answered[FORGET_BATCH:]
        return (
            [*keys, self.keys.sessions, self.keys.requests(self.session)],
            [*args, self.session, rid, " ".join(answered)],
            rid,
        )

    def answer(self, *replies: tuple[str | None, Any]) -> None:
        """Replies (request id, result) arrived: their records can go, with the next
        request; successes are counted (``acked``)."""
        for rid, result in replies:
            if rid is None:
                continue
            self.answered.append(rid)
            if not isinstance(result, BaseException) and int(result[0]) == 0:
                self.acked += 1

    def queue_script(
        self, pipe: Pipeline, name: str, keys: list[str], args: list[Any]
    ) -> str | None:
        """Queue a script on ``pipe`` (prepared as above); returns its request id."""
        keys, args, rid = self.prepare(name, keys, args)
        self.scripts.queue(pipe, name, keys, args)
        return rid

    async def script(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        *,
        changed: Iterable[int] = (),
        entries: Iterable[tuple[int, bytes]] = (),
        ticket: int = 0,
    ) -> list[Any]:
        """Run a Lua script, turning Redis failures into FSErrors.

        A mutating script names the inodes and entries it may change: they are
        dropped from this node's cache when it is sent and again when its reply
        arrives, and the change event for other nodes is published in the same
        round trip, right after the script. ``ticket`` (taken by the caller just
        before) is what the caller fills the cache with from the reply.
        """
        changed = tuple(changed)
        entries = tuple(entries)
        assert all(self.keys.owns(k) for k in keys), f"{name}: a key without the volume's tag"
        if changed or entries:
            ticket = ticket or self.cache.ticket()
            self.cache.changing(ticket, changed, entries)
        with self.guard():
            try:
                if not self.pending_releases and not (self.peers and (changed or entries)):
                    keys, args, rid = self.prepare(name, keys, args)
                    result = await self.scripts.call(self.client, name, keys, args, check_=False)
                    if self.reply_hook is not None:
                        await self.reply_hook(name)
                    self.answer((rid, result))
                    return self.check(name, result)
                pipe = self.client.pipeline(transaction=False)
                releases = self.queue_releases(pipe)
                sent = self.queue_script(pipe, name, keys, args)
                self.publish(pipe, changed, entries)
                results = await self.scripts.execute(self.client, pipe)
                if self.reply_hook is not None:
                    await self.reply_hook(name)
                self.answer(
                    *zip(releases, results[: len(releases)], strict=True),
                    (sent, results[len(releases)]),
                )
                self.settle_releases(results[: len(releases)])
                return self.check(name, results[len(releases)])
            except BaseException:
                # A refusal (EEXIST, ENOENT, stale) means this node's view was wrong.
                for parent, _ in entries:
                    self.cache.drop_listing(parent)
                raise
            finally:
                self.cache.changing(ticket, changed, entries)

    def publish(
        self, pipe: Pipeline, changed: Iterable[int], entries: Iterable[tuple[int, bytes]] = ()
    ) -> None:
        """Queue the change event for every other live session on ``pipe``."""
        if not self.peers:
            return
        message = events.encode(self.session, changed, entries)
        command = events.publish_command(self.client)
        for peer in self.peers:
            pipe.execute_command(command, self.keys.events_for(peer), message)

    def release_keys(self, ino: int, session: int | None = None) -> list[str]:
        """KEYS of release.lua for ``ino`` held by ``session`` (default: this one)."""
        k = self.keys
        sid = self.session if session is None else session
        return [
            k.inode(ino),
            k.open_files(sid),
            k.dirents(ino),
            k.xattrs(ino),
            k.symlink(ino),
            k.blockmap(ino),
            k.usage,
            k.reclaim,
            k.orphans,
        ]

    def queue_releases(self, pipe: Pipeline) -> list[str | None]:
        """Put the pending releases at the head of ``pipe``; return their request ids
        (for answer(); as many as were queued).

        They are taken off the pending list at once: if the pipeline fails they
        are not repeated; the session's leftover
        holds are released when it closes or is reclaimed.
        """
        if not self.pending_releases:
            return []
        now_ms = now_ns() // 1_000_000
        pending, self.pending_releases = self.pending_releases, {}
        return [
            self.queue_script(pipe, "release", self.release_keys(ino), [ino, count, now_ms])
            for ino, count in pending.items()
        ]

    def settle_releases(self, results: list[Any]) -> None:
        for result in results:
            if int(self.check("release", result)[1]) == 2:
                self.freed += 1

    async def flush_releases(self) -> None:
        """Send the pending releases now (housekeeping tick, close, or a long backlog)."""
        if not self.pending_releases:
            return
        with self.guard():
            pipe = self.client.pipeline(transaction=False)
            sent = self.queue_releases(pipe)
            results = await self.scripts.execute(self.client, pipe)
        self.answer(*zip(sent, results[: len(sent)], strict=True))
        self.settle_releases(results[: len(sent)])

    async def forget_answered(self) -> None:
        """Delete the records of answered requests that no later request took along
        (housekeeping: a quiet node leaves no records behind for long)."""
        if not self.answered or not self.session:
            return
        ids, self.answered = self.answered, []
        with self.guard():
            await self.client.hdel(self.keys.requests(self.session), *ids)

    def forget(self, changed: Iterable[int], entries: Iterable[tuple[int, bytes]]) -> None:
        """Drop what a change made stale from this node's caches."""
        for ino in changed:
            self.cache.drop_attr(ino)
        for parent, name in entries:
            self.cache.drop_entry(parent, name)

    def check(self, name: str, result: list[Any]) -> list[Any]:
        """:func:`scripts.check`, noting a refusal of this session as dead."""
        try:
            return check(name, result)
        except Fenced:
            self.declared_dead = True
            raise

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn any Redis failure raised inside the block into an FSError.

        Once the volume is known to be gone from Redis (health.py), nothing is
        sent: every request fails here with EIO, and nothing of the volume can be
        written again by this node until it is back.
        """
        if self.health.gone is not None:
            raise VolumeGone(self.health.gone)
        try:
            yield
        except (RedisError, OSError) as exc:
            if isinstance(exc, FSError):
                raise
            raise self.translate(exc) from exc

    def translate(self, exc: BaseException) -> FSError:
        """The one place that maps Redis failures to filesystem errors (see redis_error)."""
        error = redis_error(exc, self.address)
        if isinstance(error, NoSpace):
            self.space_short_until = time.monotonic() + SPACE_SHORT_S
            self._oom_log.note(str(error.strerror))
        return error
