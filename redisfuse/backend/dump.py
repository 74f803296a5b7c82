"""Writes a volume to a dump stream (format: dumpformat.py, docs/dump-format.md).

Walks the tree depth first from the root, entries in byte order of their
names, and numbers inodes in the order it meets them, so the same tree always
gives the same bytes whatever its inode and object ids in Redis. Each file is
consistent on its own: its inode, entries, xattrs, link target and block map
come from one MULTI, its objects (immutable) afterwards; a file whose objects
vanish meanwhile (replaced, then purged by gc) is read again whole. Memory is
bounded by the largest directory and block map, not by the volume: a file's
data waits in a :class:`~.streams.Spool` that goes to disk past a few MiB.
"""

from __future__ import annotations

import errno
import logging
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FSError
from . import dumpformat as fmt
from .context import Context
from .keys import ROOT_INO
from .objects import Objects
from .streams import AsyncWriter, Spool

log = logging.getLogger(__name__)

READ_BATCH = 32
"""Inodes read in one MULTI (with their block maps and, for directories, entries)."""

OBJECT_BATCH = 16
"""Objects fetched in one MGET (1 MiB of data at most)."""

PREFETCH_OBJECTS = 64
"""Objects of small files fetched together for a batch of inodes (4 MiB at most)."""

SPOOL_MEMORY = 8 << 20
"""Bytes of one file's data held in memory before its spool moves to a temporary file."""

ATTEMPTS = 10
"""Times a file is read again when it changes under the dump before the dump gives up."""

Progress = Callable[[int, int], None]
"""Called with (inodes done, bytes done) as a dump or load advances."""


@dataclass
class DumpStats:
    """What a dump wrote (the numbers its ``end`` record carries, plus retries)."""

    inodes: int = 0
    links: int = 0
    blocks: int = 0
    bytes: int = 0
    """Bytes written to the stream."""
    retries: int = 0
    """Files read again because they changed while being dumped."""


@dataclass
class _Snapshot:
    """One inode as a single MULTI saw it."""

    ino: int
    fields: dict[bytes, bytes]
    blockmap: dict[bytes, bytes]
    target: bytes | None
    xattrs: dict[bytes, bytes]
    entries: dict[bytes, bytes]

    @property
    def mode(self) -> int:
        return int(self.fields[b"mode"])


@dataclass
class _Frame:
    """A directory being walked: its dump number and its entries, sorted by name."""

    number: int
    entries: list[tuple[bytes, int]]
    pos: int = 0
    ready: list[tuple[bytes, _Snapshot | None]] = field(default_factory=list)


class _Changed(Exception):
    """An object of the file vanished after its block map was read."""


