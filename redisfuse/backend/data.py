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
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

import anyio
from redis.exceptions import RedisError

from ..errors import FSError
from . import codec
from .cache import ObjectCache
from .context import Context, QuickLock, now_ns
from .lock import Lock
from .model import attr_from_pairs
from .objects import Objects
from .reader import THREAD_THRESHOLD, BlockReader

log = logging.getLogger(__name__)


class DirtyFile:
    """Unflushed writes to one inode on this node: whole blocks, by index."""

    def __init__(self, ino: int) -> None:
        self.ino = ino
        self.blocks: dict[int, bytearray] = {}
        self.end = 0
        """Offset just past the last byte written; the size after the flush is at least this."""
        self.known_size = -1
        """Committed size as last seen here, to skip loading blocks past the end (-1: unknown)."""
        self.extents: dict[int, list[list[int]]] = {}
        """Byte ranges of each block written here (sorted, merged); the rest came from Redis."""
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
        ranges.sort()
        merged = [ranges[0]]
        for lo, hi in ranges[1:]:
            if lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.extents[idx] = merged

    def partial_blocks(self) -> list[int]:
        """Blocks holding bytes this node did not write (merged from Redis before commit)."""
        return [
            idx for idx, block in self.blocks.items() if self.extents.get(idx) != [[0, len(block)]]
        ]

    def clear(self) -> None:
        self.blocks = {}
        self.extents = {}
        self.written_ns = 0

    def discard(self) -> None:
        """Forget every uncommitted write (after a failure was reported to the writer)."""
        self.clear()
        self.end = 0
        self.error = None

    def detach(self) -> DirtyFile:
        """Move the buffered blocks into a new DirtyFile, to be committed behind our back."""
        snap = DirtyFile(self.ino)
        snap.blocks, snap.extents, snap.written_ns = self.blocks, self.extents, self.written_ns
        snap.end, snap.known_size = self.end, self.known_size
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

    def block(self, idx: int) -> bytearray | None:
        """The newest unflushed contents of block ``idx`` on this node, if any."""
        found = self.blocks.get(idx)
        if found is None and self.committing is not None:
            found = self.committing.blocks.get(idx)
        return found


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

    def __repr__(self) -> str:
        return f"<BlockStore {self.keys.volume!r} {self.cache!r}>"

    def forget(self) -> None:
        """Drop every cached object and read position (the volume came back restored)."""
        self.reader.forget()

    async def read(self, ino: int, offset: int, size: int, dirty: DirtyFile | None) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (see reader.py); holes read as zeros."""
        return await self.reader.read(ino, offset, size, dirty)

    async def _load_block(self, ino: int, idx: int, dirty: DirtyFile) -> bytearray:
        """The current contents of one block, for a write that covers only part of it."""
        committing = dirty.committing.blocks.get(idx) if dirty.committing else None
        if committing is not None:
            return bytearray(committing)  # newer than Redis; merged afresh at commit
        if 0 <= dirty.known_size <= idx * self.bs:
            return bytearray()
        with self.ctx.guard():
            value = cast(
                bytes | None, await self.ctx.client.hget(self.keys.blockmap(ino), str(idx))
            )
        if value is None:
            return bytearray()
        (data,) = await self.reader.fetch([value])
        return bytearray(data or b"")

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
                if within == 0 and take == bs:
                    block = bytearray()
                else:
                    block = await self._load_block(dirty.ino, idx, dirty)
                dirty.blocks[idx] = block
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

    async def _remerge(self, dirty: DirtyFile, partial: list[int]) -> None:
        """Reload partly written blocks (under the inode lock) and lay this node's bytes on top.

        Another node may have changed the rest of such a block since it was
        loaded; without this, committing the whole block would undo that change.
        """
        with self.ctx.guard():
            values = await self.ctx.client.hmget(
                self.keys.blockmap(dirty.ino), [str(i) for i in partial]
            )
        fresh = await self.reader.fetch(cast(list[bytes | None], values))
        for idx, base in zip(partial, fresh, strict=True):
            mine = dirty.blocks[idx]
            merged = bytearray(base or b"")
            if len(merged) < len(mine):
                merged.extend(bytes(len(mine) - len(merged)))
            for lo, hi in dirty.extents.get(idx, []):
                merged[lo:hi] = mine[lo:hi]
            dirty.blocks[idx] = merged

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
            for idx, block in snap.blocks.items():
                if idx not in dirty.blocks:
                    dirty.blocks[idx] = block
                    dirty.extents[idx] = snap.extents.get(idx, [])
            dirty.written_ns = dirty.written_ns or snap.written_ns
            dirty.end = max(dirty.end, snap.end)
            raise
        dirty.known_size = max(dirty.known_size, snap.known_size)

    async def flush(
        self,
        dirty: DirtyFile,
        *,
        locked: bool = False,
        then: tuple[str, list[str], list[Any]] | None = None,
    ) -> list[Any] | None:
        """Commit every buffered block in one pipeline; on failure the buffer is kept.

        Blocks that hold bytes this node did not write are merged afresh under
        the inode lock first (``locked``: the caller holds it already). A commit
        still in flight from :meth:`flush_behind` is waited for first; if it
        failed, its blocks are committed now and its error is raised afterwards,
        so that a close reports the failure without losing the data.

        ``then`` is a script (name, KEYS, ARGV) on the same inode to run right
        after the commit, in the same round trip; its checked result is returned
        (None when there was nothing to commit and it was not run).
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
            partial = [] if locked else dirty.partial_blocks()
            if partial:
                async with Lock(self.ctx, self.keys.inode_lock(dirty.ino), renew=False):
                    await self._remerge(dirty, partial)
                    result = await self._commit(dirty, then)
            else:
                result = await self._commit(dirty, then)
        if earlier is not None:
            raise earlier
        return result

    async def _commit(
        self, dirty: DirtyFile, then: tuple[str, list[str], list[Any]] | None = None
    ) -> list[Any] | None:
        blocks = dirty.blocks
        end = dirty.end
        indexes = sorted(blocks)
        payloads = [bytes(blocks[i]) for i in indexes]
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
        for idx, obj, payload in zip(indexes, ids, payloads, strict=True):
            args += [idx, obj, len(payload)]
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
            finally:
                self.ctx.forget((dirty.ino,), ())
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
        dirty.clear()
        dirty.known_size = int(committed[1])
        self.ctx.cache.put_attr(attr_from_pairs(dirty.ino, committed[3]))
        dirty.end = 0
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
        when there is one; else the script's own status is.
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
