"""Value types the backend hands out: frozen, typed, times in integer nanoseconds.

Only the FUSE frontend turns these into pyfuse3 structures; library users get
them as they are.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

from .keys import Ino

BLOCK_SIZE = 64 * 1024
MAX_NAME = 255
MAX_FILE_SIZE = 1 << 50
"""1 PiB: far past the 10**15 bytes sparse files must reach, and exact in Lua's doubles."""

XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 64 * 1024
XATTR_NAMESPACES = (b"user.", b"trusted.", b"security.", b"system.")

FORMAT_VERSION = 1

SPREAD_FORMAT_VERSION = 2
"""The format of volumes whose objects are spread over a cluster's slots (keys.py):
an older RedisFUSE, which knows only format 1, refuses them instead of misreading them."""


@dataclass(frozen=True, slots=True)
class Attr:
    """The attributes of one inode, as stored in ``i:INO``."""

    ino: Ino
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    rdev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    version: int
    bytes_used: int
    xattr_count: int = -1
    """How many extended attributes the inode has (-1: not recorded)."""

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_symlink(self) -> bool:
        return stat.S_ISLNK(self.mode)

    @property
    def blocks(self) -> int:
        """Allocated 512-byte sectors, as ``st_blocks`` reports them."""
        return (self.bytes_used + 511) // 512


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One directory entry; ``offset`` is stable across concurrent changes."""

    name: bytes
    ino: Ino
    offset: int
    attr: Attr | None = None


@dataclass(frozen=True, slots=True)
class StatFs:
    """Volume-wide usage and room, as statfs reports it (see capacity.py)."""

    block_size: int
    bytes_used: int
    """Bytes the volume's files hold (before compression)."""
    inodes_used: int
    bytes_total: int
    """The size of the space the volume lives in: its quota, or Redis' memory."""
    bytes_free: int
    """What may still be written: the least of the quota's and Redis' free room."""
    inodes_total: int
    name_max: int = MAX_NAME
    quota_bytes: int = 0
    """The volume's byte quota (0: none)."""
    quota_inodes: int = 0
    """The volume's inode quota (0: none)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The volume's format settings, written once when it is formatted."""

    format_version: int
    block_size: int
    codec: str
    created_ns: int
    uuid: str
    objects: str = "tagged"
    """Object key layout (keys.TAGGED or keys.SPREAD)."""


@dataclass(frozen=True, slots=True)
class SetAttr:
    """Which attributes a setattr call changes; ``None`` leaves a field as it is.

    Times are nanoseconds; ``NOW`` asks for the server-side current time.
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None
    ctime_ns: int | None = None


NOW = -1
"""A time value in SetAttr meaning "the current time" (UTIME_NOW)."""


ATTR_FIELDS = (b"mode", b"nlink", b"uid", b"gid", b"size", b"rdev", b"atime", b"mtime") + (
    b"ctime",
    b"version",
    b"bytes",
    b"xattrs",
)
"""Fields of ``i:INO`` in the order of Attr's fields after ``ino``; others are ignored."""

_ATTR_POSITIONS = {name: position for position, name in enumerate(ATTR_FIELDS)}


def _attr(ino: int, pairs: Iterable[tuple[bytes, bytes]]) -> Attr:
    """One pass over the fields (a listing parses thousands: 2.4x faster than a dict
    and a lookup per field, measured 5.7 against 13.9 us)."""
    values = [0] * 12
    values[11] = -1  # xattrs not recorded
    position = _ATTR_POSITIONS.get
    for name, value in pairs:
        at = position(name)
        if at is not None:
            values[at] = int(value)
    return Attr(Ino(ino), *values)


def attr_from_fields(ino: int, fields: dict[bytes, bytes]) -> Attr:
    """Build an Attr from the fields of ``i:INO`` (as HGETALL returns them)."""
    return _attr(ino, fields.items())


def attr_from_pairs(ino: int, flat: list[bytes]) -> Attr:
    """Build an Attr from a flat field/value list, as a Lua script returns HGETALL."""
    return _attr(ino, zip(flat[::2], flat[1::2], strict=True))


def attr_from_values(ino: int, joined: bytes) -> Attr:
    """Build an Attr from the ATTR_FIELDS values joined by spaces, as stat_many.lua
    returns them ('' for a missing field)."""
    values = joined.split(b" ")
    if len(values) != len(ATTR_FIELDS):
        raise ValueError(f"inode {ino}: {len(values)} attribute values, not {len(ATTR_FIELDS)}")
    numbers = [int(v) if v else 0 for v in values]
    if not values[-1]:
        numbers[-1] = -1  # xattrs not recorded
    return Attr(Ino(ino), *numbers)
