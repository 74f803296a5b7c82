"""Names and inodes: lookup, create, link, unlink, rename, readdir, setattr.

Every change is one Lua script (one round trip, atomic); names are resolved to
inode numbers first, and a script that finds the name moved meanwhile answers
"stale" so the operation re-resolves and runs again. POSIX rules on names live
here (validate_name); rules on state live in the scripts.
"""

from __future__ import annotations

import errno
import logging
import stat
from typing import Any, cast

from ..errors import FSError, IsADirectory, NotFound
from .context import Context, now_ns
from .keys import ROOT_INO, Ino
from .model import (
    ATTR_FIELDS,
    MAX_FILE_SIZE,
    MAX_NAME,
    NOW,
    Attr,
    DirEntry,
    SetAttr,
    attr_from_fields,
    attr_from_pairs,
    attr_from_values,
)
from .scripts import Stale

log = logging.getLogger(__name__)

STALE_ATTEMPTS = 20
STAT_BATCH = 1000
"""Attributes read per stat_many call when listing a directory (Redis is busy for
about a millisecond per call; the calls of one listing go in one pipeline)."""
LISTING_ON_MISS = 512
"""A lookup that misses in a directory of at most this many entries brings all its
names back in the same round trip: the next misses there (an archive unpacked into
it, a build writing its outputs) cost none."""
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def validate_name(name: bytes, *, creating: bool = False) -> None:
    """Reject names no directory entry may have, with the errno Linux gives."""
    if not name or b"/" in name or b"\0" in name:
        raise FSError(errno.EINVAL, f"invalid file name {name!r}")
    if len(name) > MAX_NAME:
        raise FSError(errno.ENAMETOOLONG, f"name longer than {MAX_NAME} bytes")
    if name in (b".", b".."):
        raise FSError(errno.EEXIST if creating else errno.EINVAL, f"{name!r} is reserved")


def _entry_ino(value: bytes | None) -> int | None:
    """Decode a directory entry value ``b"CHILD:SEQ"``."""
    if value is None:
        return None
    return int(value.split(b":", 1)[0])


