"""Extended attributes of an inode, with Linux's limits and namespaces."""

from __future__ import annotations

import errno
from typing import cast

from ..errors import FSError, NotFound
from .context import Context, now_ns
from .model import XATTR_NAME_MAX, XATTR_NAMESPACES, XATTR_SIZE_MAX

XATTR_CREATE = 1
XATTR_REPLACE = 2
_REMOVE = 4


def validate_xattr_name(name: bytes) -> None:
    """ERANGE for long or empty names, ENOTSUP outside the namespaces Linux knows."""
    if not name or len(name) > XATTR_NAME_MAX:
        raise FSError(errno.ERANGE, f"extended attribute name must be 1-{XATTR_NAME_MAX} bytes")
    if not name.startswith(XATTR_NAMESPACES) or name in XATTR_NAMESPACES:
        raise FSError(errno.ENOTSUP, f"extended attribute namespace of {name!r} not supported")


class Xattrs:
    """get/set/list/remove of extended attributes, each one round trip."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = ctx.keys

    def __repr__(self) -> str:
        return f"<Xattrs {self.keys.volume!r}>"

    async def _exists(self, ino: int) -> bool:
        with self.ctx.guard():
            return bool(await self.ctx.client.exists(self.keys.inode(ino)))

    async def get(self, ino: int, name: bytes) -> bytes:
        validate_xattr_name(name)
        cached = self.ctx.cache.attr(ino)
        if cached is not None and cached.xattr_count == 0:
            # The kernel asks for security.capability before every write: answer
            # from the cached attributes instead of a round trip.
            raise FSError(errno.ENODATA, f"no extended attribute {name!r}")
        with self.ctx.guard():
            value = await self.ctx.client.hget(self.keys.xattrs(ino), name)
        if value is None:
            if not await self._exists(ino):
                raise NotFound(f"inode {ino} does not exist")
            raise FSError(errno.ENODATA, f"no extended attribute {name!r}")
        return cast(bytes, value)

    async def list(self, ino: int) -> list[bytes]:
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            pipe.execute_command("EXISTS", self.keys.inode(ino))  # see objects.py
            pipe.hkeys(self.keys.xattrs(ino))
            exists, names = await pipe.execute()
        if not exists:
            raise NotFound(f"inode {ino} does not exist")
        return sorted(bytes(n) for n in names)

    async def set(self, ino: int, name: bytes, value: bytes, flags: int = 0) -> None:
        """Set ``name``; XATTR_CREATE fails with EEXIST, XATTR_REPLACE with ENODATA."""
        validate_xattr_name(name)
        if len(value) > XATTR_SIZE_MAX:
            raise FSError(errno.E2BIG, f"extended attribute value over {XATTR_SIZE_MAX} bytes")
        if flags & ~(XATTR_CREATE | XATTR_REPLACE):
            raise FSError(errno.EINVAL, f"invalid xattr flags {flags}")
        keys = [self.keys.xattrs(ino), self.keys.inode(ino)]
        await self.ctx.script("xattr_set", keys, [name, value, flags, now_ns()], changed=(ino,))

    async def remove(self, ino: int, name: bytes) -> None:
        validate_xattr_name(name)
        keys = [self.keys.xattrs(ino), self.keys.inode(ino)]
        await self.ctx.script("xattr_set", keys, [name, b"", _REMOVE, now_ns()], changed=(ino,))
