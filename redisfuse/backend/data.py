"""File contents: block maps, reads, buffered writes and their commits.

Data lives in immutable 64 KiB objects (codec.py) referenced from ``m:INO``.
Writes gather in a per-inode buffer of whole blocks on this node and are
committed by one pipeline (the objects' SETs, then the commit script that swaps
their ids into the map and grows the size, after checking that the objects are
there). Objects spread over a cluster (keys.py) are in other slots than the
script's keys: they are stored first, and the commit is sent only once every
SET has replied OK (a refused or unanswered SET deletes what was stored and
commits nothing), so a block map never names an object that was not stored.
A crash between the SETs and the commit leaves unreferenced objects (found by
fsck/gc), never a torn file.

A block this node wrote only part of holds bytes it read from somewhere: the
map entry it was loaded from, a hole, or the copy in a commit still in flight
(its *base*). The commit swaps it in only if the map still holds that base
(compare and swap, in the script); otherwise nothing is committed, the blocks
that changed meanwhile are merged afresh (their new contents with this node's
bytes on top) and the commit is sent again. So writers on several nodes never
undo each other's bytes in one block, and a wrong guess here (a block taken
for a hole past a size this node saw last) costs a retry, never data.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import anyio
from redis.exceptions import RedisError

from ..errors import FSError
from . import codec
from .cache import ObjectCache
from .context import Context, QuickLock, now_ns
from .model import Attr, attr_from_pairs
from .objects import Objects
from .reader import THREAD_THRESHOLD, BlockReader
from .scripts import Stale

log = logging.getLogger(__name__)

WHOLE = b"*"
"""Base of a block this node wrote in full: it replaces whatever the map holds."""

HOLE = b""
"""Base of a block taken for a hole: it is committed only where the map has none."""

OUTDATED = b"?"
"""Base of a block copied from a commit in flight that merged that block afresh
afterwards (another node had changed it): no map value matches, so the block is
merged afresh too before it is committed."""

COMMIT_ATTEMPTS = 20
"""Commits refused because other nodes kept changing the same blocks, before EAGAIN."""


def merge_ranges(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted, non-overlapping [lo, hi) ranges covering the same bytes as ``ranges``."""
    ordered = sorted(ranges)
    merged = [list(ordered[0])]
    for lo, hi in ordered[1:]:
        if lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return merged


@dataclass(frozen=True, slots=True)
class Pending:
    """This node's writes to one inode not yet in Redis, as they stood at one moment.

    A reply from Redis may be older than a commit that completed while it was
    on its way: a read takes this view *before* it asks, so that every write is
    either in the view or in the reply.
    """

    end: int
    written_ns: int
    layers: tuple[dict[int, bytearray], ...]
    """Blocks by index, newest layer first: the buffer, then a commit in flight."""

    def block(self, idx: int) -> bytearray | None:
        for layer in self.layers:
            found = layer.get(idx)
            if found is not None:
                return found
        return None


