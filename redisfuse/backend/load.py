"""Restores a dump (dumpformat.py, docs/dump-format.md) into an empty volume.

Reads the stream once, front to back, holding only the directories on the
path being restored and the inodes with several names (for their later
links): memory does not grow with the volume. Inodes and objects get fresh
ids from the volume's counters (the dump's own numbers are only names inside
the dump). Every step keeps the volume's invariants (an inode with its entry,
link counts and usage; a batch of objects with its block map entries and byte
counts), and steps go to Redis whole, many to a MULTI, so a load cut short
leaves a consistent, partly restored volume. Nothing is published: load into a volume nobody has
mounted.

Once everything is restored, the volume takes the dumped volume's uuid (from
the dump's header, when it has one): it is that volume again, so a mount that
saw it vanish from this Redis resumes. A load cut short leaves the
uuid the volume was formatted with, and such a mount waiting.
"""

from __future__ import annotations

import errno
import logging
import stat
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio.client import Pipeline

from ..errors import FSError, NotEmpty
from . import dumpformat as fmt
from .context import Context
from .dump import OBJECT_BATCH, Progress
from .dumpformat import DumpFormatError
from .keys import ROOT_INO
from .objects import Objects
from .streams import AsyncReader

log = logging.getLogger(__name__)

BATCH_STEPS = 64
"""Steps (an inode with its entry, a link, a batch of blocks) sent in one MULTI at most..."""

BATCH_BYTES = 1 << 20
"""...and object bytes: one round trip restores many small files."""

HEADER_MAX = 4096
"""Longest first line a dump may have: another kind of file is told apart quickly."""


@dataclass
class LoadStats:
    """What a load restored."""

    inodes: int = 0
    links: int = 0
    blocks: int = 0


@dataclass
class _Dir:
    """A directory on the path being restored."""

    number: int
    ino: int
    seq: int = 0
    """Entry sequence number last given out (see ``d:INO`` in keys.py)."""
    last_name: bytes | None = None


async def read_header(src: AsyncReader) -> fmt.Header:
    """What the dump's first line says; DumpFormatError if it is no dump."""
    try:
        raw = await src.readline(HEADER_MAX)
        if not raw:
            raise DumpFormatError("the dump is empty")
        rec = fmt.parse(raw)
    except DumpFormatError as exc:
        raise DumpFormatError(f"not a RedisFUSE dump ({exc})") from None
    return fmt.check_header(rec)


