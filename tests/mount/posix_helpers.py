"""Helpers for the POSIX mount tests: syscalls ``os`` lacks, and a second node.

Shortcuts: renameat2(2) and utimensat(2) with UTIME_OMIT have no ``os``
wrapper, so they are called through ctypes (glibc >= 2.28). The "second node"
is a backend ``Volume`` opened in the test process on the mount's volume: it
sees only what reached Redis, never the mount's kernel caches or buffers.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import pytest

from redisfuse.backend import open_volume

from .mounting import Mount

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _raise(path: Path, other: Path | None = None) -> None:
    err = ctypes.get_errno()
    raise OSError(err, os.strerror(err), str(path), None, None if other is None else str(other))


def renameat2(old: Path, new: Path, flags: int) -> None:
    """renameat2(AT_FDCWD, old, AT_FDCWD, new, flags), raising OSError like os.rename."""
    fn = _libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        _raise(old, new)


def utimensat(path: Path, atime: tuple[int, int], mtime: tuple[int, int]) -> None:
    """utimensat(AT_FDCWD, path, {atime, mtime}, 0); a tv_nsec may be UTIME_NOW/UTIME_OMIT."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    fn = _libc.utimensat
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
    if fn(AT_FDCWD, os.fsencode(path), times, 0) != 0:
        _raise(path)


def errno_name(excinfo: pytest.ExceptionInfo[OSError]) -> str:
    """The symbolic errno of a caught OSError ("ENOENT"), for readable assertions."""
    code = excinfo.value.errno or 0
    return errno.errorcode.get(code, str(code))


def volume_path(mount: Mount, path: Path) -> str:
    """``path`` on the mount as an absolute path inside the volume."""
    return "/" + str(path.relative_to(mount.path))


def populate(mount: Mount, directory: Path, names: Iterable[str]) -> None:
    """Create empty regular files through a second node, concurrently.

    A thousand creates through FUSE take seconds here (each is a lookup and a
    create round trip through the kernel, trio and asyncio); the backend does
    them in a fraction of that, and the mount must see them all the same.
    """

    async def go() -> None:
        async with open_volume(mount.url, volume=mount.volume) as vol:
            parent = (await vol.stat(volume_path(mount, directory))).ino
            gate = asyncio.Semaphore(32)

            async def one(name: str) -> None:
                async with gate:
                    await vol.inodes.mknod(
                        parent, os.fsencode(name), stat.S_IFREG | 0o644, os.getuid(), os.getgid()
                    )

            await asyncio.gather(*(one(n) for n in names))

    asyncio.run(go())


def read_on_second_node(mount: Mount, path: Path) -> bytes:
    """The contents of ``path`` as another node sees them (what Redis holds)."""

    async def go() -> bytes:
        async with open_volume(mount.url, volume=mount.volume) as vol:
            return await vol.read_file(volume_path(mount, path))

    return asyncio.run(go())