class DirtyFile:
    """Unflushed writes to one inode on this node: whole blocks, by index."""

    def __init__(self, ino: int, origin: DirtyFile | None = None) -> None:
        self.ino = ino
        self.origin = origin
        """Of a snapshot committed behind the writer: the file it was detached from."""
        self.blocks: dict[int, bytearray] = {}
        self.end = 0
        """Offset just past the last byte written; the size after the flush is at least this."""
        self.known_size = -1
        """Committed size as last seen here, to skip loading blocks past the end (-1: unknown)."""
        self.attr: Attr | None = None
        """The newest attributes this node's own requests on the inode returned (by
        version): a reply older than them is older than this node's own commit."""
        self.extents: dict[int, list[list[int]]] = {}
        """Byte ranges of each block written here (sorted, merged); the rest came from Redis."""
        self.bases: dict[int, bytes | DirtyFile] = {}
        """What each block was built on (module docstring): the map value it was loaded
        from, HOLE, WHOLE, or the snapshot in flight whose copy it took."""
        self.stored: dict[int, bytes] | None = None
        """Of a snapshot whose commit succeeded: the map value it gave each block."""
        self.remerged: set[int] = set()
        """Blocks merged afresh since they were buffered: copies taken before are outdated."""
        self.written_ns = 0
        """Time of the last buffered write (0: none): stat shows it, and the commit stamps it."""
        self.lock = QuickLock()
        self.committing: DirtyFile | None = None
        """Blocks handed to a commit still in flight (write-behind); reads see them."""
        self.inflight: asyncio.Task[None] | None = None
        self.error: Exception | None = None
        """A commit behind the writer failed: the next flush, fsync or close reports it."""

    def __repr__(self) -> str:
        return f"<DirtyFile ino={self.ino} blocks={len(self.blocks)} end={self.end}>"

    @property
    def buffered(self) -> int:
        return sum(len(b) for b in self.blocks.values())

    def mark(self, idx: int, start: int, end: int) -> None:
        """Record that bytes [start, end) of block ``idx`` were written here."""
        ranges = self.extents.setdefault(idx, [])
        if ranges and start <= ranges[-1][1] and start >= ranges[-1][0]:
            ranges[-1][1] = max(ranges[-1][1], end)  # the sequential case, in O(1)
            return
        ranges.append([start, end])
        self.extents[idx] = merge_ranges(ranges)

    def base_for(self, idx: int, block_size: int) -> bytes:
        """The map value block ``idx`` must replace when committed (WHOLE: any)."""
        if self.extents.get(idx) == [[0, block_size]]:
            return WHOLE
        base = self.bases.get(idx, HOLE)
        while isinstance(base, DirtyFile):
            if idx in base.remerged:
                return OUTDATED
            if base.stored is not None:
                return base.stored.get(idx, HOLE)
            base = base.bases.get(idx, HOLE)  # it failed: its blocks came back here
        return base

    def learn(self, attr: Attr) -> None:
        """Attributes a request of this node returned: keep them if they are newer."""
        if self.attr is None or attr.version >= self.attr.version:
            self.attr = attr
            self.known_size = attr.size

    def committed(self, stored: dict[int, bytes], attr: Attr) -> None:
        """The blocks are in Redis now (``stored``: their map values) and the inode's
        attributes are ``attr``.

        A snapshot keeps its blocks (a read that took a view before may still
        use them), and its writer's view moves on in this same instant: no
        await may come between the reply and this, or a write in between would
        find neither the snapshot nor the size that includes it.
        """
        origin = self.origin
        if origin is None:
            self.clear()
            self.end = 0
            self.learn(attr)
            return
        self.stored = stored
        origin.learn(attr)
        if origin.committing is self:
            origin.committing = None

    def take_back(self, snap: DirtyFile) -> None:
        """A commit of ``snap`` behind the writer failed: its writes are pending here again.

        A block written here since was built on the snapshot's copy, so the
        snapshot's bytes in it stay this node's to commit, on the snapshot's base.
        """
        for idx, block in snap.blocks.items():
            theirs = snap.extents.get(idx, [])
            if idx in self.blocks:
                self.extents[idx] = merge_ranges([*theirs, *self.extents.get(idx, [])])
                if self.bases.get(idx) is snap:
                    outdated = idx in snap.remerged
                    self.bases[idx] = OUTDATED if outdated else snap.bases.get(idx, HOLE)
            else:
                self.blocks[idx] = block
                self.extents[idx] = theirs
                self.bases[idx] = snap.bases.get(idx, HOLE)
        self.written_ns = self.written_ns or snap.written_ns
        self.end = max(self.end, snap.end)

    def clear(self) -> None:
        self.blocks = {}
        self.extents = {}
        self.bases = {}
        self.remerged = set()
        self.written_ns = 0

    def discard(self) -> None:
        """Forget every uncommitted write (after a failure was reported to the writer)."""
        self.clear()
        self.end = 0
        self.error = None

    def detach(self) -> DirtyFile:
        """Move the buffered blocks into a new DirtyFile, to be committed behind our back."""
        snap = DirtyFile(self.ino, origin=self)
        snap.blocks, snap.extents, snap.bases = self.blocks, self.extents, self.bases
        snap.written_ns, snap.end, snap.known_size = self.written_ns, self.end, self.known_size
        self.clear()
        self.end = 0
        return snap

    def pending_end_and_time(self) -> tuple[int, int]:
        """End offset and time of the writes not yet committed (buffered or in flight)."""
        end, written = self.end, self.written_ns
        if self.committing is not None:
            end = max(end, self.committing.end)
            written = max(written, self.committing.written_ns)
        return end, written

    def pending(self) -> Pending:
        """A view of the writes not yet committed, to overlay on a reply asked for now."""
        end, written = self.pending_end_and_time()
        layers: tuple[dict[int, bytearray], ...] = (self.blocks,)
        if self.committing is not None:
            layers = (self.blocks, self.committing.blocks)
        return Pending(end, written, layers)


