"""Checks a volume's invariants and reports every violation it finds.

Reads only (repair is a later step): walks every inode, entry, block map and
object with SCAN and compares what it finds with the invariants listed in
keys.py. Objects in ``trash`` and inodes in ``reclaim`` are pending deletion,
not findings. Unreferenced objects (for instance written by a client that died
before committing its block map) are reported as ``leaked objects``.
"""

from __future__ import annotations

import stat
from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis

from .keys import ROOT_INO, Keys


@dataclass
class FsckReport:
    """What fsck found; ``problems`` is empty for a consistent volume."""

    inodes: int = 0
    entries: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)
    leaked_objects: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.leaked_objects

    def __str__(self) -> str:
        lines = [f"{self.inodes} inodes, {self.entries} entries, {self.objects} objects"]
        lines += self.problems
        if self.leaked_objects:
            lines.append(f"{len(self.leaked_objects)} leaked objects: {self.leaked_objects[:20]}")
        return "\n".join(lines)


async def _scan_ids(client: Redis, keys: Keys, kind: str) -> list[int]:
    prefix_len = len(keys.prefix) + len(kind) + 1
    out = []
    async for key in client.scan_iter(match=keys.pattern(kind), count=1000):
        out.append(int(key[prefix_len:]))
    return out


async def fsck(client: Redis, volume: str) -> FsckReport:
    """Check every invariant of ``volume`` and return the findings."""
    keys = Keys(volume)
    report = FsckReport()
    problems = report.problems
    inos = sorted(await _scan_ids(client, keys, "i"))
    report.inodes = len(inos)
    pipe = client.pipeline(transaction=False)
    for ino in inos:
        pipe.hgetall(keys.inode(ino))
    attrs = dict(zip(inos, await pipe.execute(), strict=True))
    orphans = {int(i) for i in await client.zrange(keys.orphans, 0, -1)}
    reclaim = {int(i) for i in await client.zrange(keys.reclaim, 0, -1)}
    trash = {int(i) for i in await client.zrange(keys.trash, 0, -1)}

    links: Counter[int] = Counter()
    subdirs: Counter[int] = Counter()
    parents: dict[int, int] = {}
    for ino, fields in attrs.items():
        if not stat.S_ISDIR(int(fields[b"mode"])):
            continue
        entries = await client.hgetall(keys.dirents(ino))  # type: ignore[misc]
        for name, value in entries.items():
            report.entries += 1
            child = int(value.split(b":")[0])
            if child not in attrs:
                problems.append(f"dangling entry {name!r} in directory {ino} -> {child}")
                continue
            links[child] += 1
            if stat.S_ISDIR(int(attrs[child][b"mode"])):
                subdirs[ino] += 1
                parents[child] = ino
    total_bytes = 0
    referenced: set[int] = set()
    for ino, fields in attrs.items():
        mode = int(fields[b"mode"])
        nlink = int(fields[b"nlink"])
        if stat.S_ISDIR(mode):
            expect = 2 + subdirs[ino]
            if ino != ROOT_INO and links[ino] != 1:
                problems.append(f"directory {ino} has {links[ino]} names")
            if ino != ROOT_INO and int(fields.get(b"parent", 0)) != parents.get(ino):
                problems.append(f"directory {ino} records parent {fields.get(b'parent')!r}, "
                                f"is in {parents.get(ino)}")
        else:
            expect = links[ino]
        if links[ino] == 0 and ino != ROOT_INO:
            if ino not in orphans:
                problems.append(f"inode {ino} is unreachable and not an open orphan")
            expect = 0
        if nlink != expect:
            problems.append(f"inode {ino} has nlink {nlink}, expected {expect}")
        blockmap = await client.hgetall(keys.blockmap(ino))  # type: ignore[misc]
        valid_sum = 0
        for idx, value in blockmap.items():
            obj, valid = (int(x) for x in value.split(b":"))
            referenced.add(obj)
            valid_sum += valid
            del idx
        if valid_sum != int(fields.get(b"bytes", 0)):
            problems.append(f"inode {ino} counts {fields.get(b'bytes')!r} bytes, map holds {valid_sum}")
        total_bytes += int(fields.get(b"bytes", 0))
    for ino in await _scan_ids(client, keys, "m"):
        if ino not in attrs and ino not in reclaim:
            problems.append(f"block map of missing inode {ino} not queued for reclaim")
        if ino in reclaim:
            for value in await client.hvals(keys.blockmap(ino)):  # type: ignore[misc]
                referenced.add(int(value.split(b":")[0]))
    for ino in orphans:
        if ino not in attrs:
            problems.append(f"orphan {ino} has no inode")
    objects = await _scan_ids(client, keys, "o")
    report.objects = len(objects)
    present = set(objects)
    for obj in sorted(referenced - present):
        problems.append(f"object {obj} is referenced but missing")
    report.leaked_objects = sorted(present - referenced - trash)
    usage = await client.hgetall(keys.usage)  # type: ignore[misc]
    if int(usage.get(b"inodes", 0)) != len(attrs):
        problems.append(f"usage counts {usage.get(b'inodes')!r} inodes, found {len(attrs)}")
    if int(usage.get(b"bytes", 0)) != total_bytes:
        problems.append(f"usage counts {usage.get(b'bytes')!r} bytes, inodes hold {total_bytes}")
    return report
