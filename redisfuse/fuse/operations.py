"""Translates pyfuse3 requests into backend calls; holds no filesystem logic.

Each handler converts its arguments, makes one backend call through the
error boundary (which crosses to the backend as the event loop needs) and
converts the result; the handlers are the same on trio, asyncio and uvloop.
Lookup counts are kept only to know which inodes the kernel caches (for
invalidation after lost events): the backend keeps inodes alive by names and
open handles, never by kernel references.

When the volume vanished from Redis and came back (restored by ``redisfuse
load``, which numbers inodes afresh), the inode numbers the kernel holds may
name other files: the backend says so before serving again (its reset
listeners), and from then on a request naming one of them is answered ESTALE
until a lookup hands that number out anew, with a new generation, which makes
the kernel drop its old inode of that number. ESTALE makes the kernel look the
path up again, as for an inode another node removed.
"""

from __future__ import annotations

import bisect
import errno
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyfuse3

from ..backend import Attr, DirEntry, Inodes, SetAttr
from .boundary import Boundary, handler
from .convert import entry_attributes, negative_entry, statvfs
from .crossing import Crossing
from .opstats import REQUESTS
from .rates import STATS_XATTR

log = logging.getLogger(__name__)

_LOOKUPS = REQUESTS.op("lookup")
_STATS_XATTR = STATS_XATTR.encode()

POSIX_ACL_NAMES = frozenset((b"system.posix_acl_access", b"system.posix_acl_default"))
SELINUX = b"security.selinux"
"""pyfuse3 cannot turn on the kernel's ACL support, so ACLs are refused, never stored."""


@dataclass
class DirHandle:
    """An open directory: a snapshot taken at offset 0, served by offset afterwards."""

    ino: int
    entries: list[DirEntry] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    loaded: bool = False
    stale: bool = False
    """Opened before the volume vanished and came back: reads fail with EIO."""


