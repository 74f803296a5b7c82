"""A minimal in-memory pyfuse3 filesystem on any event loop: the ceiling of Python FUSE.

``python benchmarks/memfs.py MOUNTPOINT [--event-loop trio|asyncio|uvloop]``
mounts it in the foreground (Ctrl-C, SIGTERM or ``fusermount3 -u`` unmounts).
The loop is started exactly as a RedisFUSE mount starts it
(``redisfuse.fuse.loops.run``: pyfuse3 on trio natively, or on asyncio and
uvloop through ``redisfuse.fuse.pyfuse3_asyncio``), so memfs on a loop is the
ceiling of a RedisFUSE mount on that loop. The benchmark suite measures RedisFUSE
against it, so it is deliberately as cheap as a pyfuse3 filesystem can be while
answering the same requests the same way RedisFUSE does: the same mount options
(``pyfuse3.default_options``, so ``default_permissions``), the same kernel cache
timeouts as RedisFUSE's command-line defaults (10 s for attributes, names and
"no such name", the last as a negative entry with st_ino 0), st_blksize 64 KiB,
no writeback cache, readdirplus replies. Whatever RedisFUSE costs above memfs on
the same loop is the price of Redis, the crossing to the backend (trio-asyncio
on trio) and its own logic.

What it omits, and why that matters when reading the ratio:

- Persistence and sharing: everything lives in this process's memory and dies
  with it; nothing is coherent across mounts (so ``keep_cache`` is always on:
  every change passes through this kernel).
- Extended attributes and ACLs: the xattr handlers answer ENOSYS, after which
  the kernel stops sending them, while RedisFUSE answers each one (``ls -l``
  asks for ACL/SELinux xattrs per file).
- Hard links, device nodes, fsync semantics (fsync, flush and fsyncdir are
  no-ops), ``access`` (the kernel checks permissions itself), file locks,
  ``statfs`` accounting (fixed numbers) and space limits.
- Holes inside a 1 MiB chunk are stored as zeros; partial chunks are copied on write.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import pyfuse3

from redisfuse.fuse import loops
from redisfuse.fuse.errors import UsageError
from redisfuse.fuse.mount import check_event_loop

log = logging.getLogger("memfs")

ROOT_INO = pyfuse3.ROOT_INODE
BLKSIZE = 65536
"""Reported st_blksize, the same as RedisFUSE's (programs size their buffers on it)."""
CHUNK = 1 << 20
"""Storage granularity: a 1 MiB-aligned 1 MiB write is kept as the very bytes pyfuse3 made."""
DEFAULT_TIMEOUT_S = 10.0
"""RedisFUSE's default attr/entry/negative timeouts (``redisfuse.fuse.cli``)."""
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def _now() -> int:
    return time.time_ns()


@dataclass(eq=False)
class Node:
    """One inode: attributes, data (files), children (directories), target (symlinks)."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int = 1
    rdev: int = 0
    chunks: dict[int, bytes | bytearray] = field(default_factory=dict)
    """File data by CHUNK index; a missing chunk, or bytes past a chunk's end, read as zeros."""
    length: int = 0
    children: dict[bytes, int] = field(default_factory=dict)
    parent: int = ROOT_INO
    target: bytes = b""
    atime_ns: int = field(default_factory=_now)
    mtime_ns: int = field(default_factory=_now)
    ctime_ns: int = field(default_factory=_now)
    lookups: int = 0
    opens: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def size(self) -> int:
        if stat.S_ISLNK(self.mode):
            return len(self.target)
        return 0 if self.is_dir else self.length


