"""fsspec file objects over one open backend handle, streamed a chunk at a time.

A file holds its handle from open to close, as a process holding an open file
does: a reader keeps reading a file another node unlinked meanwhile, and a
range read costs one backend read (its blocks in one round trip), never the
whole file. Writes go to the backend a buffer (1 MiB) at a time and the
backend commits them behind the writer; close returns once Redis has them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fsspec.asyn import AbstractAsyncStreamedFile
from fsspec.spec import AbstractBufferedFile

from ..backend import AsyncFile
from .errors import translated

if TYPE_CHECKING:
    from .filesystem import RedisFuseFileSystem

CHUNK = 1 << 20
"""Bytes per backend read or write while streaming (16 blocks: one read-ahead window)."""


class Handle:
    """One open backend file, addressed by byte ranges; errors leave as built-in OSErrors."""

    def __init__(self, file: AsyncFile, path: str, alive: Callable[[], bool]) -> None:
        self._file = file
        self.path = path
        self._alive = alive
        """False once the filesystem closed the volume (which released every handle)."""

    def __repr__(self) -> str:
        return f"<Handle {self.path!r} {self._file!r}>"

    @property
    def closed(self) -> bool:
        return self._file.closed or not self._alive()

    def _check(self) -> None:
        if not self._alive():
            raise OSError(errno.EBADF, "the filesystem was closed with this file open", self.path)

    async def size(self) -> int:
        """The file's size as Redis (and this node's unflushed writes) has it now."""
        self._check()
        with translated(self.path):
            return await self._file.seek(0, os.SEEK_END)

    async def read(self, start: int, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` (to the end of file when ``end`` is None), cut at EOF."""
        self._check()
        with translated(self.path):
            await self._file.seek(start)
            if end is None:
                return await self._file.read()
            return await self._file.read(max(0, end - start))

    async def chunks(self) -> Any:
        """Yield the file's contents from the start, CHUNK bytes at a time."""
        offset = 0
        while True:
            data = await self.read(offset, offset + CHUNK)
            if not data:
                return
            yield data
            offset += len(data)

    async def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` (at the end, in append mode), CHUNK bytes per call."""
        self._check()
        with translated(self.path):
            await self._file.seek(offset)
            for i in range(0, len(data), CHUNK):
                await self._file.write(data[i : i + CHUNK])

    async def upload(self, offset: int, data: bytes, final: bool) -> None:
        """What a buffered file does with its buffer: write it, and on the last one close."""
        try:
            await self.write(offset, data)
        finally:
            if final:
                await self.close()

    async def close(self) -> None:
        """Flush (returns once Redis has the data) and release the handle; idempotent."""
        if self.closed:
            return  # also when the volume's close released it
        with translated(self.path):
            await self._file.close()


class _HandleFile:
    """What the sync and async file classes share: the handle and the mode mapping."""

    handle: Handle

    def __init__(
        self, fs: RedisFuseFileSystem, path: str, mode: str, handle: Handle, size: int, **kw: Any
    ) -> None:
        self.handle = handle
        # fsspec's files know "xb" only partly (the async one not at all); the
        # exclusive create already happened when the handle was opened.
        super().__init__(fs, path, "wb" if mode == "xb" else mode, size=size, **kw)  # type: ignore[call-arg]
        if mode == "ab":
            self.loc = size


class RedisFuseFile(_HandleFile, AbstractBufferedFile):
    """A buffered file for synchronous use (``fs.open``, ``fsspec.open``, pandas)."""

    DEFAULT_BLOCK_SIZE = CHUNK

    def _fetch_range(self, start: int, end: int) -> bytes:
        data: bytes = self.fs._sync(self.handle.read, start, end)
        return data

    def _upload_chunk(self, final: bool = False) -> bool:
        self.fs._sync(self.handle.upload, self.offset, self.buffer.getvalue(), final)
        return True

    def close(self) -> None:
        """Write what is buffered, then release the handle (also after a failed write)."""
        try:
            super().close()
        finally:
            if not self.handle.closed:
                self.fs._sync(self.handle.close)


class RedisFuseAsyncFile(_HandleFile, AbstractAsyncStreamedFile):
    """The same file for ``await fs.open_async(...)`` on the caller's event loop."""

    DEFAULT_BLOCK_SIZE = CHUNK

    async def _fetch_range(self, start: int, end: int) -> bytes:
        return await self.handle.read(start, end)

    async def _upload_chunk(self, final: bool = False) -> bool:
        await self.handle.upload(self.offset, self.buffer.getvalue(), final)
        return True

    async def close(self) -> None:
        """Write what is buffered, then release the handle (also after a failed write)."""
        try:
            await super().close()
        finally:
            await self.handle.close()