class Namespace:
    """The namespace operations of one volume."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys

    def __repr__(self) -> str:
        return f"<Namespace {self.keys.volume!r}>"

    async def getattr(self, ino: int) -> Attr:
        """Return the attributes of ``ino`` (ENOENT once it is gone)."""
        cached = self.ctx.cache.attr(ino)
        if cached is not None:
            return cached
        ticket = self.ctx.cache.ticket()
        with self.ctx.guard():
            fields = cast(dict[bytes, bytes], await self.ctx.client.hgetall(self.keys.inode(ino)))
        if not fields:
            raise NotFound(f"inode {ino} does not exist")
        attr = attr_from_fields(ino, fields)
        self.ctx.cache.put_attr(attr, ticket)
        return attr

    async def lookup(self, parent: int, name: bytes) -> Attr:
        """Resolve ``name`` in directory ``parent``; '.' and '..' resolve too."""
        if name == b".":
            return await self.getattr(parent)
        if name == b"..":
            return await self.getattr(await self.parent_of(parent))
        validate_name(name)
        cached = self.ctx.cache.entry(parent, name)
        if cached is not None:
            return cached
        if self.ctx.cache.absent(parent, name):
            raise NotFound(f"no entry {name!r} in directory {parent}")
        cache = self.ctx.cache
        seen = cache.changes
        ticket = cache.ticket()
        res = await self.ctx.script(
            "lookup",
            [self.keys.dirents(parent), self.keys.inode(parent)],
            [name, self.keys.prefix, LISTING_ON_MISS if cache.enabled else 0],
        )
        if int(res[1]) == 0:  # no such name, and the directory is small: its names came along
            cache.put_listing(parent, {bytes(n) for n in res[2]}, seen)
            raise NotFound(f"no entry {name!r} in directory {parent}")
        attr = attr_from_pairs(int(res[1]), res[2])
        cache.put_entry(parent, name, attr, ticket)
        return attr

    async def parent_of(self, ino: int) -> int:
        """The parent directory of directory ``ino`` (the root is its own parent)."""
        with self.ctx.guard():
            value = await self.ctx.client.hget(self.keys.inode(ino), "parent")
        if value is None:
            attr = await self.getattr(ino)
            if not attr.is_dir:
                raise FSError(errno.ENOTDIR, f"inode {ino} is not a directory")
            return ROOT_INO
        return int(value)

    async def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        *,
        rdev: int = 0,
        target: bytes = b"",
        open_it: bool = False,
    ) -> Attr:
        """Create a file, directory, symlink, fifo, socket or device node under a new name.

        With ``open_it`` the new inode is registered as open by this session in the
        same step (create(2) with O_CREAT|O_EXCL semantics: EEXIST if the name exists).
        """
        validate_name(name, creating=True)
        kind = stat.S_IFMT(mode)
        if kind not in (
            stat.S_IFREG,
            stat.S_IFDIR,
            stat.S_IFLNK,
            stat.S_IFIFO,
            stat.S_IFSOCK,
            stat.S_IFCHR,
            stat.S_IFBLK,
        ):
            raise FSError(errno.EINVAL, f"unsupported file type {oct(kind)}")
        if kind == stat.S_IFLNK and not target:
            raise FSError(errno.ENOENT, "empty symlink target")
        if len(target) > 4095:
            raise FSError(errno.ENAMETOOLONG, "symlink target longer than 4095 bytes")
        now = now_ns()
        for _ in range(STALE_ATTEMPTS):
            (ino,) = await self.ctx.inode_ids.take()
            keys = [
                self.keys.dirents(parent),
                self.keys.inode(parent),
                self.keys.inode(ino),
                self.keys.symlink(ino),
                self.keys.usage,
                self.keys.open_files(self.ctx.session),
                self.keys.setting,
            ]
            args: list[Any] = [name, ino, mode, uid, gid, rdev, now, target, int(open_it), parent]
            ticket = self.ctx.cache.ticket()
            try:
                res = await self.ctx.script(
                    "create",
                    keys,
                    args,
                    changed=(parent,),
                    entries=((parent, name),),
                    ticket=ticket,
                )
            except Stale:
                continue
            final_mode, final_gid = int(res[2]), int(res[3])
            self.ctx.cache.put_attr(attr_from_pairs(parent, res[4]), ticket)
            is_dir = stat.S_ISDIR(final_mode)
            attr = Attr(
                ino=Ino(ino),
                mode=final_mode,
                nlink=2 if is_dir else 1,
                uid=uid,
                gid=final_gid,
                size=len(target),
                rdev=rdev,
                atime_ns=now,
                mtime_ns=now,
                ctime_ns=now,
                version=1,
                bytes_used=0,
                xattr_count=0,
            )
            self.ctx.cache.put_entry(parent, name, attr, ticket)
            self.ctx.cache.add_name(parent, name)
            if is_dir:
                self.ctx.cache.put_listing(ino, set())
            return attr
        raise FSError(errno.EIO, "could not allocate an inode number")

    async def readlink(self, ino: int) -> bytes:
        """Return a symlink's target (EINVAL for other kinds of inode)."""
        with self.ctx.guard():
            target = await self.ctx.client.get(self.keys.symlink(ino))
        if target is None:
            attr = await self.getattr(ino)
            if not attr.is_symlink:
                raise FSError(errno.EINVAL, f"inode {ino} is not a symlink")
            raise FSError(errno.EIO, f"symlink {ino} has no target")
        return cast(bytes, target)

    async def link(self, ino: int, parent: int, name: bytes) -> Attr:
        """Give inode ``ino`` another name (EPERM for directories)."""
        validate_name(name, creating=True)
        keys = [self.keys.dirents(parent), self.keys.inode(parent), self.keys.inode(ino)]
        ticket = self.ctx.cache.ticket()
        res = await self.ctx.script(
            "link",
            keys,
            [name, ino, now_ns()],
            changed=(parent, ino),
            entries=((parent, name),),
            ticket=ticket,
        )
        self.ctx.cache.add_name(parent, name)
        attr = attr_from_pairs(ino, res[2])
        self.ctx.cache.put_entry(parent, name, attr, ticket)
        return attr

    async def _resolve(self, parent: int, name: bytes) -> int:
        cached = self.ctx.cache.child(parent, name)
        if cached is not None:
            return cached
        with self.ctx.guard():
            value = cast(bytes | None, await self.ctx.client.hget(self.keys.dirents(parent), name))
        ino = _entry_ino(value)
        if ino is None:
            # Tell "no such name" from "no such directory".
            attr = await self.getattr(parent)
            if not attr.is_dir:
                raise FSError(errno.ENOTDIR, f"inode {parent} is not a directory")
            raise NotFound(f"no entry {name!r} in directory {parent}")
        return ino

    async def remove(self, parent: int, name: bytes, *, rmdir: bool) -> int:
        """Remove a name (unlink) or an empty directory (rmdir).

        Returns the fate of the inode: 0 other names remain, 1 kept while open,
        2 freed (its data waits in ``reclaim``).
        """
        validate_name(name)
        for _ in range(STALE_ATTEMPTS):
            ino = await self._resolve(parent, name)
            keys = [
                self.keys.dirents(parent),
                self.keys.inode(parent),
                self.keys.inode(ino),
                self.keys.dirents(ino),
                self.keys.xattrs(ino),
                self.keys.symlink(ino),
                self.keys.blockmap(ino),
                self.keys.usage,
                self.keys.reclaim,
                self.keys.orphans,
            ]
            now = now_ns()
            ticket = self.ctx.cache.ticket()
            try:
                res = await self.ctx.script(
                    "unlink",
                    keys,
                    [name, ino, int(rmdir), now, now // 1_000_000],
                    changed=(parent, ino),
                    entries=((parent, name),),
                    ticket=ticket,
                )
            except Stale:
                self.ctx.forget((ino,), ((parent, name),))
                continue
            self.ctx.cache.put_attr(attr_from_pairs(parent, res[2]), ticket)
            self.ctx.cache.remove_name(parent, name)
            if rmdir:
                self.ctx.cache.drop_listing(ino)
            return int(res[1])
        raise FSError(errno.EAGAIN, f"{name!r} kept changing; gave up")

    async def _ancestors(self, ino: int) -> list[int]:
        """Parents of directory ``ino`` up to and including the root (empty for the root)."""
        chain: list[int] = []
        while ino != ROOT_INO:
            ino = await self.parent_of(ino)
            chain.append(ino)
            if len(chain) > 100_000:
                raise FSError(errno.ELOOP, "directory parent chain does not reach the root")
        return chain

    async def rename(
        self, parent: int, name: bytes, newparent: int, newname: bytes, flags: int = 0
    ) -> int:
        """Rename atomically; replaces a file or an empty directory unless told otherwise.

        ``flags``: RENAME_NOREPLACE (EEXIST if the target exists) or RENAME_EXCHANGE
        (swap two existing names). Moving a directory into itself gives EINVAL.
        Returns the fate of a replaced inode (see :meth:`remove`).
        """
        validate_name(name)
        validate_name(newname)
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
            RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise FSError(errno.EINVAL, f"invalid rename flags {flags}")
        for _ in range(STALE_ATTEMPTS):
            src = await self._resolve(parent, name)
            dst = 0
            if not self.ctx.cache.absent(newparent, newname):
                try:
                    dst = await self._resolve(newparent, newname)
                except NotFound:
                    pass
            chain1: list[int] = []
            chain2: list[int] = []
            if parent != newparent:
                chain1 = await self._ancestors(newparent)
                if flags & RENAME_EXCHANGE:
                    chain2 = await self._ancestors(parent)
            keys = [
                self.keys.dirents(parent),
                self.keys.inode(parent),
                self.keys.dirents(newparent),
                self.keys.inode(newparent),
                self.keys.inode(src),
                self.keys.inode(dst),
                self.keys.dirents(dst),
                self.keys.xattrs(dst),
                self.keys.symlink(dst),
                self.keys.blockmap(dst),
                self.keys.usage,
                self.keys.reclaim,
                self.keys.orphans,
                *(self.keys.inode(i) for i in chain1),
                *(self.keys.inode(i) for i in chain2),
            ]
            now = now_ns()
            ticket = self.ctx.cache.ticket()
            args: list[Any] = [
                name,
                newname,
                src,
                dst,
                flags,
                now,
                now // 1_000_000,
                parent,
                newparent,
                len(chain1),
                *chain1,
                len(chain2),
                *chain2,
            ]
            try:
                res = await self.ctx.script(
                    "rename",
                    keys,
                    args,
                    changed=(parent, newparent, src, dst),
                    entries=((parent, name), (newparent, newname)),
                    ticket=ticket,
                )
            except Stale:
                self.ctx.forget(
                    (src, dst, *chain1, *chain2), ((parent, name), (newparent, newname))
                )
                continue
            if not flags & RENAME_EXCHANGE:
                self.ctx.cache.remove_name(parent, name)
                self.ctx.cache.add_name(newparent, newname)
            if len(res) > 3:  # the no-op rename of two names of one inode returns less
                self.ctx.cache.put_attr(attr_from_pairs(parent, res[2]), ticket)
                self.ctx.cache.put_attr(attr_from_pairs(newparent, res[3]), ticket)
            if len(res) > 4:  # (a reply recorded before the moved inodes were returned lacks them)
                # The moved inode's new name and ctime: the kernel asks for its attributes
                # right after a rename, and an unlink or stat of the new name follows often.
                cache = self.ctx.cache
                cache.put_entry(newparent, newname, attr_from_pairs(src, res[4]), ticket)
                if flags & RENAME_EXCHANGE and len(res) > 5:
                    cache.put_entry(parent, name, attr_from_pairs(dst, res[5]), ticket)
            return int(res[1])
        raise FSError(errno.EAGAIN, f"{name!r} kept changing; gave up")

    async def readdir(
        self, ino: int, offset: int = 0, *, with_attrs: bool = True
    ) -> list[DirEntry]:
        """Entries of directory ``ino`` whose offset is past ``offset``, in offset order.

        Offsets are per-entry sequence numbers: an entry keeps its offset while other
        entries come and go, so a listing resumed at an offset neither repeats nor
        skips entries that stayed. '.' and '..' are not included.
        """
        seen = self.ctx.cache.changes
        ticket = self.ctx.cache.ticket()
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            pipe.hget(self.keys.inode(ino), "mode")
            pipe.hgetall(self.keys.dirents(ino))
            mode, raw = await pipe.execute()
        if mode is None:
            raise NotFound(f"inode {ino} does not exist")
        if not stat.S_ISDIR(int(mode)):
            raise FSError(errno.ENOTDIR, f"inode {ino} is not a directory")
        if offset == 0:
            self.ctx.cache.put_listing(ino, {bytes(n) for n in raw}, seen)
        entries: list[tuple[int, bytes, int]] = []
        for name, value in raw.items():
            child, _, seq = value.partition(b":")
            if int(seq) > offset:
                entries.append((int(seq), bytes(name), int(child)))
        entries.sort()
        if not with_attrs or not entries:
            return [DirEntry(name, Ino(child), seq) for seq, name, child in entries]
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            for start in range(0, len(entries), STAT_BATCH):
                chunk = entries[start : start + STAT_BATCH]
                self.ctx.scripts.queue(
                    pipe,
                    "stat_many",
                    [self.keys.inode(child) for _, _, child in chunk],
                    list(ATTR_FIELDS),
                )
            replies = await self.ctx.scripts.execute(self.ctx.client, pipe)
        joined = [values for reply in replies for values in reply]
        out = []
        for (seq, name, child), values in zip(entries, joined, strict=True):
            if not values:
                continue  # removed between the two round trips
            attr = attr_from_values(child, values)
            self.ctx.cache.put_entry(ino, name, attr, ticket)
            out.append(DirEntry(name, Ino(child), seq, attr))
        return out

    async def setattr(self, ino: int, changes: SetAttr) -> Attr:
        """Change mode, owner, size (truncate) and times; ctime always moves."""
        keys, args = await self.setattr_call(ino, changes)
        ticket = self.ctx.cache.ticket()
        res = await self.ctx.script("setattr", keys, args, changed=(ino,), ticket=ticket)
        return self.setattr_done(ino, res, ticket)

    def setattr_done(self, ino: int, res: list[Any], ticket: int) -> Attr:
        """The attributes setattr.lua returned (sent with ``ticket``), also in the cache."""
        attr = attr_from_pairs(ino, res[1])
        self.ctx.cache.put_attr(attr, ticket)
        return attr

    async def setattr_call(self, ino: int, changes: SetAttr) -> tuple[list[str], list[Any]]:
        """Validate a setattr and build the KEYS and ARGV of its script."""
        now = now_ns()
        size = ""
        if changes.size is not None:
            if changes.size < 0:
                raise FSError(errno.EINVAL, "negative size")
            if changes.size > MAX_FILE_SIZE:
                raise FSError(errno.EFBIG, f"size past the maximum of {MAX_FILE_SIZE} bytes")
            current = await self.getattr(ino)
            if current.is_dir:
                raise IsADirectory(f"inode {ino} is a directory")
            if not current.is_reg:
                raise FSError(errno.EINVAL, f"inode {ino} is not a regular file")
            size = str(changes.size)

        def opt(value: int | None) -> str:
            if value is None:
                return ""
            return str(now if value == NOW else value)

        args = [
            now,
            now // 1_000_000,
            opt(changes.mode),
            opt(changes.uid),
            opt(changes.gid),
            size,
            opt(changes.atime_ns),
            opt(changes.mtime_ns),
            opt(changes.ctime_ns),
            self.ctx.settings.block_size,
        ]
        keys = [self.keys.inode(ino), self.keys.blockmap(ino), self.keys.usage, self.keys.trash]
        return keys, args