class MemFS(pyfuse3.Operations):
    """The handlers: synchronous bodies (no awaits), so each request is atomic on any loop."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(
        self,
        *,
        attr_timeout: float = DEFAULT_TIMEOUT_S,
        entry_timeout: float = DEFAULT_TIMEOUT_S,
        negative_timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.negative_timeout = negative_timeout
        root = Node(ROOT_INO, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), nlink=2)
        root.lookups = 1  # the kernel holds the root from mount to unmount
        self.nodes: dict[int, Node] = {ROOT_INO: root}
        self._next_ino = ROOT_INO + 1
        self._dirs: dict[int, tuple[int, list[tuple[bytes, int]]]] = {}
        """Open directories: fh -> (inode, snapshot of (name, inode) taken at offset 0)."""
        self._next_dir = 1

    # -- helpers -------------------------------------------------------------------

    def _node(self, ino: int) -> Node:
        node = self.nodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _dir(self, ino: int) -> Node:
        node = self._node(ino)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return node

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = pyfuse3.InodeT(node.ino)
        entry.generation = 0
        entry.entry_timeout = self.entry_timeout
        entry.attr_timeout = self.attr_timeout
        entry.st_mode = pyfuse3.ModeT(node.mode)
        entry.st_nlink = node.nlink
        entry.st_uid = node.uid
        entry.st_gid = node.gid
        entry.st_rdev = node.rdev
        entry.st_size = node.size
        entry.st_blksize = BLKSIZE
        entry.st_blocks = (node.size + 511) // 512
        entry.st_atime_ns = node.atime_ns
        entry.st_mtime_ns = node.mtime_ns
        entry.st_ctime_ns = node.ctime_ns
        return entry

    def _ref(self, node: Node) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that gives the kernel a reference (lookup, create ...)."""
        node.lookups += 1
        return self._attr(node)

    def _maybe_free(self, node: Node) -> None:
        """Forget an inode once no name, kernel reference or open handle keeps it."""
        if node.nlink == 0 and node.lookups <= 0 and node.opens <= 0:
            self.nodes.pop(node.ino, None)

    def _new(self, parent: Node, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> Node:
        if name in parent.children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if len(name) > 255:
            raise pyfuse3.FUSEError(errno.ENAMETOOLONG)
        node = Node(self._next_ino, mode, ctx.uid, ctx.gid, parent=parent.ino)
        self._next_ino += 1
        if node.is_dir:
            node.nlink = 2
            parent.nlink += 1
        self.nodes[node.ino] = node
        parent.children[name] = node.ino
        parent.mtime_ns = parent.ctime_ns = node.ctime_ns
        return node

    def _drop_name(self, parent: Node, name: bytes) -> None:
        """Remove one name; the inode lives on while referenced."""
        ino = parent.children.pop(name)
        node = self.nodes[ino]
        now = _now()
        parent.mtime_ns = parent.ctime_ns = now
        node.ctime_ns = now
        if node.is_dir:
            node.nlink = 0
            parent.nlink -= 1
        else:
            node.nlink -= 1
        self._maybe_free(node)

    # -- names and attributes ------------------------------------------------------

    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self._dir(parent_inode)
        if name == b".":
            return self._ref(parent)
        if name == b"..":
            return self._ref(self._node(parent.parent))
        ino = parent.children.get(name)
        if ino is None:
            if self.negative_timeout > 0:
                negative = pyfuse3.EntryAttributes()
                negative.st_ino = pyfuse3.InodeT(0)
                negative.entry_timeout = self.negative_timeout
                return negative
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._ref(self.nodes[ino])

    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is not None:
                node.lookups -= count
                self._maybe_free(node)

    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        return self._attr(self._node(inode))

    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        now = _now()
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            _truncate(node, attr.st_size)
            node.mtime_ns = now
        if fields.update_mode:
            node.mode = (node.mode & ~0o7777) | (attr.st_mode & 0o7777)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = attr.st_ctime_ns if fields.update_ctime else now
        return self._attr(node)

    async def mkdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        node = self._new(self._dir(parent_inode), name, stat.S_IFDIR | (mode & 0o7777), ctx)
        return self._ref(node)

    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        target: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self._new(self._dir(parent_inode), name, stat.S_IFLNK | 0o777, ctx)
        node.target = target
        return self._ref(node)

    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if not stat.S_ISLNK(node.mode):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return node.target

    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        parent = self._dir(parent_inode)
        ino = parent.children.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if self.nodes[ino].is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._drop_name(parent, name)

    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        parent = self._dir(parent_inode)
        ino = parent.children.get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if node.children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._drop_name(parent, name)

    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: bytes,
        parent_inode_new: pyfuse3.InodeT,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old_parent = self._dir(parent_inode_old)
        new_parent = self._dir(parent_inode_new)
        ino = old_parent.children.get(name_old)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        node = self.nodes[ino]
        existing = new_parent.children.get(name_new)
        if existing == ino:
            return
        now = _now()
        if flags & RENAME_EXCHANGE:
            if existing is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            other = self.nodes[existing]
            old_parent.children[name_old] = existing
            new_parent.children[name_new] = ino
            for moved, parent in ((node, new_parent), (other, old_parent)):
                if moved.is_dir:
                    moved.parent = parent.ino
                moved.ctime_ns = now
            if node.is_dir != other.is_dir:
                step = 1 if node.is_dir else -1
                new_parent.nlink += step
                old_parent.nlink -= step
            old_parent.mtime_ns = new_parent.mtime_ns = now
            return
        if existing is not None:
            if flags & RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            target = self.nodes[existing]
            if target.is_dir and not node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if node.is_dir and not target.is_dir:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if target.is_dir and target.children:
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            self._drop_name(new_parent, name_new)
        del old_parent.children[name_old]
        new_parent.children[name_new] = ino
        if node.is_dir:
            node.parent = new_parent.ino
            old_parent.nlink -= 1
            new_parent.nlink += 1
        node.ctime_ns = now
        old_parent.mtime_ns = old_parent.ctime_ns = now
        new_parent.mtime_ns = new_parent.ctime_ns = now

    # -- files -----------------------------------------------------------------------

    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        node = self._new(self._dir(parent_inode), name, stat.S_IFREG | (mode & 0o7777), ctx)
        node.opens += 1
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(node.ino), keep_cache=True), self._ref(node)

    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        node.opens += 1
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(node.ino), keep_cache=True)

    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return _read(self._node(fh), off, size)

    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        node = self._node(fh)
        _write(node, off, buf)
        node.mtime_ns = node.ctime_ns = _now()
        return len(buf)

    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        """Nothing is buffered here."""

    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        """Nothing is buffered here."""

    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        node = self.nodes.get(fh)
        if node is not None:
            node.opens -= 1
            self._maybe_free(node)

    # -- directories -------------------------------------------------------------------

    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        self._dir(inode)
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = (inode, [])
        return pyfuse3.FileHandleT(fh)

    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        """Serve a snapshot taken at offset 0; an entry's offset is its index + 1."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        ino, entries = handle
        if start_id == 0:
            entries = list(self._dir(ino).children.items())
            self._dirs[fh] = (ino, entries)
        for index in range(start_id, len(entries)):
            name, child = entries[index]
            node = self.nodes.get(child)
            if node is None:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(node), index + 1):
                break
            node.lookups += 1  # readdirplus handed the kernel a reference

    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        """Nothing is buffered here."""

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        """Fixed, roomy numbers: memfs keeps no accounts."""
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = BLKSIZE
        out.f_blocks = 1 << 24
        used = sum(n.length for n in self.nodes.values()) // BLKSIZE
        out.f_bfree = out.f_bavail = (1 << 24) - used
        out.f_files = 1 << 24
        out.f_ffree = out.f_favail = (1 << 24) - len(self.nodes)
        out.f_namemax = 255
        return out


def _write(node: Node, off: int, buf: bytes) -> None:
    """Store ``buf`` at ``off``, copying only what partly overlaps a chunk."""
    if not buf:
        return
    end = off + len(buf)
    if off % CHUNK == 0 and len(buf) == CHUNK:
        node.chunks[off // CHUNK] = buf
    else:
        view = memoryview(buf)
        for index in range(off // CHUNK, (end - 1) // CHUNK + 1):
            base = index * CHUNK
            lo, hi = max(off, base) - base, min(end, base + CHUNK) - base
            piece = view[base + lo - off : base + hi - off]
            if lo == 0 and hi == CHUNK:
                node.chunks[index] = bytes(piece)
                continue
            old = node.chunks.get(index, b"")
            chunk = old if isinstance(old, bytearray) else bytearray(old)
            if len(chunk) < lo:
                chunk.extend(bytes(lo - len(chunk)))
            chunk[lo:hi] = piece
            node.chunks[index] = chunk
    node.length = max(node.length, end)


def _read(node: Node, off: int, size: int) -> bytes:
    """Up to ``size`` bytes at ``off``; one slice copy when the range is inside one chunk."""
    end = min(off + size, node.length)
    if end <= off:
        return b""
    parts: list[bytes] = []
    for index in range(off // CHUNK, (end - 1) // CHUNK + 1):
        base = index * CHUNK
        lo, hi = max(off, base) - base, min(end, base + CHUNK) - base
        chunk = node.chunks.get(index, b"")
        if lo == 0 and hi == len(chunk) and isinstance(chunk, bytes):
            part = chunk
        else:
            part = bytes(chunk[lo:hi])
        if len(part) < hi - lo:
            part += bytes(hi - lo - len(part))
        parts.append(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _truncate(node: Node, size: int) -> None:
    """Drop data past ``size`` so that growing the file again reads zeros."""
    if size < node.length:
        last = size // CHUNK
        for index in [i for i in node.chunks if i > last or (i == last and size % CHUNK == 0)]:
            del node.chunks[index]
        chunk = node.chunks.get(last)
        if chunk is not None and len(chunk) > size % CHUNK:
            node.chunks[last] = bytearray(chunk[: size % CHUNK])
    node.length = size


async def _serve(mountpoint: str, ops: MemFS, options: set[str]) -> None:
    pyfuse3.init(ops, mountpoint, options)
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signal)
            await pyfuse3.main()
            tasks.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)


async def _stop_on_signal() -> None:
    """End the FUSE loop on SIGINT/SIGTERM so the mount goes away cleanly."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve until unmounted or signalled."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("mountpoint")
    parser.add_argument(
        "--event-loop",
        choices=loops.EVENT_LOOPS,
        default="trio",
        help="the loop pyfuse3 runs on, started as RedisFUSE starts it (default trio)",
    )
    parser.add_argument("--attr-timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--entry-timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument("--negative-timeout", type=float, default=DEFAULT_TIMEOUT_S)
    parser.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        metavar="OPT[,OPT]",
        help="extra FUSE mount options",
    )
    parser.add_argument(
        "--writeback-cache",
        action="store_true",
        help="enable the kernel writeback cache (RedisFUSE has it off)",
    )
    args = parser.parse_args(argv)
    try:
        check_event_loop(args.event_loop)
    except UsageError as exc:
        parser.exit(2, f"memfs: {exc}\n")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    ops = MemFS(
        attr_timeout=args.attr_timeout,
        entry_timeout=args.entry_timeout,
        negative_timeout=args.negative_timeout,
    )
    ops.enable_writeback_cache = args.writeback_cache
    options = set(pyfuse3.default_options) | {"fsname=memfs", "subtype=memfs"}
    for raw in args.fuse_options:
        options |= {opt.strip() for opt in raw.split(",") if opt.strip()}
    loops.run(args.event_loop, _serve, args.mountpoint, ops, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
