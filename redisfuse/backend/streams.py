"""Byte streams for dump and load: buffered file I/O off the event loop, and a spool.

File reads and writes block, so they run in a worker thread a megabyte at a
time; the event loop never waits on a disk or a pipe. Knows nothing of the
dump format beyond where its lines end.
"""

from __future__ import annotations

import tempfile
from typing import IO

import anyio

from .dumpformat import DumpFormatError

CHUNK = 1 << 20


class AsyncWriter:
    """Buffers writes and hands them to a thread a chunk at a time; counts what it wrote."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buf = bytearray()
        self.written = 0

    def __repr__(self) -> str:
        return f"<AsyncWriter written={self.written} buffered={len(self._buf)}>"

    async def write(self, data: bytes) -> None:
        self._buf += data
        self.written += len(data)
        if len(self._buf) >= CHUNK:
            await self._flush_buffer()

    async def _flush_buffer(self) -> None:
        data = bytes(self._buf)
        self._buf.clear()
        await anyio.to_thread.run_sync(self._raw.write, data)

    async def finish(self) -> None:
        """Write out what is buffered and flush the file."""
        if self._buf:
            await self._flush_buffer()
        await anyio.to_thread.run_sync(self._raw.flush)


class AsyncReader:
    """Reads a file a chunk at a time in a thread; hands out lines and exact byte counts."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.consumed = 0
        """Bytes handed out so far (for progress against the file's size)."""

    def __repr__(self) -> str:
        return f"<AsyncReader consumed={self.consumed} eof={self._eof}>"

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await anyio.to_thread.run_sync(self._raw.read, CHUNK)
        if not data:
            self._eof = True
            return False
        self._buf = self._buf[self._pos :] + data
        self._pos = 0
        return True

    def _take(self, end: int) -> bytes:
        out = self._buf[self._pos : end]
        self._pos = end
        self.consumed += len(out)
        return out

    async def readline(self, limit: int) -> bytes:
        """The next line with its newline; without one at the end of the file, what is left."""
        seen = 0  # bytes after the position already searched
        while True:
            found = self._buf.find(b"\n", self._pos + seen)
            if found >= 0:
                return self._take(found + 1)
            seen = len(self._buf) - self._pos
            if seen > limit:
                raise DumpFormatError(f"a dump line is longer than {limit} bytes (corrupt dump)")
            if not await self._fill():
                return self._take(len(self._buf))

    async def readexactly(self, count: int) -> bytes:
        while len(self._buf) - self._pos < count:
            if not await self._fill():
                raise DumpFormatError("dump ends in the middle of a block (truncated)")
        return self._take(self._pos + count)


class Spool:
    """One file's dump records, held until all its objects were read.

    A file whose objects vanish while it is read (replaced, then deleted by gc)
    is read again from a fresh block map, so nothing can reach the output before
    the file is complete. Up to ``memory`` bytes stay in memory; the rest goes to
    an anonymous temporary file, so a huge file costs disk, not RAM.
    """

    def __init__(self, memory: int) -> None:
        self._memory = memory
        self._chunks: list[bytes] = []
        self._size = 0
        self._file: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"<Spool size={self._size} on_disk={self._file is not None}>"

    async def add(self, data: bytes) -> None:
        if self._file is None and self._size + len(data) > self._memory:
            self._file = await anyio.to_thread.run_sync(tempfile.TemporaryFile)
        if self._file is None:
            self._chunks.append(data)
        else:
            await anyio.to_thread.run_sync(self._file.write, data)
        self._size += len(data)

    async def drain(self, out: AsyncWriter) -> None:
        """Copy everything spooled to ``out``, in the order it was added."""
        for chunk in self._chunks:
            await out.write(chunk)
        if self._file is not None:
            await anyio.to_thread.run_sync(self._file.seek, 0)
            while chunk := await anyio.to_thread.run_sync(self._file.read, CHUNK):
                await out.write(chunk)

    def close(self) -> None:
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
