"""The ``redisfuse://`` fsspec filesystem: fsspec's async API over one open volume.

Translates fsspec calls into the backend's path-level API and holds no
filesystem rules of its own (the backend checks names, types and
permissions; errors.py turns its errors into built-in ones). A URL
``redisfuse://VOLUME/dir/file`` names the volume in its host part, and the
path inside the volume after it; paths are absolute within the volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import os
import posixpath
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from fsspec.asyn import AsyncFileSystem, _run_coros_in_chunks, sync, sync_wrapper
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.utils import isfilelike, stringify_path

from ..backend import Attr, NotADirectory, NotFound, RedisOptions, Volume, open_volume
from .errors import translated
from .files import CHUNK, Handle, RedisFuseAsyncFile, RedisFuseFile
from .keeper import VolumeKeeper

T = TypeVar("T")

PROTOCOL = "redisfuse"
CLOSE_AT_EXIT_TIMEOUT_S = 30.0


def _kind(attr: Attr) -> str:
    if attr.is_dir:
        return "directory"
    return "file" if attr.is_reg else "other"


def _details(path: str, attr: Attr, link: Attr | None = None) -> dict[str, Any]:
    """fsspec's info dict; for a symlink, the target's attributes with ``islink``."""
    return {
        "name": path,
        "size": attr.size,
        "type": _kind(attr),
        "mode": attr.mode,
        "ino": attr.ino,
        "nlink": attr.nlink,
        "uid": attr.uid,
        "gid": attr.gid,
        "mtime": attr.mtime_ns / 1e9,
        "ctime": attr.ctime_ns / 1e9,
        # Bumped by every change: checksum() and ukey() hash the info dict.
        "version": attr.version,
        "islink": link is not None,
    }


def _range(start: int | None, end: int | None, size: int) -> tuple[int, int]:
    """fsspec's [start, end) with None and negative (from the end) offsets resolved."""
    lo = 0 if start is None else (max(size + start, 0) if start < 0 else start)
    hi = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
    return lo, max(lo, hi)


def _close_at_exit(keeper: VolumeKeeper, loop: asyncio.AbstractEventLoop) -> None:
    """Close a synchronous filesystem's volume at exit (or when it is collected)."""
    if not keeper.is_open or loop.is_closed() or not loop.is_running():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        # Collected on the IO thread itself, which cannot wait for itself: the
        # keeper's owner task finishes the close on its own.
        keeper.request_close()
        return
    future = asyncio.run_coroutine_threadsafe(keeper.aclose(), loop)
    with contextlib.suppress(Exception):
        future.result(CLOSE_AT_EXIT_TIMEOUT_S)


