"""Reading file contents: block map windows, object fetches, and read-ahead.

A read needs two things from Redis: the block map entries of the blocks it
covers (``m:INO``, read with the size by ``read_map.lua``), and the objects they
name. Each is a round trip, so the reader avoids them:

- Map entries are read a window at a time (``MAP_WINDOW_BLOCKS``, aligned) and
  kept in the event-coherent metadata cache, so that after the first read of a
  region a random 4 KiB read costs one round trip: its object alone.
- Objects are immutable, so the object cache never needs invalidating. A
  sequential reader also gets the next ``READ_AHEAD_BLOCKS`` objects fetched in
  the background while it consumes the current ones, so that its reads find
  them cached instead of waiting a round trip every megabyte. A random reader
  fetches exactly the objects it reads.
- Concurrent reads of one object (the kernel's read-ahead requests and ours)
  share one fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import anyio

from ..errors import FSError
from . import codec
from .cache import ObjectCache
from .context import Context
from .objects import Objects

if TYPE_CHECKING:
    from .data import Pending

log = logging.getLogger(__name__)

THREAD_THRESHOLD = 256 * 1024
"""Batches with at least this many compressed bytes are (de)compressed in a worker thread."""

READ_AHEAD_BLOCKS = 16
"""Blocks (1 MiB) a sequential reader has fetched ahead of it, in the background."""

MAP_WINDOW_BLOCKS = 256
"""Block map entries read at once, aligned (16 MiB of a file, about 5 KiB of reply)."""


class BlockReader:
    """Reads regular files' data through the block map and the object cache."""

    def __init__(self, ctx: Context, cache: ObjectCache) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.cache = cache
        self.objects = Objects(ctx.client, ctx.keys)
        self.bs = ctx.settings.block_size
        self._read_ends: dict[int, int] = {}
        """Where the last read of each inode ended: a read starting there is sequential."""
        self._loading: dict[int, asyncio.Future[dict[int, bytes]]] = {}
        """Objects being fetched now, by id: a second reader waits for the same fetch."""
        self._ahead: dict[int, int] = {}
        """Per inode, the block up to which read-ahead has been started."""
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<BlockReader {self.keys.volume!r} loading={len(self._loading)} {self.cache!r}>"

    def forget(self) -> None:
        """Drop what was learnt of the volume's files and objects (see ObjectCache.clear)."""
        self.cache.clear()
        self._read_ends.clear()
        self._ahead.clear()

    async def fetch(self, values: Sequence[bytes | None]) -> list[bytes | None]:
        """Decoded contents for block map values (None for holes); EIO when corrupt."""
        parsed: list[tuple[int, int] | None] = []
        got: dict[int, bytes] = {}
        missing: list[int] = []
        waits: dict[int, asyncio.Future[dict[int, bytes]]] = {}
        for value in values:
            if value is None:
                parsed.append(None)
                continue
            obj, valid = self._parse(value)
            parsed.append((obj, valid))
            if obj in got or obj in waits:
                continue
            cached = self.cache.get(obj)
            if cached is not None:
                got[obj] = cached
            elif obj in self._loading:
                waits[obj] = self._loading[obj]
            else:
                missing.append(obj)
                got[obj] = b""
        if missing:
            got.update(await self.load_objects(missing))
        for obj, pending in waits.items():
            try:
                got[obj] = (await asyncio.shield(pending))[obj]
            except Exception:  # the shared fetch failed: try once more, and say why
                got.update(await self.load_objects([obj]))
        return [None if p is None else got[p[0]][: p[1]] for p in parsed]

    def _parse(self, value: bytes) -> tuple[int, int]:
        try:
            obj_s, valid_s = value.split(b":")
            return int(obj_s), int(valid_s)
        except ValueError:
            log.error("corrupt block map entry %r in volume %s", value, self.keys.volume)
            raise FSError(errno.EIO, "corrupt block map entry") from None

    async def load_objects(self, ids: list[int]) -> dict[int, bytes]:
        """GET and decode objects in one round trip into the cache; EIO when one is bad."""
        done: asyncio.Future[dict[int, bytes]] = asyncio.get_running_loop().create_future()
        for obj in ids:
            self._loading[obj] = done
        try:
            out = await self._get_objects(ids)
        except BaseException as exc:
            done.set_exception(exc if isinstance(exc, Exception) else FSError(errno.EIO, "gone"))
            done.exception()  # retrieved: waiters see it, and nobody else has to
            raise
        else:
            done.set_result(out)
            return out
        finally:
            for obj in ids:
                if self._loading.get(obj) is done:
                    del self._loading[obj]

    async def _get_objects(self, ids: list[int]) -> dict[int, bytes]:
        with self.ctx.guard():
            stored = cast(list[bytes], await self.objects.load(ids))
        for obj, raw in zip(ids, stored, strict=True):
            if raw is None:
                log.error("object %d missing in volume %s", obj, self.keys.volume)
                raise FSError(errno.EIO, f"object {obj} is missing")
            self.ctx.counters.object_bytes_loaded += len(raw)
        if sum(len(r) for r in stored if r[:1] != b"\x00") >= THREAD_THRESHOLD:
            decoded = await anyio.to_thread.run_sync(codec.decode_many, stored)
        else:
            decoded = codec.decode_many(stored)
        out: dict[int, bytes] = {}
        for obj, data in zip(ids, decoded, strict=True):
            if isinstance(data, codec.CorruptObject):
                log.error("object %d of volume %s is corrupt: %s", obj, self.keys.volume, data)
                raise FSError(errno.EIO, f"object {obj} is corrupt")
            self.cache.put(obj, data)
            out[obj] = data
        return out

    async def block_map(self, ino: int, first: int, last: int) -> tuple[list[bytes | None], int]:
        """Map entries for blocks first..last and the file's size, from the cache or Redis.

        With the cache on, the whole aligned window around them is read and kept.
        """
        cached = self.ctx.cache.block_map(ino, first, last)
        if cached is not None:
            return cached
        ticket = self.ctx.cache.ticket()
        if self.ctx.cache.enabled:
            start = first - first % MAP_WINDOW_BLOCKS
            stop = max(last, start + MAP_WINDOW_BLOCKS - 1)
        else:
            start, stop = first, last  # nothing would keep the rest valid
        res = await self.ctx.script(
            "read_map",
            [self.keys.inode(ino), self.keys.blockmap(ino)],
            list(range(start, stop + 1)),
        )
        size = int(res[1])
        window: list[bytes | None] = list(res[3])
        self.ctx.cache.put_block_map(ino, start, window, size, int(res[2]), ticket)
        return window[first - start : last - start + 1], size

    async def read(self, ino: int, offset: int, size: int, pending: Pending | None) -> bytes:
        """Read up to ``size`` bytes at ``offset``; holes read as zeros, EOF cuts short.

        ``pending`` is this node's uncommitted writes to the inode, as they stood
        before this read asked Redis anything: their blocks are newer than Redis
        and their end may be past the committed size.
        """
        if offset < 0 or size < 0:
            raise FSError(errno.EINVAL, "negative offset or size")
        bs = self.bs
        first = offset // bs
        last = (offset + max(size, 1) - 1) // bs
        sequential = self._read_ends.get(ino) == offset
        values, file_size = await self.block_map(ino, first, last)
        if pending is not None:
            file_size = max(file_size, pending.end)
        end = min(offset + size, file_size)
        if len(self._read_ends) > 10_000:
            self._read_ends.clear()
            self._ahead.clear()
        self._read_ends[ino] = max(end, offset)
        if end <= offset:
            return b""
        if sequential and self.ctx.cache.enabled:
            self._read_ahead(ino, last + 1, min(last + READ_AHEAD_BLOCKS, (file_size - 1) // bs))
        blocks = await self.fetch(values)
        out = bytearray()
        for idx, data in enumerate(blocks, start=first):
            mine = pending.block(idx) if pending is not None else None
            if mine is not None:
                data = bytes(mine)
            start = max(offset, idx * bs) - idx * bs
            stop = min(end, (idx + 1) * bs) - idx * bs
            if stop <= start:
                break
            chunk = (data or b"")[start:stop]
            out += chunk
            if len(chunk) < stop - start:
                out += bytes(stop - start - len(chunk))
        return bytes(out)

    def _read_ahead(self, ino: int, first: int, last: int) -> None:
        """Start fetching blocks first..last in the background, unless already started.

        Read-ahead restarts when at least half a window is consumed, so one
        fetch is under way while the reader uses the blocks of the previous one.
        """
        started = self._ahead.get(ino, -1)
        if started >= first + READ_AHEAD_BLOCKS // 2 or last < first:
            return
        begin = max(first, started + 1)
        if begin > last:
            return
        self._ahead[ino] = last
        task = asyncio.ensure_future(self._fetch_ahead(ino, begin, last))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_ahead(self, ino: int, first: int, last: int) -> None:
        try:
            values, _ = await self.block_map(ino, first, last)
            objs = [self._parse(v)[0] for v in values if v is not None]
            wanted = [
                o for o in dict.fromkeys(objs) if o not in self._loading and o not in self.cache
            ]
            if wanted:
                await self.load_objects(wanted)
        except Exception as exc:  # the reader fetches for itself when it gets there
            log.debug("read-ahead of inode %d blocks %d-%d failed: %s", ino, first, last, exc)
            self._ahead.pop(ino, None)

    async def aclose(self) -> None:
        """Stop read-ahead still under way (the volume is closing)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
