"""The path-level library API: a Volume with read_file, listdir, open and friends.

A thin layer over the inode API (volume.Inodes): it resolves paths, follows
symlinks like the kernel does (ELOOP after 40), and wraps handles in an async
file object. It holds no filesystem rules of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..errors import FSError, IsADirectory, NotADirectory, NotFound
from .keys import ROOT_INO
from .lock import Lock
from .model import Attr, SetAttr, StatFs

if TYPE_CHECKING:
    from .volume import Inodes

MAX_SYMLINKS = 40
READ_CHUNK = 1 << 20


def _split(path: str | bytes) -> list[bytes]:
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raise FSError(errno.EINVAL, f"path {path!r} must be absolute within the volume")
    return [part for part in raw.split(b"/") if part and part != b"."]


class Volume:
    """An open volume, addressed by paths. ``vol.inodes`` is the inode-level API."""

    def __init__(self, inodes: Inodes) -> None:
        self.inodes = inodes
        self.uid = os.getuid()
        self.gid = os.getgid()

    def __repr__(self) -> str:
        return f"<Volume {self.inodes.keys.volume!r} {self.inodes!r}>"

    @property
    def name(self) -> str:
        return self.inodes.keys.volume

    async def _walk(self, parts: list[bytes], follow_last: bool, depth: int = 0) -> Attr:
        """Resolve path components from the root, following symlinks."""
        attr = await self.inodes.getattr(ROOT_INO)
        stack = [attr]
        for i, part in enumerate(parts):
            if part == b"..":
                stack = stack[:-1] or stack
                attr = stack[-1]
                continue
            if not attr.is_dir:
                raise NotADirectory(
                    f"{b'/'.join(parts[:i]).decode(errors='replace')!r} is not a directory"
                )
            attr = await self.inodes.lookup(attr.ino, part)
            last = i == len(parts) - 1
            if attr.is_symlink and (follow_last or not last):
                if depth >= MAX_SYMLINKS:
                    raise FSError(errno.ELOOP, "too many levels of symbolic links")
                target = await self.inodes.readlink(attr.ino)
                base = [] if target.startswith(b"/") else [p for p in parts[:i] if p]
                rest = [p for p in target.split(b"/") if p and p != b"."]
                attr = await self._walk(base + rest + parts[i + 1 :], follow_last, depth + 1)
                return attr
            stack.append(attr)
        return attr

    async def _parent(self, path: str | bytes) -> tuple[Attr, bytes]:
        parts = _split(path)
        if not parts or parts[-1] == b"..":
            raise FSError(errno.EINVAL, f"path {path!r} names no entry")
        parent = await self._walk(parts[:-1], follow_last=True)
        if not parent.is_dir:
            raise NotADirectory(f"parent of {path!r} is not a directory")
        return parent, parts[-1]

    async def stat(self, path: str | bytes, *, follow_symlinks: bool = True) -> Attr:
        """Attributes of ``path`` (``lstat`` with ``follow_symlinks=False``)."""
        return await self._walk(_split(path), follow_last=follow_symlinks)

    async def exists(self, path: str | bytes) -> bool:
        try:
            await self.stat(path)
        except (NotFound, NotADirectory):
            return False
        return True

    async def listdir(self, path: str | bytes = "/") -> list[str]:
        """Names in a directory, in creation order ('.' and '..' left out)."""
        attr = await self.stat(path)
        entries = await self.inodes.namespace.readdir(attr.ino, 0, with_attrs=False)
        return [os.fsdecode(e.name) for e in entries]

    async def mkdir(self, path: str | bytes, mode: int = 0o777) -> Attr:
        parent, name = await self._parent(path)
        return await self.inodes.mkdir(parent.ino, name, mode, self.uid, self.gid)

    async def makedirs(self, path: str | bytes, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Create a directory and any missing parents (like ``os.makedirs``)."""
        parts = _split(path)
        for i in range(1, len(parts) + 1):
            sub = b"/" + b"/".join(parts[:i])
            try:
                await self.mkdir(sub, mode)
            except FSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                if i == len(parts) and not exist_ok:
                    raise
                if not (await self.stat(sub)).is_dir:
                    raise

    async def remove(self, path: str | bytes) -> None:
        """Remove a non-directory (``os.remove``)."""
        parent, name = await self._parent(path)
        await self.inodes.unlink(parent.ino, name)

    async def rmdir(self, path: str | bytes) -> None:
        parent, name = await self._parent(path)
        await self.inodes.rmdir(parent.ino, name)

    async def rename(self, src: str | bytes, dst: str | bytes, flags: int = 0) -> None:
        """Rename ``src`` to ``dst``, replacing a file or empty directory there."""
        sp, sname = await self._parent(src)
        dp, dname = await self._parent(dst)
        await self.inodes.rename(sp.ino, sname, dp.ino, dname, flags)

    async def symlink(self, target: str | bytes, path: str | bytes) -> Attr:
        """Create symlink ``path`` pointing at ``target`` (argument order of ``os.symlink``)."""
        parent, name = await self._parent(path)
        return await self.inodes.symlink(parent.ino, name, os.fsencode(target), self.uid, self.gid)

    async def readlink(self, path: str | bytes) -> str:
        attr = await self.stat(path, follow_symlinks=False)
        return os.fsdecode(await self.inodes.readlink(attr.ino))

    async def link(self, src: str | bytes, dst: str | bytes) -> Attr:
        """Create hard link ``dst`` to the file at ``src``."""
        attr = await self.stat(src, follow_symlinks=False)
        parent, name = await self._parent(dst)
        return await self.inodes.link(attr.ino, parent.ino, name)

    async def chmod(self, path: str | bytes, mode: int) -> Attr:
        attr = await self.stat(path)
        return await self.inodes.setattr(attr.ino, SetAttr(mode=mode))

    async def truncate(self, path: str | bytes, size: int) -> Attr:
        attr = await self.stat(path)
        return await self.inodes.setattr(attr.ino, SetAttr(size=size))

    async def statfs(self) -> StatFs:
        return await self.inodes.statfs()

    @contextlib.asynccontextmanager
    async def lock(
        self, path: str | bytes, *, ttl: float = 10.0, timeout: float = 30.0
    ) -> AsyncIterator[Lock]:
        """Hold a distributed lock named by the file at ``path`` (all nodes, all clients).

        Advisory, like flock: only holders of this lock exclude each other. The
        lock is renewed while the block runs and released at its end.
        """
        attr = await self.stat(path, follow_symlinks=False)
        key = self.inodes.keys.lock(f"user:{attr.ino}")
        async with Lock(self.inodes.ctx, key, ttl=ttl, timeout=timeout) as held:
            yield held

    @contextlib.asynccontextmanager
    async def named_lock(
        self, name: str, *, ttl: float = 10.0, timeout: float = 30.0
    ) -> AsyncIterator[Lock]:
        """Hold a distributed lock known by ``name`` alone, with no file behind it.

        For scripts that coordinate work done elsewhere (``redisfuse flock NAME``):
        the same name on any node, in any client, is the same lock. Renewed and
        released like :meth:`lock`; names never collide with path locks.
        """
        key = self.inodes.keys.lock(f"name:{name}")
        async with Lock(self.inodes.ctx, key, ttl=ttl, timeout=timeout) as held:
            yield held

    async def open(self, path: str | bytes, mode: str = "rb") -> AsyncFile:
        """Open a file like ``open()`` in binary mode ('rb', 'wb', 'ab', 'xb', 'r+b' ...)."""
        flags = _flags(mode)
        try:
            attr = await self.stat(path)
        except NotFound:
            if not flags & os.O_CREAT:
                raise
            parent, name = await self._parent(path)
            fh, attr = await self.inodes.create(parent.ino, name, 0o666, flags, self.uid, self.gid)
            return AsyncFile(self.inodes, fh, attr.ino, flags)
        if flags & os.O_EXCL:
            raise FSError(errno.EEXIST, f"{path!r} exists")
        if attr.is_dir:
            raise IsADirectory(f"{path!r} is a directory")
        fh, attr = await self.inodes.open(attr.ino, flags)
        f = AsyncFile(self.inodes, fh, attr.ino, flags)
        if flags & os.O_APPEND:
            f._pos = attr.size
        return f

    async def read_file(self, path: str | bytes) -> bytes:
        async with await self.open(path, "rb") as f:
            return await f.read()

    async def write_file(self, path: str | bytes, data: bytes) -> int:
        """Create or replace the contents of a file."""
        async with await self.open(path, "wb") as f:
            return await f.write(data)