class RedisFuseFileSystem(AsyncFileSystem):
    """A RedisFUSE volume as an fsspec filesystem (protocol ``redisfuse``).

    Storage options: ``volume`` (taken from the URL's host part), ``redis_url``
    (``redis://``, ``rediss://``, ``unix://``) or ``redis_host``,
    ``redis_port``, ``redis_db``, ``redis_password``; ``read_only``;
    ``auto_mkdir`` (create missing parent directories on write, as object
    stores appear to; default True); ``session_timeout``,
    ``redis_retry_deadline``, ``redis_read_timeout``, ``cache_bytes``,
    ``write_buffer_bytes`` as for a mount. The volume opens on first use and
    stays open, heartbeat running, until :meth:`close` (or :meth:`aclose`, or
    exit).
    """

    protocol = PROTOCOL
    root_marker = "/"
    async_impl = True

    def __init__(
        self,
        volume: str = "default",
        *,
        redis_url: str | None = None,
        redis_host: str = "localhost",
        redis_port: int = 6379,
        redis_db: int = 0,
        redis_password: str | None = None,
        read_only: bool = False,
        auto_mkdir: bool = True,
        session_timeout: float = 60.0,
        redis_retry_deadline: float = 30.0,
        redis_read_timeout: float = 5.0,
        cache_bytes: int = 64 << 20,
        write_buffer_bytes: int = 4 << 20,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.volume = volume
        self.auto_mkdir = auto_mkdir
        options = RedisOptions(
            url=redis_url,
            host=redis_host,
            port=int(redis_port),
            db=int(redis_db),
            password=redis_password,
            retry_deadline=float(redis_retry_deadline),
            read_timeout=float(redis_read_timeout),
        )
        opener = functools.partial(
            open_volume,
            volume=volume,
            options=options,
            read_only=read_only,
            cache_bytes=int(cache_bytes),
            write_buffer_bytes=int(write_buffer_bytes),
            session_timeout=float(session_timeout),
            mountpoint=f"fsspec:{os.getpid()}",
            event_loop="asyncio",
        )
        self._keeper = VolumeKeeper(opener, f"volume {volume!r} at {options.address}")
        if not self.asynchronous:
            # fsspec's IO loop outlives the interpreter's atexit hooks: close there.
            weakref.finalize(self, _close_at_exit, self._keeper, self.loop)

    def __repr__(self) -> str:
        return f"<RedisFuseFileSystem {self._keeper!r}>"

    # -- paths -------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """``redisfuse://VOLUME/a/b``, ``/a/b`` and ``a/b`` all become ``/a/b``."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        prefix = f"{PROTOCOL}://"
        if path.startswith(prefix):
            path = path[len(prefix) :].partition("/")[2]
        elif path.startswith(f"{PROTOCOL}::"):
            path = path[len(PROTOCOL) + 2 :]
        return "/" + "/".join(part for part in path.split("/") if part)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        prefix = f"{PROTOCOL}://"
        volume = path[len(prefix) :].partition("/")[0] if path.startswith(prefix) else ""
        return {"volume": volume} if volume else {}

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self.volume}{self._strip_protocol(name)}"

    # -- lifecycle -----------------------------------------------------------

    def _sync(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn`` on this filesystem's loop from a synchronous caller (file objects)."""
        result: T = sync(self.loop, fn, *args)
        return result

    async def _vol(self) -> Volume:
        return await self._keeper.get()

    async def aclose(self) -> None:
        """Flush and release open files, end the volume's session, close its Redis client.

        The filesystem stays usable: the next call opens the volume again.
        """
        await self._keeper.aclose()

    close = sync_wrapper(aclose)

    async def __aenter__(self) -> RedisFuseFileSystem:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- metadata ----------------------------------------------------------------

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        vol = await self._vol()
        with translated(path):
            attr = await vol.stat(path, follow_symlinks=False)
            if not attr.is_symlink:
                return _details(path, attr)
            try:
                return _details(path, await vol.stat(path), link=attr)
            except (NotFound, NotADirectory):
                return _details(path, attr, link=attr)  # a dangling link

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """A directory's entries in creation order (a file: itself). Symlinks are listed as
        themselves (type "other", so walks do not follow them); ``info`` follows them."""
        path = self._strip_protocol(path)
        vol = await self._vol()
        with translated(path):
            attr = await vol.stat(path)
            if not attr.is_dir:
                return [_details(path, attr) if detail else path]
            # Without detail, the names alone (one round trip, not two).
            entries = await vol.inodes.namespace.readdir(attr.ino, 0, with_attrs=detail)
        out: list[Any] = []
        for entry in entries:
            child = posixpath.join(path, os.fsdecode(entry.name))
            if not detail:
                out.append(child)
            elif entry.attr is not None:
                link = entry.attr if entry.attr.is_symlink else None
                out.append(_details(child, entry.attr, link=link))
        return out

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def _modified(self, path: str) -> datetime.datetime:
        info = await self._info(path)
        return datetime.datetime.fromtimestamp(info["mtime"], tz=datetime.timezone.utc)

    modified = sync_wrapper(_modified)

    # -- directories ---------------------------------------------------------

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        vol = await self._vol()
        with translated(path):
            if create_parents:
                await vol.makedirs(path, exist_ok=False)
            else:
                await vol.mkdir(path)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        vol = await self._vol()
        if path == "/" and not exist_ok:
            raise FileExistsError(17, "File exists", path)
        with translated(path):
            await vol.makedirs(path, exist_ok=exist_ok)

    async def _rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        vol = await self._vol()
        with translated(path):
            await vol.rmdir(path)

    rmdir = sync_wrapper(_rmdir)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        vol = await self._vol()
        with translated(path):
            await vol.remove(path)

    async def _rm(
        self,
        path: Any,
        recursive: bool = False,
        batch_size: int | None = None,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Remove files concurrently, then directories, deepest first (they must be empty)."""
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        dirs: list[str] = []

        async def remove(p: str) -> None:
            try:
                await self._rm_file(p)
            except IsADirectoryError:
                dirs.append(p)

        results = await _run_coros_in_chunks(
            [remove(p) for p in paths],
            batch_size=batch_size or self.batch_size,
            nofiles=True,
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            await self._rmdir(d)

    # -- contents --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _handle(self, path: str, mode: str) -> AsyncIterator[Handle]:
        """An open backend file for ``path``, released when the block ends."""
        handle = await self._open_handle(path, mode)
        try:
            yield handle
        finally:
            with anyio.CancelScope(shield=True):
                await handle.close()

    async def _open_handle(self, path: str, mode: str) -> Handle:
        """Open ``path``; writes make missing parent directories when ``auto_mkdir``."""
        path = self._strip_protocol(path)
        vol = await self._vol()
        alive = functools.partial(self._keeper.holds, self._keeper.generation)
        try:
            with translated(path):
                return Handle(await vol.open(path, mode), path, alive)
        except FileNotFoundError:
            if mode.startswith("r") or not self.auto_mkdir or path == "/":
                raise
        with translated(path):
            await vol.makedirs(posixpath.dirname(path), exist_ok=True)
            return Handle(await vol.open(path, mode), path, alive)

    async def _cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        async with self._handle(path, "rb") as handle:
            if start is None and end is None:
                return await handle.read(0)
            if (start is not None and start < 0) or (end is not None and end < 0):
                lo, hi = _range(start, end, await handle.size())
                return await handle.read(lo, hi)
            return await handle.read(start or 0, end)

    async def _pipe_file(
        self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any
    ) -> None:
        async with self._handle(path, "xb" if mode == "create" else "wb") as handle:
            await handle.write(0, bytes(value))

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one file a chunk at a time; a directory is created, not copied into."""
        if await self._isdir(path1):
            await self._makedirs(path2, exist_ok=True)
            return
        async with self._handle(path1, "rb") as src, self._handle(path2, "wb") as dst:
            offset = 0
            async for chunk in src.chunks():
                await dst.write(offset, chunk)
                offset += len(chunk)

    async def _put_file(
        self,
        lpath: str,
        rpath: str,
        mode: str = "overwrite",
        callback: Callback = DEFAULT_CALLBACK,
        **kwargs: Any,
    ) -> None:
        """Upload a local file a chunk at a time (local reads in a worker thread)."""
        local = anyio.Path(lpath)
        if await local.is_dir():
            await self._makedirs(rpath, exist_ok=True)
            return
        callback.set_size((await local.stat()).st_size)
        async with (
            await anyio.open_file(lpath, "rb") as src,
            self._handle(rpath, "xb" if mode == "create" else "wb") as dst,
        ):
            offset = 0
            while chunk := await src.read(CHUNK):
                await dst.write(offset, chunk)
                offset += len(chunk)
                callback.relative_update(len(chunk))

    async def _get_file(
        self, rpath: str, lpath: Any, callback: Callback = DEFAULT_CALLBACK, **kwargs: Any
    ) -> None:
        """Download a file a chunk at a time (local writes in a worker thread)."""
        if await self._isdir(rpath):
            if not isfilelike(lpath):
                await anyio.Path(lpath).mkdir(parents=True, exist_ok=True)
            return
        async with self._handle(rpath, "rb") as src:
            callback.set_size(await src.size())
            if isfilelike(lpath):
                async for chunk in src.chunks():
                    lpath.write(chunk)
                    callback.relative_update(len(chunk))
                return
            async with await anyio.open_file(lpath, "wb") as dst:
                async for chunk in src.chunks():
                    await dst.write(chunk)
                    callback.relative_update(len(chunk))

    # -- moves -------------------------------------------------------------------

    async def _mv_file(self, path1: str, path2: str) -> None:
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        vol = await self._vol()
        try:
            with translated(src):
                await vol.rename(src, dst)
        except FileNotFoundError:
            if not self.auto_mkdir or not await self._exists(src):
                raise
            await self._makedirs(posixpath.dirname(dst), exist_ok=True)
            with translated(src):
                await vol.rename(src, dst)

    async def _mv(
        self,
        path1: Any,
        path2: Any,
        recursive: bool = False,
        maxdepth: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Rename in one atomic step where fsspec's copy-then-delete would give the same.

        A single file, or a directory with ``recursive``, is renamed (into
        ``path2`` when that is an existing directory or ends with '/', like
        ``mv``); lists, globs and ``maxdepth`` take fsspec's copy and delete.
        """
        single = isinstance(path1, str) and isinstance(path2, str) and maxdepth is None
        if single and not any(c in path1 for c in "*?["):
            src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
            if src == dst:
                return
            info = await self._info(src)
            if info["type"] != "directory" or recursive:
                if path2.endswith("/") or await self._isdir(dst):
                    dst = posixpath.join(dst, posixpath.basename(src))
                await self._mv_file(src, dst)
                return
        await self._copy(path1, path2, recursive=recursive, maxdepth=maxdepth, on_error="raise")
        await self._rm(path1, recursive=recursive)

    mv = sync_wrapper(_mv)

    # -- file objects ----------------------------------------------------------

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> RedisFuseFile:
        if not autocommit:
            raise NotImplementedError("redisfuse writes in place: fsspec transactions")
        handle = self._sync(self._open_handle, path, mode)
        try:
            size = self._sync(handle.size) if mode in ("rb", "ab") else 0
            return RedisFuseFile(
                self,
                handle.path,
                mode,
                handle,
                size,
                block_size=block_size,
                cache_options=cache_options,
                **kwargs,
            )
        except BaseException:
            self._sync(handle.close)
            raise

    async def open_async(self, path: str, mode: str = "rb", **kwargs: Any) -> RedisFuseAsyncFile:
        if "b" not in mode or kwargs.get("compression"):
            raise ValueError("open_async opens binary files without compression")
        handle = await self._open_handle(path, mode)
        try:
            size = await handle.size() if mode in ("rb", "ab") else 0
            return RedisFuseAsyncFile(self, handle.path, mode, handle, size, **kwargs)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await handle.close()
            raise