class Loader:
    """Restores one dump stream into one empty volume; use :func:`load_volume`."""

    def __init__(
        self,
        ctx: Context,
        src: AsyncReader,
        block_size: int,
        progress: Progress | None,
        uuid: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.uuid = uuid
        self.keys = ctx.keys
        self.objects = Objects(ctx.client, ctx.keys)
        self.src = src
        self.block_size = block_size
        self.progress = progress
        self.stats = LoadStats()
        self.stack: list[_Dir] = []
        self.linked: dict[int, int] = {}
        """Inode id of each dump number whose inode has several names."""
        self._batch: Pipeline | None = None
        self._steps = 0
        self._bytes = 0

    def _pipe(self) -> Pipeline:
        """The MULTI that the next step goes into."""
        if self._batch is None:
            self._batch = self.ctx.client.pipeline(transaction=True)
        return self._batch

    async def _queued(self, nbytes: int = 0) -> None:
        """One whole step (keeping every invariant) was queued; send the batch when full."""
        self._steps += 1
        self._bytes += nbytes
        if self._steps >= BATCH_STEPS or self._bytes >= BATCH_BYTES:
            await self._send()

    async def _send(self) -> None:
        batch, self._batch = self._batch, None
        self._steps = self._bytes = 0
        if batch is not None:
            with self.ctx.guard():
                await batch.execute()

    def __repr__(self) -> str:
        return f"<Loader {self.keys.volume!r} {self.stats} depth={len(self.stack)}>"

    async def _record(self) -> dict[str, Any]:
        raw = await self.src.readline(fmt.MAX_LINE)
        if not raw:
            raise DumpFormatError("dump ends before its end record (truncated)")
        return fmt.parse(raw)

    async def check_empty(self) -> None:
        """Refuse a volume with anything in it besides a bare root directory, or mounted."""
        keys = self.keys
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=False)
            pipe.hlen(keys.dirents(ROOT_INO))
            pipe.hlen(keys.xattrs(ROOT_INO))
            pipe.hget(keys.usage, "inodes")
            pipe.zcard(keys.sessions)
            entries, xattrs, inodes, sessions = await pipe.execute()
        if entries or xattrs or int(inodes or 1) != 1:
            raise NotEmpty(
                f"volume {keys.volume!r} is not empty; load restores only into an empty volume"
            )
        if sessions > 1:
            # A load publishes no change events: a mount would not see what it restores.
            raise FSError(
                errno.EBUSY,
                f"volume {keys.volume!r} is in use by {sessions - 1} other session(s); unmount "
                "it first (or run redisfuse gc if that mount died)",
            )

    async def run(self) -> LoadStats:
        if self.block_size != self.ctx.settings.block_size:
            raise DumpFormatError(
                f"the dump has blocks of {self.block_size} bytes, volume "
                f"{self.keys.volume!r} of {self.ctx.settings.block_size}"
            )
        await self.check_empty()
        while True:
            rec = await self._record()
            kind = rec["kind"]
            if kind == "end":
                self._check_end(rec)
                await self._send()
                break
            if kind == "inode":
                await self._inode(rec)
            elif kind == "link":
                await self._link(rec)
            else:
                raise DumpFormatError(f"unexpected {kind!r} record (corrupt dump)")
            if self.progress is not None:
                self.progress(self.stats.inodes, self.src.consumed)
        if await self.src.readline(fmt.MAX_LINE):
            raise DumpFormatError("data after the end record (corrupt dump)")
        if self.progress is not None:
            self.progress(self.stats.inodes, self.src.consumed)  # the end record, too
        if self.uuid:
            with self.ctx.guard():
                await self.ctx.client.hset(self.keys.setting, "uuid", self.uuid)
            self.ctx.settings = replace(self.ctx.settings, uuid=self.uuid)
        return self.stats

    def _check_end(self, rec: dict[str, Any]) -> None:
        s = self.stats
        for name, have in (("inodes", s.inodes), ("links", s.links), ("blocks", s.blocks)):
            if fmt.integer(rec, name) != have:
                raise DumpFormatError(
                    f"end record counts {rec[name]} {name}, the dump held {have} (corrupt dump)"
                )

    def _enter(self, rec: dict[str, Any]) -> tuple[_Dir, bytes, int]:
        """The directory a record's entry goes into, its name and its entry sequence number.

        Records come depth first, so the parent is on the stack: directories
        above it are finished and leave. Names come in byte order, which also
        rules out a name given twice.
        """
        parent = fmt.integer(rec, "parent", 1)
        while self.stack and self.stack[-1].number != parent:
            self.stack.pop()
        if not self.stack:
            raise DumpFormatError(f"entry in directory {parent}, which is not open (corrupt dump)")
        top = self.stack[-1]
        name = fmt.check_name(rec)
        if top.last_name is not None and name <= top.last_name:
            raise DumpFormatError(f"entry {name!r} out of order in directory {parent}")
        top.last_name = name
        top.seq += 1
        return top, name, top.seq

    async def _inode(self, rec: dict[str, Any]) -> None:
        number = fmt.integer(rec, "ino", 1)
        if number != self.stats.inodes + 1:
            raise DumpFormatError(f"inode {number} out of order (corrupt dump)")
        v = {key: fmt.integer(rec, key) for key in fmt.INODE_INTS}
        mode = v["mode"]
        if stat.S_IFMT(mode) not in fmt.FILE_TYPES:
            raise DumpFormatError(f"inode {number} has an unknown file type (mode {mode:o})")
        is_dir = stat.S_ISDIR(mode)
        xattrs = self._xattrs(rec)
        keys = self.keys
        if number == 1:
            if rec.get("parent") != 0 or not is_dir:
                raise DumpFormatError("the dump does not start with its root directory")
            ino: int = ROOT_INO
            times: dict[Any, Any] = {
                k: v[k] for k in ("mode", "uid", "gid", "atime", "mtime", "ctime")
            }
            pipe = self._pipe()
            pipe.hset(keys.inode(ino), mapping={**times, "xattrs": len(xattrs)})
            if xattrs:
                pipe.hset(keys.xattrs(ino), mapping=xattrs)  # type: ignore[arg-type]
        else:
            top, name, seq = self._enter(rec)
            (ino,) = await self.ctx.inode_ids.take()
            fields: dict[Any, Any] = {
                **v,
                "nlink": 2 if is_dir else 1,
                "version": 1,
                "bytes": 0,
                "opens": 0,
                "xattrs": len(xattrs),
            }
            if is_dir:
                fields.update(parent=top.ino, dseq=0)
            target = None
            if stat.S_ISLNK(mode):
                target = fmt.unpack_bytes(rec.get("target"), "symlink target")
                fields["size"] = len(target)
            pipe = self._pipe()
            pipe.hset(keys.inode(ino), mapping=fields)
            pipe.hset(keys.dirents(top.ino), name, f"{ino}:{seq}")
            pipe.hset(keys.inode(top.ino), "dseq", seq)
            if is_dir:
                pipe.hincrby(keys.inode(top.ino), "nlink", 1)
            if target is not None:
                pipe.set(keys.symlink(ino), target)
            if xattrs:
                pipe.hset(keys.xattrs(ino), mapping=xattrs)  # type: ignore[arg-type]
            pipe.hincrby(keys.usage, "inodes", 1)
        await self._queued()
        self.stats.inodes += 1
        if stat.S_ISREG(mode):
            await self._blocks(ino, fmt.integer(rec, "blocks"))
        if is_dir:
            self.stack.append(_Dir(number, ino))
        elif v["nlink"] > 1:
            self.linked[number] = ino

    def _xattrs(self, rec: dict[str, Any]) -> dict[bytes, bytes]:
        pairs = rec.get("xattrs", [])
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in pairs
        ):
            raise DumpFormatError(f"inode {rec.get('ino')} has malformed xattrs")
        return {
            fmt.unpack_bytes(k, "xattr name"): fmt.unpack_bytes(val, "xattr value")
            for k, val in pairs
        }

    async def _link(self, rec: dict[str, Any]) -> None:
        number = fmt.integer(rec, "ino", 1)
        ino = self.linked.get(number)
        if ino is None:
            raise DumpFormatError(f"link to inode {number}, not a file with several names before")
        top, name, seq = self._enter(rec)
        keys = self.keys
        pipe = self._pipe()
        pipe.hset(keys.dirents(top.ino), name, f"{ino}:{seq}")
        pipe.hset(keys.inode(top.ino), "dseq", seq)
        pipe.hincrby(keys.inode(ino), "nlink", 1)
        await self._queued()
        self.stats.links += 1

    async def _blocks(self, ino: int, count: int) -> None:
        """Read a file's ``count`` block records and store them in batches."""
        batch: list[tuple[int, int, bytes]] = []
        last = -1
        for _ in range(count):
            index, valid, length, crc = fmt.check_block(await self._record(), self.block_size)
            if index <= last:
                raise DumpFormatError(f"block {index} out of order (corrupt dump)")
            last = index
            framed = await self.src.readexactly(length + 1)
            if framed[-1:] != b"\n":
                raise DumpFormatError("block data is not followed by a newline (corrupt dump)")
            stored = framed[:-1]
            fmt.check_object(stored, crc)
            batch.append((index, valid, stored))
            if len(batch) >= OBJECT_BATCH:
                await self._store(ino, batch)
                batch = []
        if batch:
            await self._store(ino, batch)

    async def _store(self, ino: int, batch: list[tuple[int, int, bytes]]) -> None:
        """Queue objects with their map entries and byte counts."""
        keys = self.keys
        ids = await self.ctx.object_ids.take(len(batch))
        total = sum(valid for _, valid, _ in batch)
        blobs = [stored for _, _, stored in batch]
        if keys.spread:
            # In other slots than the MULTI (keys.py): stored, every SET answered OK,
            # before the batch naming them is sent, as a commit does (data.py). A load
            # cut short then leaves unnamed objects at worst, which gc deletes.
            with self.ctx.guard():
                await self.objects.store_all(ids, blobs)
            pipe = self._pipe()
        else:
            pipe = self._pipe()
            self.objects.queue_store(pipe, ids, blobs)
        mapping = {
            str(index): f"{obj}:{valid}" for obj, (index, valid, _) in zip(ids, batch, strict=True)
        }
        pipe.hset(keys.blockmap(ino), mapping=mapping)  # type: ignore[arg-type]
        pipe.hincrby(keys.inode(ino), "bytes", total)
        pipe.hincrby(keys.usage, "bytes", total)
        self.stats.blocks += len(batch)
        await self._queued(sum(len(stored) for _, _, stored in batch))


async def load_volume(
    ctx: Context,
    src: AsyncReader,
    block_size: int,
    progress: Progress | None = None,
    uuid: str | None = None,
) -> LoadStats:
    """Restore the dump read from ``src`` (header already read) into the empty volume;
    at the end the volume takes ``uuid``, the dumped volume's (the header's)."""
    return await Loader(ctx, src, block_size, progress, uuid).run()