class BlockStore:
    """Reads and writes the data of regular files."""

    def __init__(self, ctx: Context, cache: ObjectCache, level: int = 1) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.cache = cache
        self.objects = Objects(ctx.client, ctx.keys)
        self.bs = ctx.settings.block_size
        self.codec = codec.CODECS.get(ctx.settings.codec, codec.ZLIB)
        self.level = level
        self.reader = BlockReader(ctx, cache)
        self.before_commit: Callable[[], Awaitable[None]] | None = None
        """Test hook awaited after the objects are stored and before the map is committed."""
        self.after_commit: Callable[[], Awaitable[None]] | None = None
        """Test hook awaited right after a commit's reply was taken in (any await a
        later change might add there must find the node's view consistent)."""

    def __repr__(self) -> str:
        return f"<BlockStore {self.keys.volume!r} {self.cache!r}>"

    def forget(self) -> None:
        """Drop every cached object and read position (the volume came back restored)."""
        self.reader.forget()

    async def read(self, ino: int, offset: int, size: int, pending: Pending | None) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (see reader.py); holes read as zeros."""
        return await self.reader.read(ino, offset, size, pending)

    async def _load_block(self, idx: int, dirty: DirtyFile) -> tuple[bytearray, bytes | DirtyFile]:
        """The current contents of one block and its base, for a write that covers only
        part of it."""
        committing = dirty.committing
        if committing is not None and idx in committing.blocks:
            # Newer than Redis: its commit decides the base.
            return bytearray(committing.blocks[idx]), committing
        if 0 <= dirty.known_size <= idx * self.bs:
            return bytearray(), HOLE
        with self.ctx.guard():
            value = cast(
                bytes | None, await self.ctx.client.hget(self.keys.blockmap(dirty.ino), str(idx))
            )
        if value is None:
            return bytearray(), HOLE
        (data,) = await self.reader.fetch([value])
        return bytearray(data or b""), value

    async def write(self, dirty: DirtyFile, offset: int, data: bytes) -> None:
        """Buffer ``data`` at ``offset`` into whole blocks (loading partly overwritten ones)."""
        if not data:
            return  # writing nothing changes nothing, not even the size (write(2))
        bs = self.bs
        pos = 0
        while pos < len(data):
            at = offset + pos
            idx, within = divmod(at, bs)
            take = min(bs - within, len(data) - pos)
            block = dirty.blocks.get(idx)
            if block is None:
                base: bytes | DirtyFile
                if within == 0 and take == bs:
                    block, base = bytearray(), WHOLE
                else:
                    block, base = await self._load_block(idx, dirty)
                dirty.blocks[idx] = block
                dirty.bases[idx] = base
            if len(block) < within:
                block.extend(bytes(within - len(block)))
            block[within : within + take] = data[pos : pos + take]
            dirty.mark(idx, within, within + take)
            pos += take
        dirty.end = max(dirty.end, offset + len(data))
        dirty.written_ns = now_ns()

    async def committed_size(self, ino: int) -> int:
        """The size in Redis right now (no cache): for appends, under the inode lock."""
        with self.ctx.guard():
            value = await self.ctx.client.hget(self.keys.inode(ino), "size")
        if value is None:
            raise FSError(errno.ENOENT, f"inode {ino} does not exist")
        return int(value)

    async def _remerge(self, dirty: DirtyFile, indexes: list[int]) -> None:
        """Reload blocks whose base changed in Redis and lay this node's bytes on top.

        Another node (or a truncate) changed the rest of such a block since it
        was loaded; committing the block as it was would undo that change.
        """
        with self.ctx.guard():
            values = cast(
                list[bytes | None],
                await self.ctx.client.hmget(
                    self.keys.blockmap(dirty.ino), [str(i) for i in indexes]
                ),
            )
        fresh = await self.reader.fetch(values)
        for idx, value, base in zip(indexes, values, fresh, strict=True):
            mine = dirty.blocks[idx]
            merged = bytearray(base or b"")
            if len(merged) < len(mine):
                merged.extend(bytes(len(mine) - len(merged)))
            for lo, hi in dirty.extents.get(idx, []):
                merged[lo:hi] = mine[lo:hi]
            dirty.blocks[idx] = merged
            dirty.bases[idx] = HOLE if value is None else value
            dirty.remerged.add(idx)

    async def settle(self, dirty: DirtyFile) -> None:
        """Wait for the commit in flight (write-behind), raising a failure of it here."""
        task = dirty.inflight
        if task is not None:
            try:
                await asyncio.shield(task)
            except Exception as exc:
                dirty.error = exc
            finally:
                if task.done():
                    dirty.inflight = None
                    dirty.committing = None
        if dirty.error is not None:
            error, dirty.error = dirty.error, None
            raise error

    async def flush_behind(self, dirty: DirtyFile) -> None:
        """Start committing the buffer and return: the next write fills a new one.

        At most one commit per inode is in flight; the next flush (or a full
        buffer) waits for it and reports its error, and a failed commit's blocks
        go back into the buffer to be committed again.
        """
        try:
            await self.settle(dirty)
        except Exception as exc:
            # Kept for the next flush, fsync or close to report; the blocks went
            # back into the buffer and are committed with it.
            dirty.error = exc
            return
        snap = dirty.detach()
        dirty.committing = snap
        dirty.inflight = asyncio.ensure_future(self._commit_behind(dirty, snap))

    async def _commit_behind(self, dirty: DirtyFile, snap: DirtyFile) -> None:
        try:
            await self.flush(snap)
        except BaseException:
            dirty.take_back(snap)
            raise

    async def flush(
        self,
        dirty: DirtyFile,
        *,
        then: tuple[str, list[str], list[Any]] | None = None,
        ticket: int = 0,
    ) -> list[Any] | None:
        """Commit every buffered block in one pipeline; on failure the buffer is kept.

        A commit still in flight from :meth:`flush_behind` is waited for first;
        if it failed, its blocks are committed now and its error is raised
        afterwards, so that a close reports the failure without losing the data.

        ``then`` is a script (name, KEYS, ARGV) on the same inode to run right
        after the commit, in the same round trip; its checked result is returned
        (None when there was nothing to commit and it was not run). When the
        commit had to be sent again (its blocks changed in Redis meanwhile),
        ``then`` ran after the refused attempt and runs again after the one
        that succeeds, so the end state is the commit followed by ``then``.
        ``ticket`` (metacache.py) is what the caller fills the cache with from
        ``then``'s result: the commit drops the inode with it.
        """
        try:
            await self.settle(dirty)
            earlier: Exception | None = None
        except Exception as exc:
            earlier = exc
        result = None
        if dirty.blocks or dirty.end > max(dirty.known_size, 0):
            # Nothing is stored while Redis may evict it, or once the volume is gone
            # (health.py); the blocks stay buffered, and the error is reported.
            self.ctx.health.check_writable()
            for attempt in range(COMMIT_ATTEMPTS):
                try:
                    result = await self._commit(dirty, then, ticket)
                    break
                except Stale as conflict:
                    if attempt:
                        await anyio.sleep(random.uniform(0, 0.002 * attempt))
                    await self._remerge(dirty, [int(i) for i in conflict.detail])
            else:
                raise FSError(errno.EAGAIN, f"inode {dirty.ino}: its blocks kept changing; gave up")
        if earlier is not None:
            raise earlier
        return result

    async def _commit(
        self,
        dirty: DirtyFile,
        then: tuple[str, list[str], list[Any]] | None = None,
        ticket: int = 0,
    ) -> list[Any] | None:
        """One attempt at committing the buffer; raises Stale (with the block indexes)
        when blocks it holds only part of changed in Redis since they were loaded."""
        blocks = dirty.blocks
        end = dirty.end
        indexes = sorted(blocks)
        payloads = [bytes(blocks[i]) for i in indexes]
        bases = [dirty.base_for(i, self.bs) for i in indexes]
        total = sum(len(p) for p in payloads)
        if total >= THREAD_THRESHOLD:
            encoded = await anyio.to_thread.run_sync(
                codec.encode_many, payloads, self.codec, self.level
            )
        else:
            encoded = codec.encode_many(payloads, self.codec, self.level)
        ids = await self.ctx.object_ids.take(len(indexes)) if indexes else []
        now = now_ns()
        # mtime/ctime are those of the last write(), which stat has shown since (POSIX).
        args: list[Any] = [dirty.written_ns or now, now // 1_000_000, end]
        for idx, obj, payload, base in zip(indexes, ids, payloads, bases, strict=True):
            args += [idx, obj, len(payload), base]
        spread = self.keys.spread
        commit_keys = [
            self.keys.inode(dirty.ino),
            self.keys.blockmap(dirty.ino),
            self.keys.usage,
            self.keys.trash,
            self.keys.setting,
            # The script checks that tagged objects exist; spread ones it cannot see.
            *(() if spread else (self.keys.obj(obj) for obj in ids)),
        ]
        if spread:
            await self._store_spread(ids, encoded)
        ticket = ticket or self.ctx.cache.ticket()
        self.ctx.cache.changing(ticket, (dirty.ino,), ())
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            if not spread:
                self.objects.queue_store(pipe, ids, encoded)
            self.ctx.counters.object_bytes_stored += sum(len(b) for b in encoded)
            if self.before_commit is not None:
                if not spread:
                    await self.ctx.scripts.execute(self.ctx.client, pipe)
                await self.before_commit()
                pipe = self.ctx.client.pipeline(transaction=False)
            releases = self.ctx.queue_releases(pipe)
            commit_at = len(pipe)
            sent = [self.ctx.queue_script(pipe, "commit", commit_keys, args)]
            if then is not None:
                sent.append(self.ctx.queue_script(pipe, *then))
            self.ctx.publish(pipe, (dirty.ino,))
            try:
                results = await self.ctx.scripts.execute(
                    self.ctx.client, pipe, raise_on_error=False
                )
                if self.ctx.reply_hook is not None:
                    await self.ctx.reply_hook("commit")
            finally:
                self.ctx.cache.changing(ticket, (dirty.ino,), ())
        self.ctx.answer(
            *zip(releases, results[commit_at - len(releases) : commit_at], strict=True),
            *zip(sent, results[commit_at : commit_at + len(sent)], strict=True),
        )
        committed = results[commit_at]
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if isinstance(committed, Exception) or int(committed[0]) != 0:
            await self._refused(dirty, ids, committed, failed)
        self.ctx.settle_releases(
            [
                r
                for r in results[commit_at - len(releases) : commit_at]
                if not isinstance(r, Exception)
            ]
        )
        for obj, payload in zip(ids, payloads, strict=True):
            self.cache.put(obj, payload)
        attr = attr_from_pairs(dirty.ino, committed[3])
        self.ctx.cache.put_attr(attr, ticket)
        dirty.committed(
            {
                idx: b"%d:%d" % (obj, len(payload))
                for idx, obj, payload in zip(indexes, ids, payloads, strict=True)
            },
            attr,
        )
        if self.after_commit is not None:
            await self.after_commit()
        if failed is not None:
            raise self.ctx.translate(failed)
        if then is None:
            return None
        return self.ctx.check(then[0], results[commit_at + 1])

    async def _store_spread(self, ids: list[int], blobs: list[bytes]) -> None:
        """Store spread objects; return only when every SET replied OK.

        A refused SET (a full master: ENOSPC) or one whose reply never came
        after the retries deletes the objects of this commit and raises, and the
        commit is not sent: the buffer is kept for the next flush, with new ids.
        A SET that redis-py resent after a lost reply stored the same immutable
        bytes twice, which is harmless.
        """
        try:
            await self.objects.store_all(ids, blobs)
        except (RedisError, OSError) as exc:
            await self._drop_uncommitted(ids)
            raise self.ctx.translate(exc) from exc

    async def _drop_uncommitted(self, ids: list[int]) -> None:
        """Delete objects no block map names (UNLINK works on a full Redis too); gc
        deletes them later if even that fails."""
        if not ids:
            return
        try:
            with self.ctx.guard():
                await self.objects.delete(ids)
        except FSError as exc:
            log.warning("could not delete %d uncommitted objects (gc will): %s", len(ids), exc)

    async def _refused(
        self, dirty: DirtyFile, ids: list[int], committed: Any, failed: Exception | None
    ) -> NoReturn:
        """A commit changed nothing: delete its objects and raise why.

        No block map names the new objects, so they go at once (UNLINK works on
        a full Redis too) instead of waiting for gc. The buffer is kept for the
        next flush, unless the inode itself is gone. A failed command of the
        pipeline (an object SET refused by a full Redis: ENOSPC) is the reason
        when there is one; else the script's own status is (Stale: blocks it
        holds only part of changed in Redis since they were loaded).
        """
        await self._drop_uncommitted(ids)
        if failed is not None:
            raise self.ctx.translate(failed)
        status = int(committed[0])
        if status == errno.ENOENT:
            dirty.clear()
        elif status == errno.EIO:
            log.error(
                "commit to inode %d of volume %s refused: one of its objects was not stored",
                dirty.ino,
                self.keys.volume,
            )
        self.ctx.check("commit", committed)
        raise AssertionError("check() raises for every status but 0")

    async def reclaim(self, inos: list[int]) -> None:
        """Delete the objects and block maps of freed inodes, then drop them from ``reclaim``.

        Each step is idempotent, so a crash part way leaves work that the next
        reclaim (from any node, or gc) finishes. The objects go first: on a
        cluster they live on other masters, and the maps that name them must
        outlive them.
        """
        if not inos:
            return
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            for ino in inos:
                pipe.hvals(self.keys.blockmap(ino))
            maps = await pipe.execute()
            await self.objects.delete([int(v.split(b":")[0]) for values in maps for v in values])
            pipe = self.ctx.client.pipeline(transaction=False)
            pipe.execute_command("UNLINK", *(self.keys.blockmap(ino) for ino in inos))
            pipe.zrem(self.keys.reclaim, *(str(ino) for ino in inos))
            await pipe.execute()

    async def purge_trash(self, older_than_ms: int) -> int:
        """Delete trashed objects dropped before ``older_than_ms``; return how many."""
        with self.ctx.guard():
            ids = cast(
                list[bytes],
                await self.ctx.client.zrangebyscore(self.keys.trash, "-inf", older_than_ms),
            )
            if not ids:
                return 0
            await self.objects.delete([int(i) for i in ids])
            pipe = self.ctx.client.pipeline(transaction=False)
            for start in range(0, len(ids), 1000):
                pipe.zrem(self.keys.trash, *ids[start : start + 1000])
            await pipe.execute()
        return len(ids)