def _flags(mode: str) -> int:
    base = mode.replace("b", "")
    table = {
        "r": os.O_RDONLY,
        "r+": os.O_RDWR,
        "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
        "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
        "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
        "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
        "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
        "x+": os.O_RDWR | os.O_CREAT | os.O_EXCL,
    }
    if base not in table:
        raise ValueError(f"unsupported mode {mode!r}")
    return table[base]


class AsyncFile:
    """An open file of a volume: read, write, seek, tell, truncate, flush, close."""

    def __init__(self, inodes: Inodes, fh: int, ino: int, flags: int) -> None:
        self._inodes = inodes
        self._fh = fh
        self.ino = ino
        self.flags = flags
        self._pos = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"<AsyncFile ino={self.ino} fh={self._fh} pos={self._pos} closed={self.closed}>"

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")

    async def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all the rest when negative) from the position."""
        self._check_open()
        if size < 0:
            out = bytearray()
            while True:
                chunk = await self._inodes.read(self._fh, self._pos, READ_CHUNK)
                if not chunk:
                    return bytes(out)
                out += chunk
                self._pos += len(chunk)
        data = await self._inodes.read(self._fh, self._pos, size)
        self._pos += len(data)
        return data

    async def write(self, data: bytes) -> int:
        self._check_open()
        if self.flags & os.O_APPEND:
            self._pos = (await self._inodes.getattr(self.ino)).size
        n = await self._inodes.write(self._fh, self._pos, data)
        self._pos += n
        return n

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = (await self._inodes.getattr(self.ino)).size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise FSError(errno.EINVAL, "negative seek position")
        self._pos = pos
        return pos

    async def tell(self) -> int:
        return self._pos

    async def truncate(self, size: int | None = None) -> int:
        self._check_open()
        size = self._pos if size is None else size
        await self._inodes.setattr(self.ino, SetAttr(size=size))
        return size

    async def flush(self) -> None:
        self._check_open()
        await self._inodes.flush(self._fh)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._inodes.release(self._fh)
