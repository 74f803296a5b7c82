"""POSIX errors shared by the backend and the frontend; carries an errno upward.

The backend raises these; library users catch the subclasses, and the FUSE
frontend reads ``.errno`` to answer the kernel. Nothing here knows about Redis
or FUSE.
"""

from __future__ import annotations

import errno as _errno
import os
from collections.abc import Callable


class FSError(OSError):
    """A filesystem operation failed with a POSIX errno; nothing was changed."""

    def __init__(self, errno: int, message: str | None = None) -> None:
        super().__init__(errno, message or os.strerror(errno))


class NotFound(FSError):
    """Raised when a name or inode does not exist (ENOENT)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ENOENT, message)


class Exists(FSError):
    """Raised when a name to be created already exists (EEXIST)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EEXIST, message)


class NotEmpty(FSError):
    """Raised when removing or replacing a directory that still has entries (ENOTEMPTY)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ENOTEMPTY, message)


class NotADirectory(FSError):
    """Raised when a directory was required but something else was found (ENOTDIR)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ENOTDIR, message)


class IsADirectory(FSError):
    """Raised when a non-directory operation meets a directory (EISDIR)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EISDIR, message)


class NameTooLong(FSError):
    """Raised when a name is longer than 255 bytes (ENAMETOOLONG)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ENAMETOOLONG, message)


class CrossDevice(FSError):
    """Raised when an operation would cross volumes (EXDEV)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EXDEV, message)


class NoSpace(FSError):
    """Raised when Redis refuses writes for lack of memory (ENOSPC)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ENOSPC, message)


class ReadOnly(FSError):
    """Raised when a change is attempted on a volume opened read-only (EROFS)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EROFS, message)


class StaleHandle(FSError):
    """Raised when a file handle or inode no longer exists (ESTALE)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.ESTALE, message)


class BackendUnavailable(FSError):
    """Raised when Redis cannot be reached or keeps failing (EIO); names the address."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EIO, message)


class UnsafeRedis(FSError):
    """Raised when opening a volume on a Redis that may delete its keys by itself: a
    ``maxmemory-policy`` that evicts keys without a TTL (``allkeys-*``). Refusing at
    once beats losing files silently later (EIO; the message names the fix)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EIO, message)


class VolumeGone(FSError):
    """Raised by every request once the volume's keys vanished from Redis under an open
    volume (FLUSHALL, or an empty server or replica in its place), until the same
    volume is back (EIO): answering from what this node remembers would be a lie."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EIO, message)


class FormatError(FSError):
    """Raised when a volume was formatted by an incompatible version (EINVAL)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(_errno.EINVAL, message)


_BY_ERRNO: dict[int, Callable[[str | None], FSError]] = {
    _errno.ENOENT: NotFound,
    _errno.EEXIST: Exists,
    _errno.ENOTEMPTY: NotEmpty,
    _errno.ENOTDIR: NotADirectory,
    _errno.EISDIR: IsADirectory,
    _errno.ENAMETOOLONG: NameTooLong,
    _errno.EXDEV: CrossDevice,
    _errno.ENOSPC: NoSpace,
    _errno.EROFS: ReadOnly,
    _errno.ESTALE: StaleHandle,
}


def error_for(errno: int, message: str | None = None) -> FSError:
    """Build the most specific FSError subclass for ``errno``."""
    cls = _BY_ERRNO.get(errno)
    if cls is None:
        return FSError(errno, message)
    return cls(message)
