"""Building and snapshotting small file trees, to compare one copy of a tree with another.

Shortcuts: xattrs are only ``user.*`` names on regular files and directories
(Linux refuses ``user.*`` on symlinks); atime and ctime are left out of
snapshots (reading and copying change them); ``snapshot(..., dir_size=False)``
leaves out directory sizes, which differ between filesystems by design.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import NamedTuple

#: Fixed times (ns) the tree gets, far from "now" so a copy that loses them shows.
T0 = 1_600_000_000_123_456_789


class Entry(NamedTuple):
    """What a snapshot records of one path."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int | None
    mtime_ns: int
    target: str | None
    sha256: str | None
    xattrs: tuple[tuple[str, bytes], ...]
    nlink: int


def _type(st: os.stat_result) -> str:
    for name, test in (("dir", stat.S_ISDIR), ("file", stat.S_ISREG), ("symlink", stat.S_ISLNK)):
        if test(st.st_mode):
            return name
    return "other"


def _xattrs(path: Path) -> tuple[tuple[str, bytes], ...]:
    names = os.listxattr(path, follow_symlinks=False)
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False)) for n in names))


def snapshot(root: Path, *, dir_size: bool = True) -> dict[str, Entry]:
    """Map each path under ``root`` (relative, root itself as ".") to what it looks like."""
    out: dict[str, Entry] = {}
    paths = [root, *sorted(root.rglob("*"))]
    for path in paths:
        st = os.lstat(path)
        kind = _type(st)
        target = os.readlink(path) if kind == "symlink" else None
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if kind == "file" else None
        size: int | None = st.st_size if (kind != "dir" or dir_size) else None
        xattrs = _xattrs(path) if kind in ("file", "dir") else ()
        rel = "." if path == root else str(path.relative_to(root))
        out[rel] = Entry(
            kind,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            size,
            st.st_mtime_ns,
            target,
            digest,
            xattrs,
            st.st_nlink,
        )
    return out


def hardlink_groups(root: Path) -> list[list[str]]:
    """Relative paths grouped by inode (only groups of two or more), sorted."""
    groups: dict[int, list[str]] = {}
    for path in root.rglob("*"):
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault(st.st_ino, []).append(str(path.relative_to(root)))
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def build_tree(root: Path) -> None:
    """A tree with every kind of thing a copy must keep.

    Regular files (empty, small, multi-block, odd modes, other owners), nested
    directories with their own modes, relative, absolute and dangling symlinks,
    a hard-link pair across directories, user xattrs (also binary and empty
    values) on files and a directory, and fixed times on everything, set
    bottom-up so that creating children does not change a parent's mtime
    afterwards.
    """
    root.mkdir()
    (root / "sub" / "deep" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    files = {
        "empty": b"",
        "small.txt": b"hello, world\n",
        "sub/big.bin": bytes(range(256)) * 1200 + b"tail",  # > 64 KiB blocks, odd length
        "sub/deep/zeros": b"\0" * 70_000,
        "sub/deep/deeper/leaf.txt": b"leaf\n" * 100,
        "script.sh": b"#!/bin/sh\necho hi\n",
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "script.sh", 0o755)
    os.chmod(root / "small.txt", 0o640)
    os.chmod(root / "sub/deep/zeros", 0o600)
    os.chmod(root / "sub/deep", 0o750)
    os.chmod(root / "empty-dir", 0o700)
    os.chown(root / "small.txt", 1234, 5678)
    os.chown(root / "sub/deep/deeper", 4321, 8765)
    os.link(root / "sub/big.bin", root / "sub/deep/big-link.bin")
    os.link(root / "small.txt", root / "small-link.txt")
    os.symlink("small.txt", root / "rel-link")
    os.symlink("../sub/deep/deeper/leaf.txt", root / "empty-dir/up-link")
    os.symlink("/etc/hostname", root / "abs-link")
    os.symlink("does/not/exist", root / "dangling")
    os.symlink("sub/deep", root / "dir-link")
    os.setxattr(root / "small.txt", "user.comment", b"a small file")
    os.setxattr(root / "small.txt", "user.empty", b"")
    os.setxattr(root / "sub/big.bin", "user.binary", bytes(range(256)))
    os.setxattr(root / "sub", "user.dir", b"on a directory")
    set_times(root)


def set_times(root: Path) -> None:
    """Give every path a distinct fixed mtime (and atime), deepest paths first."""
    paths = sorted([root, *root.rglob("*")], key=lambda p: (-len(p.parts), str(p)))
    for i, path in enumerate(paths):
        t = T0 + i * 1_000_000_007
        os.utime(path, ns=(t - 5_000, t), follow_symlinks=False)