class Operations(pyfuse3.Operations):
    """pyfuse3 handlers over a backend ``Inodes`` instance."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(
        self,
        fs: Inodes,
        crossing: Crossing,
        *,
        attr_timeout: float = 1.0,
        entry_timeout: float = 1.0,
        negative_timeout: float = 0.0,
    ) -> None:
        super().__init__()
        self.fs = fs
        self.boundary = Boundary(crossing)
        self.attr_timeout = attr_timeout
        self.entry_timeout = entry_timeout
        self.negative_timeout = negative_timeout
        self._dirs: dict[int, DirHandle] = {}
        self._next_dir = 1
        self._versions: dict[int, int] = {}
        self.known: Counter[int] = Counter()
        """Lookup count of each inode the kernel holds (lookup, create, readdirplus...)."""
        self.stats_source: Callable[[], bytes] | None = None
        """The mount's counters as JSON, served as the root's xattr user.redisfuse.stats."""
        self._generation = 0
        """Bumped when the volume came back after vanishing: see the module docstring."""
        self._stale: set[int] = set()
        """Inode numbers the kernel got before the volume came back, not handed out since."""
        fs.reset_listeners.append(self._volume_reset)

    def __repr__(self) -> str:
        return f"<Operations {self.fs!r} dirs={len(self._dirs)} {self.boundary!r}>"

    def _entry(
        self, attr: Attr, parent: int | None = None, name: bytes = b""
    ) -> pyfuse3.EntryAttributes:
        """Attributes (and, with ``parent``, the name) for a reply, with how long the
        kernel may keep them.

        Only what is current on this node may be kept: a reply that another
        node's change event overtook is handed over with a timeout of 0, or the
        kernel would keep it past the invalidation that event already caused
        (docs/architecture.md, "Which value wins"). This runs in the same turn of
        the loop as pyfuse3's reply, so no event can come in between.

        The root keeps generation 0: the kernel marks an inode it holds bad when a
        reply gives its number another generation, and the root it cannot replace.
        """
        attr_timeout = self.attr_timeout if self.fs.current(attr) else 0.0
        entry_timeout = self.entry_timeout
        if parent is not None and not self.fs.current_entry(parent, name, attr.ino):
            entry_timeout = 0.0
        generation = self._generation if attr.ino != pyfuse3.ROOT_INODE else 0
        return entry_attributes(attr, attr_timeout, entry_timeout, generation)

    def _ref(self, attr: Attr, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that hands the kernel ``name`` in ``parent`` (and so
        increments the inode's lookup count)."""
        self.known[attr.ino] += 1
        self._stale.discard(attr.ino)
        return self._entry(attr, parent, name)

    def _volume_reset(self) -> None:
        """The volume came back after vanishing (called by the backend before it serves
        again): every inode number the kernel holds but the root's is stale, and so
        are open directory handles (open files fail in the backend)."""
        self._generation += 1
        self._stale = {ino for ino in self.known if ino != pyfuse3.ROOT_INODE}
        self._versions.clear()
        for handle in self._dirs.values():
            handle.stale = True

    def _fresh(self, *inodes: int) -> None:
        """Answer ESTALE for an inode number from before the volume came back (the set
        is empty but for the time after such a comeback)."""
        if self._stale and not self._stale.isdisjoint(inodes):
            raise pyfuse3.FUSEError(errno.ESTALE)

    # -- names and attributes ------------------------------------------------

    @handler
    async def lookup(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        """Resolve a name; with a negative timeout, "absent" is an entry the kernel caches
        (counted as an ENOENT error all the same, see opstats.py)."""
        self._fresh(parent_inode)
        cached = self.fs.cached_lookup(parent_inode, name)
        if cached is not None:
            return self._ref(cached, parent_inode, name)
        if self.fs.known_absent(parent_inode, name):
            if self.negative_timeout > 0:
                _LOOKUPS.failed(errno.ENOENT)
                return negative_entry(self.negative_timeout)
            raise pyfuse3.FUSEError(errno.ENOENT)
        try:
            attr = await self.boundary.call(self.fs.lookup, parent_inode, name)
        except pyfuse3.FUSEError as exc:
            if exc.errno == errno.ENOENT and self.negative_timeout > 0:
                _LOOKUPS.failed(errno.ENOENT)
                return negative_entry(self.negative_timeout)
            raise
        return self._ref(attr, parent_inode, name)

    @handler
    async def forget(self, inode_list: Sequence[tuple[pyfuse3.InodeT, int]]) -> None:
        """Lower lookup counts; the backend frees nothing here (names and opens keep inodes)."""
        for ino, count in inode_list:
            left = self.known[ino] - count
            if left > 0:
                self.known[ino] = left
            else:
                self.known.pop(ino, None)
                self._stale.discard(ino)

    @handler
    async def getattr(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._fresh(inode)
        cached = self.fs.cached_attr(inode)
        if cached is not None:
            return self._entry(cached)
        return self._entry(await self.boundary.on_inode(self.fs.getattr, inode))

    @handler
    async def setattr(
        self,
        inode: pyfuse3.InodeT,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: pyfuse3.FileHandleT | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        """chmod, chown, truncate, utimens (UTIME_NOW arrives as a time from pyfuse3)."""
        self._fresh(inode)
        changes = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        return self._entry(await self.boundary.on_inode(self.fs.setattr, inode, changes))

    @handler
    async def readlink(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> bytes:
        self._fresh(inode)
        return await self.boundary.on_inode(self.fs.readlink, inode)

    @handler
    async def mknod(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        mode: int,
        rdev: int,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._fresh(parent_inode)
        attr = await self.boundary.call(
            self.fs.mknod, parent_inode, name, mode, ctx.uid, ctx.gid, rdev
        )
        return self._ref(attr, parent_inode, name)

    @handler
    async def mkdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        self._fresh(parent_inode)
        attr = await self.boundary.call(self.fs.mkdir, parent_inode, name, mode, ctx.uid, ctx.gid)
        return self._ref(attr, parent_inode, name)

    @handler
    async def unlink(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._fresh(parent_inode)
        await self.boundary.call(self.fs.unlink, parent_inode, name)

    @handler
    async def rmdir(
        self, parent_inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._fresh(parent_inode)
        await self.boundary.call(self.fs.rmdir, parent_inode, name)

    @handler
    async def symlink(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        target: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._fresh(parent_inode)
        attr = await self.boundary.call(
            self.fs.symlink, parent_inode, name, target, ctx.uid, ctx.gid
        )
        return self._ref(attr, parent_inode, name)

    @handler
    async def rename(
        self,
        parent_inode_old: pyfuse3.InodeT,
        name_old: bytes,
        parent_inode_new: pyfuse3.InodeT,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        """rename(2) and renameat2 with RENAME_NOREPLACE / RENAME_EXCHANGE."""
        self._fresh(parent_inode_old, parent_inode_new)
        await self.boundary.call(
            self.fs.rename, parent_inode_old, name_old, parent_inode_new, name_new, flags
        )

    @handler
    async def link(
        self,
        inode: pyfuse3.InodeT,
        new_parent_inode: pyfuse3.InodeT,
        new_name: bytes,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        self._fresh(inode, new_parent_inode)
        attr = await self.boundary.call(self.fs.link, inode, new_parent_inode, new_name)
        return self._ref(attr, new_parent_inode, new_name)

    # -- files -------------------------------------------------------------------

    def _file_info(self, fh: int, ino: int, version: int) -> pyfuse3.FileInfo:
        """Keep the kernel's page cache only if nobody changed the file since we last looked."""
        keep = self._versions.get(ino) == version
        self._versions[ino] = version
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), keep_cache=keep)

    @handler
    async def open(
        self, inode: pyfuse3.InodeT, flags: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileInfo:
        self._fresh(inode)
        fh, attr = await self.boundary.on_inode(self.fs.open, inode, flags)
        return self._file_info(fh, attr.ino, attr.version)

    @handler
    async def create(
        self,
        parent_inode: pyfuse3.InodeT,
        name: bytes,
        mode: int,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        self._fresh(parent_inode)
        fh, attr = await self.boundary.call(
            self.fs.create, parent_inode, name, mode, flags, ctx.uid, ctx.gid
        )
        return self._file_info(fh, attr.ino, attr.version), self._ref(attr, parent_inode, name)

    @handler
    async def read(self, fh: pyfuse3.FileHandleT, off: int, size: int) -> bytes:
        return await self.boundary.call(self.fs.read, fh, off, size)

    @handler
    async def write(self, fh: pyfuse3.FileHandleT, off: int, buf: bytes) -> int:
        return await self.boundary.call(self.fs.write, fh, off, buf)

    @handler
    async def flush(self, fh: pyfuse3.FileHandleT) -> None:
        await self.boundary.call(self.fs.flush, fh)

    @handler
    async def fsync(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        await self.boundary.call(self.fs.fsync, fh)

    @handler
    async def release(self, fh: pyfuse3.FileHandleT) -> None:
        """close(2) already returned flush's answer: the kernel ignores release's, and
        libfuse logs an error when it gets one, so a failure here is only traced."""
        try:
            await self.boundary.call(self.fs.release, fh)
        except pyfuse3.FUSEError as exc:
            log.debug("release(%d) failed after close: %s", fh, errno.errorcode.get(exc.errno))

    # -- directories -------------------------------------------------------------

    @handler
    async def opendir(
        self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.FileHandleT:
        self._fresh(inode)
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = DirHandle(inode)
        return pyfuse3.FileHandleT(fh)

    @handler
    async def readdir(
        self, fh: pyfuse3.FileHandleT, start_id: int, token: pyfuse3.ReaddirToken
    ) -> None:
        """List from a snapshot taken when the listing starts; offsets are entry sequences."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if handle.stale:
            raise pyfuse3.FUSEError(errno.EIO)  # as the files opened before, see _volume_reset
        if start_id == 0 or not handle.loaded:
            handle.entries = await self.boundary.call(self.fs.readdir, handle.ino, 0)
            handle.offsets = [e.offset for e in handle.entries]
            handle.loaded = True
        for entry in handle.entries[bisect.bisect_right(handle.offsets, start_id) :]:
            assert entry.attr is not None
            reply = self._entry(entry.attr, handle.ino, entry.name)
            if not pyfuse3.readdir_reply(token, entry.name, reply, entry.offset):
                break
            self.known[entry.ino] += 1  # readdirplus handed the kernel a reference
            self._stale.discard(entry.ino)

    @handler
    async def releasedir(self, fh: pyfuse3.FileHandleT) -> None:
        self._dirs.pop(fh, None)

    @handler
    async def fsyncdir(self, fh: pyfuse3.FileHandleT, datasync: bool) -> None:
        """Directory changes are committed when made; nothing is buffered."""

    @handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        return statvfs(await self.boundary.call(self.fs.statfs))

    @handler
    async def access(self, inode: pyfuse3.InodeT, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        """The kernel checks permissions (default_permissions); only existence is ours."""
        self._fresh(inode)
        await self.boundary.call(self.fs.getattr, inode)
        return True

    # -- extended attributes -----------------------------------------------------

    @handler
    async def getxattr(
        self, inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> bytes:
        """``ls -l`` asks for the ACLs and the security label of every file, and the
        kernel for security.capability before every write: answer without a
        crossing when the cache knows the inode has no xattrs. ACLs are not
        supported (see setxattr): saying so with EOPNOTSUPP lets ls stop asking
        for the rest of the directory.

        ``user.redisfuse.stats`` of the root is virtual: the mount's counters, for
        ``redisfuse stats`` (docs/architecture.md, "Metrics"); never stored or listed."""
        if name == _STATS_XATTR and inode == pyfuse3.ROOT_INODE and self.stats_source:
            return self.stats_source()
        if name in POSIX_ACL_NAMES:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        self._fresh(inode)
        if self.fs.known_without_xattrs(inode):
            # An SELinux label nobody set: "not supported" (which ls remembers for
            # the whole filesystem) rather than "not set" (which it asks per file).
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP if name == SELINUX else errno.ENODATA)
        return await self.boundary.call(self.fs.getxattr, inode, name)

    @handler
    async def setxattr(
        self, inode: pyfuse3.InodeT, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        """pyfuse3 does not pass XATTR_CREATE/XATTR_REPLACE; the value is always set.

        POSIX ACLs are refused (EOPNOTSUPP, as on a filesystem without ACL support):
        pyfuse3 cannot enable FUSE_POSIX_ACL, so the kernel would pass them through
        unenforced and never update them on chmod (``cp -a`` would leave stale ones).
        """
        self._fresh(inode)
        if name in POSIX_ACL_NAMES:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        if name == _STATS_XATTR and inode == pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.EPERM)  # the virtual stats xattr is read-only
        await self.boundary.call(self.fs.setxattr, inode, name, value, 0)

    @handler
    async def listxattr(self, inode: pyfuse3.InodeT, ctx: pyfuse3.RequestContext) -> list[bytes]:
        self._fresh(inode)
        return await self.boundary.call(self.fs.listxattr, inode)

    @handler
    async def removexattr(
        self, inode: pyfuse3.InodeT, name: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self._fresh(inode)
        await self.boundary.call(self.fs.removexattr, inode, name)
