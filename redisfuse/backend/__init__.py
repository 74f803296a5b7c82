"""The RedisFUSE filesystem core: an asyncio library over Redis, free of FUSE and trio.

``open_volume`` opens (and on first use formats) a volume; the Volume it yields
is addressed by paths, and ``vol.inodes`` is the inode-level API the FUSE
frontend uses.
"""

from ..errors import (
    BackendUnavailable,
    CrossDevice,
    Exists,
    FormatError,
    FSError,
    IsADirectory,
    NameTooLong,
    NoSpace,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
    StaleHandle,
    UnsafeRedis,
    VolumeGone,
)
from .connect import RedisOptions
from .keys import ROOT_INO, Ino
from .model import NOW, Attr, DirEntry, SetAttr, Settings, StatFs
from .namespace import RENAME_EXCHANGE, RENAME_NOREPLACE
from .paths import AsyncFile, Volume
from .volume import Inodes, open_volume
from .xattrs import XATTR_CREATE, XATTR_REPLACE

__all__ = [
    "NOW",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "ROOT_INO",
    "XATTR_CREATE",
    "XATTR_REPLACE",
    "AsyncFile",
    "Attr",
    "BackendUnavailable",
    "CrossDevice",
    "DirEntry",
    "Exists",
    "FSError",
    "FormatError",
    "Ino",
    "Inodes",
    "IsADirectory",
    "NameTooLong",
    "NoSpace",
    "NotADirectory",
    "NotEmpty",
    "NotFound",
    "ReadOnly",
    "RedisOptions",
    "SetAttr",
    "Settings",
    "StatFs",
    "StaleHandle",
    "UnsafeRedis",
    "Volume",
    "VolumeGone",
    "open_volume",
]
