"""Turns backend value types into pyfuse3 structures (and nothing else)."""

from __future__ import annotations

import pyfuse3

from ..backend import Attr, StatFs


def entry_attributes(
    attr: Attr, attr_timeout: float, entry_timeout: float, generation: int = 0
) -> pyfuse3.EntryAttributes:
    """The kernel's view of an inode, with how long it may cache it; ``generation``
    tells the kernel that an inode number it knows names another file now."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = pyfuse3.InodeT(attr.ino)
    entry.generation = generation
    entry.entry_timeout = entry_timeout
    entry.attr_timeout = attr_timeout
    entry.st_mode = pyfuse3.ModeT(attr.mode)
    entry.st_nlink = attr.nlink
    entry.st_uid = attr.uid
    entry.st_gid = attr.gid
    entry.st_rdev = attr.rdev
    entry.st_size = attr.size
    entry.st_blksize = 65536
    entry.st_blocks = attr.blocks
    entry.st_atime_ns = attr.atime_ns
    entry.st_mtime_ns = attr.mtime_ns
    entry.st_ctime_ns = attr.ctime_ns
    return entry


def negative_entry(entry_timeout: float) -> pyfuse3.EntryAttributes:
    """A "no such name" answer the kernel may cache for ``entry_timeout`` seconds."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = pyfuse3.InodeT(0)
    entry.entry_timeout = entry_timeout
    return entry


def statvfs(stats: StatFs) -> pyfuse3.StatvfsData:
    out = pyfuse3.StatvfsData()
    frsize = stats.block_size
    out.f_bsize = frsize
    out.f_frsize = frsize
    out.f_blocks = stats.bytes_total // frsize
    out.f_bfree = min(stats.bytes_free, stats.bytes_total) // frsize
    out.f_bavail = out.f_bfree
    out.f_files = stats.inodes_total
    out.f_ffree = max(stats.inodes_total - stats.inodes_used, 0)
    out.f_favail = out.f_ffree
    out.f_namemax = stats.name_max
    return out