class Dumper:
    """Writes one volume to one stream; use :func:`dump_volume`."""

    def __init__(self, ctx: Context, out: AsyncWriter, progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.objects = Objects(ctx.client, ctx.keys)
        self.out = out
        self.progress = progress
        self.stats = DumpStats()
        self.linked: dict[int, int] = {}
        """Dump number of each inode with more than one name, by inode id."""
        self.visited: set[int] = set()
        """Directories walked already (a rename during the dump cannot make it loop)."""
        self.prefetched: dict[int, bytes] = {}
        """Objects of the small files of the batch of inodes being written."""
        self.spool_memory = SPOOL_MEMORY
        self.between_batches: Callable[[], Awaitable[None]] | None = None
        """Test hook awaited between two object batches of a file."""

    def __repr__(self) -> str:
        return f"<Dumper {self.keys.volume!r} {self.stats}>"

    async def _read(self, inos: list[int]) -> list[_Snapshot | None]:
        """Inodes in one MULTI: each with its map, target, xattrs and entries (None: gone)."""
        keys = self.keys
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=True)
            for ino in inos:
                pipe.hgetall(keys.inode(ino))
                pipe.hgetall(keys.blockmap(ino))
                pipe.get(keys.symlink(ino))
                pipe.hgetall(keys.xattrs(ino))
                pipe.hgetall(keys.dirents(ino))
            res: list[Any] = await pipe.execute()
        out: list[_Snapshot | None] = []
        for k, ino in enumerate(inos):
            fields, blockmap, target, xattrs, entries = res[5 * k : 5 * k + 5]
            out.append(
                _Snapshot(ino, fields, blockmap, target, xattrs, entries) if fields else None
            )
        return out

    async def run(self) -> DumpStats:
        settings = self.ctx.settings
        await self._write(fmt.header(settings.block_size, settings.codec, settings.uuid))
        (root,) = await self._read([ROOT_INO])
        if root is None:
            raise FSError(errno.EIO, f"volume {self.keys.volume!r} has no root directory")
        stack: list[_Frame] = []
        await self._emit(root, 0, b"", stack)
        while stack:
            frame = stack[-1]
            if not frame.ready:
                if frame.pos >= len(frame.entries):
                    stack.pop()
                    continue
                chunk = frame.entries[frame.pos : frame.pos + READ_BATCH]
                frame.pos += len(chunk)
                snaps = await self._read([ino for _, ino in chunk])
                frame.ready = [(name, snap) for (name, _), snap in zip(chunk, snaps, strict=True)]
                frame.ready.reverse()
                await self._prefetch([s for s in snaps if s is not None])
            name, snap = frame.ready.pop()
            if snap is not None:
                await self._emit(snap, frame.number, name, stack)
        s = self.stats
        end = {"kind": "end", "inodes": s.inodes, "links": s.links, "blocks": s.blocks}
        await self._write(fmt.line(end))
        await self.out.finish()
        return self.stats

    async def _write(self, data: bytes) -> None:
        await self.out.write(data)
        self.stats.bytes = self.out.written

    async def _emit(self, snap: _Snapshot, parent: int, name: bytes, stack: list[_Frame]) -> None:
        """Write one entry: a link to an inode met before, or the inode and its data."""
        for attempt in range(ATTEMPTS):
            nlink = int(snap.fields.get(b"nlink", 1))
            is_dir = stat.S_ISDIR(snap.mode)
            if not is_dir and snap.ino in self.linked:
                await self._write(
                    fmt.line(
                        {
                            "kind": "link",
                            "ino": self.linked[snap.ino],
                            "parent": parent,
                            "name": fmt.pack_bytes(name),
                        }
                    )
                )
                self.stats.links += 1
                return
            spool = Spool(self.spool_memory)
            try:
                blocks = await self._spool_blocks(snap, spool) if stat.S_ISREG(snap.mode) else 0
            except _Changed:
                spool.close()
                self.stats.retries += 1
                log.debug("inode %d changed while dumped (attempt %d)", snap.ino, attempt + 1)
                (again,) = await self._read([snap.ino])
                if again is None:
                    return  # deleted meanwhile: as if the dump had listed it later
                snap = again
                continue
            try:
                self.stats.inodes += 1
                number = self.stats.inodes  # the root is met first: 1
                if nlink > 1 and not is_dir:
                    self.linked[snap.ino] = number
                await self._write(fmt.line(_inode_record(snap, number, parent, name, blocks)))
                await spool.drain(self.out)
                self.stats.bytes = self.out.written
            finally:
                spool.close()
            if is_dir and snap.ino not in self.visited:
                self.visited.add(snap.ino)
                stack.append(_Frame(number, _sorted_entries(snap)))
            if self.progress is not None:
                self.progress(self.stats.inodes, self.stats.bytes)
            return
        raise FSError(errno.EAGAIN, f"inode {snap.ino} kept changing while being dumped")

    async def _prefetch(self, snaps: list[_Snapshot]) -> None:
        """Fetch the objects of the small files among ``snaps`` in one MGET.

        A directory of small files then costs one round trip for its data, not
        one per file. Objects never change, so what is fetched stays right; one
        that is missing is left out and looked up again when its file is read.
        """
        self.prefetched.clear()
        wanted: list[int] = []
        for snap in snaps:
            if stat.S_ISREG(snap.mode) and 0 < len(snap.blockmap) <= OBJECT_BATCH:
                if len(wanted) + len(snap.blockmap) > PREFETCH_OBJECTS:
                    break
                for value in snap.blockmap.values():
                    obj = value.split(b":")[0]
                    if obj.isdigit():
                        wanted.append(int(obj))
        if len(wanted) < 2:
            return
        with self.ctx.guard():
            stored = await self.objects.load(wanted)
        self.prefetched = {o: raw for o, raw in zip(wanted, stored, strict=True) if raw is not None}

    async def _spool_blocks(self, snap: _Snapshot, spool: Spool) -> int:
        """Spool the file's block records in index order; return how many."""
        entries: list[tuple[int, int, int]] = []
        for idx, value in snap.blockmap.items():
            try:
                obj, valid = (int(x) for x in value.split(b":"))
                entries.append((int(idx), obj, valid))
            except ValueError:
                raise FSError(
                    errno.EIO,
                    f"corrupt block map entry {idx!r} of inode {snap.ino}; run redisfuse fsck",
                ) from None
        entries.sort()
        for start in range(0, len(entries), OBJECT_BATCH):
            batch = entries[start : start + OBJECT_BATCH]
            if start and self.between_batches is not None:
                await self.between_batches()
            stored = [self.prefetched.pop(obj, None) for _, obj, _ in batch]
            if None in stored:
                with self.ctx.guard():
                    stored = await self.objects.load([obj for _, obj, _ in batch])
            records = []
            for (index, _, valid), raw in zip(batch, stored, strict=True):
                if raw is None:
                    raise _Changed
                records.append(fmt.block(index, valid, raw))
            await spool.add(b"".join(records))
        self.stats.blocks += len(entries)
        return len(entries)


def _sorted_entries(snap: _Snapshot) -> list[tuple[bytes, int]]:
    """A directory's (name, child) pairs in byte order of the names."""
    try:
        entries = [(name, int(value.split(b":")[0])) for name, value in snap.entries.items()]
    except ValueError:
        raise FSError(
            errno.EIO, f"corrupt entry in directory {snap.ino}; run redisfuse fsck"
        ) from None
    return sorted(entries)


def _inode_record(
    snap: _Snapshot, number: int, parent: int, name: bytes, blocks: int
) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "inode", "ino": number, "parent": parent}
    if parent:
        rec["name"] = fmt.pack_bytes(name)
    for key in fmt.INODE_INTS:
        rec[key] = int(snap.fields.get(key.encode(), 0))
    if stat.S_ISLNK(snap.mode):
        rec["target"] = fmt.pack_bytes(snap.target or b"")
    if stat.S_ISREG(snap.mode):
        rec["blocks"] = blocks
    rec["xattrs"] = [[fmt.pack_bytes(k), fmt.pack_bytes(v)] for k, v in sorted(snap.xattrs.items())]
    return rec


async def dump_volume(
    ctx: Context, out: AsyncWriter, progress: Progress | None = None
) -> DumpStats:
    """Write the volume of ``ctx`` to ``out`` (finished and flushed on return)."""
    return await Dumper(ctx, out, progress).run()
