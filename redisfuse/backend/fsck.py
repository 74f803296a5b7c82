"""Checks a volume's invariants, reports every violation, and repairs them on request.

Walks every inode, entry, block map and object with SCAN (on every master of a
cluster, where objects are spread; objects.py) and compares what it
finds with the invariants listed in keys.py. Objects in ``trash`` and inodes in
``reclaim`` are pending deletion, not findings. Unreferenced objects (written by
a client that died before committing its block map) are ``leaked_objects``.

With ``repair=True`` each finding is fixed as it is found: dangling entries are
removed, nlink, parent, byte and usage counters are set to what the tree says,
unreachable inodes are freed (or kept as orphans while open), orphans without
inodes dropped, map entries of missing objects removed (those blocks read as
holes, with a log line naming the file), and leaked objects idle for
``min_idle`` seconds deleted. Run it on a quiet volume: a repair races with
writers as any offline fsck would.
"""

from __future__ import annotations

import logging
import stat
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from .keys import ROOT_INO, TAGGED, Keys
from .objects import Objects

log = logging.getLogger(__name__)

LEAK_MIN_IDLE_S = 60
"""A leaked object younger than this may belong to a flush still in flight."""


@dataclass
class FsckReport:
    """What fsck found (and, with repair, what it changed); ``ok`` when nothing."""

    inodes: int = 0
    entries: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)
    leaked_objects: list[int] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.leaked_objects

    def __str__(self) -> str:
        lines = [f"{self.inodes} inodes, {self.entries} entries, {self.objects} objects"]
        lines += self.problems
        if self.leaked_objects:
            lines.append(f"{len(self.leaked_objects)} leaked objects: {self.leaked_objects[:20]}")
        lines += [f"repaired: {r}" for r in self.repairs]
        return "\n".join(lines)


def _map_entry(idx: bytes, value: bytes) -> tuple[int, int] | None:
    """(object id, valid bytes) of a block map entry, or None when it is garbled."""
    try:
        int(idx)
        obj, valid = (int(x) for x in value.split(b":"))
    except ValueError:
        return None
    return obj, valid


async def _scan_ids(client: Redis, keys: Keys, kind: str) -> list[int]:
    prefix_len = len(keys.prefix) + len(kind) + 1
    out = []
    async for key in client.scan_iter(match=keys.pattern(kind), count=1000):
        out.append(int(key[prefix_len:]))
    return out


Progress = Callable[[int, int], None]
"""Called with (inodes checked, inodes in the volume) as fsck advances."""


class _Checker:
    def __init__(
        self, client: Redis, keys: Keys, repair: bool, min_idle: int, progress: Progress | None
    ) -> None:
        self.client = client
        self.progress = progress
        self.keys = keys
        self.objects = Objects(client, keys)
        self.repair = repair
        self.min_idle = min_idle
        self.report = FsckReport()
        self.names: dict[int, tuple[int, bytes]] = {}
        """One (parent, name) of each named inode, to name files in repairs."""

    def path(self, ino: int) -> str:
        """A path of ``ino`` for messages ('?' where the tree is broken)."""
        parts: list[str] = []
        seen = {ino}
        while ino != ROOT_INO:
            found = self.names.get(ino)
            if found is None:
                return "?/" + "/".join(reversed(parts)) if parts else f"<inode {ino}>"
            ino, name = found
            parts.append(name.decode(errors="replace"))
            if ino in seen:
                break
            seen.add(ino)
        return "/" + "/".join(reversed(parts))

    def problem(self, text: str) -> None:
        self.report.problems.append(text)

    def fixed(self, text: str) -> None:
        self.report.repairs.append(text)

    async def run(self) -> FsckReport:
        client, keys = self.client, self.keys
        inos = sorted(await _scan_ids(client, keys, "i"))
        self.report.inodes = len(inos)
        pipe = client.pipeline(transaction=False)
        for ino in inos:
            pipe.hgetall(keys.inode(ino))
        attrs: dict[int, dict[bytes, bytes]] = dict(zip(inos, await pipe.execute(), strict=True))
        orphans = await self._members(keys.orphans)
        reclaim = await self._members(keys.reclaim)
        trash = await self._members(keys.trash)
        opens = await self._open_counts()

        links: Counter[int] = Counter()
        subdirs: Counter[int] = Counter()
        parents: dict[int, int] = {}
        for ino, fields in attrs.items():
            if not stat.S_ISDIR(int(fields[b"mode"])):
                continue
            entries = cast(dict[bytes, bytes], await client.hgetall(keys.dirents(ino)))
            for name, value in entries.items():
                self.report.entries += 1
                child = int(value.split(b":")[0])
                if child not in attrs:
                    self.problem(f"dangling entry {name!r} in directory {ino} -> {child}")
                    if self.repair:
                        await client.hdel(keys.dirents(ino), name)
                        self.fixed(f"removed entry {name!r} of directory {ino}")
                    continue
                links[child] += 1
                self.names.setdefault(child, (ino, name))
                if stat.S_ISDIR(int(attrs[child][b"mode"])):
                    subdirs[ino] += 1
                    parents[child] = ino

        referenced: set[int] = set()
        live: dict[int, int] = {}  # ino -> bytes, after repairs
        for done, (ino, fields) in enumerate(attrs.items(), 1):
            used = await self._check_inode(
                ino, fields, links, subdirs, parents, orphans, opens, referenced
            )
            if used is not None:
                live[ino] = used
            if self.progress is not None:
                self.progress(done, len(attrs))
        for ino in await _scan_ids(client, keys, "m"):
            if ino not in live and ino not in reclaim:
                self.problem(f"block map of missing inode {ino} not queued for reclaim")
                if self.repair:
                    await client.zadd(keys.reclaim, {str(ino): 0})
                    self.fixed(f"queued block map of inode {ino} for reclaim")
                    reclaim.add(ino)
            if ino in reclaim:
                for value in cast(list[bytes], await client.hvals(keys.blockmap(ino))):
                    parsed = _map_entry(b"0", value)
                    if parsed is not None:
                        referenced.add(parsed[0])
        for ino in orphans:
            if ino not in live:
                self.problem(f"orphan {ino} has no inode")
                if self.repair:
                    await client.zrem(keys.orphans, str(ino))
                    self.fixed(f"dropped orphan {ino}")
        await self._check_objects(referenced, trash)
        await self._check_usage(live)
        return self.report

    async def _members(self, key: str) -> set[int]:
        return {int(i) for i in cast(list[bytes], await self.client.zrange(key, 0, -1))}

    async def _open_counts(self) -> Counter[int]:
        counts: Counter[int] = Counter()
        async for key in self.client.scan_iter(match=self.keys.pattern("open"), count=1000):
            for ino, n in (await self.client.hgetall(key)).items():
                counts[int(ino)] += int(n)
        return counts

    async def _check_inode(
        self,
        ino: int,
        fields: dict[bytes, bytes],
        links: Counter[int],
        subdirs: Counter[int],
        parents: dict[int, int],
        orphans: set[int],
        opens: Counter[int],
        referenced: set[int],
    ) -> int | None:
        """Check one inode; return its byte count, or None when it was freed by repair."""
        client, keys = self.client, self.keys
        mode = int(fields[b"mode"])
        nlink = int(fields[b"nlink"])
        if int(fields.get(b"opens", 0)) != opens[ino]:
            self.problem(
                f"inode {ino} counts {fields.get(b'opens')!r} opens, sessions hold {opens[ino]}"
            )
            if self.repair:
                await client.hset(keys.inode(ino), "opens", opens[ino])
                self.fixed(f"set opens of inode {ino} to {opens[ino]}")
        if stat.S_ISDIR(mode):
            expect = 2 + subdirs[ino]
            if ino != ROOT_INO and links[ino] > 1:
                self.problem(f"directory {ino} has {links[ino]} names")
            if ino != ROOT_INO and links[ino] and int(fields.get(b"parent", 0)) != parents[ino]:
                self.problem(
                    f"directory {ino} records parent {fields.get(b'parent')!r}, "
                    f"is in {parents[ino]}"
                )
                if self.repair:
                    await client.hset(keys.inode(ino), "parent", parents[ino])
                    self.fixed(f"set parent of directory {ino} to {parents[ino]}")
        else:
            expect = links[ino]
        if links[ino] == 0 and ino != ROOT_INO:
            expect = 0
            if ino not in orphans or not opens[ino]:
                self.problem(f"inode {ino} is unreachable and not held open")
                if self.repair:
                    await self._free(ino, fields)
                    return None
        if nlink != expect:
            self.problem(f"inode {ino} has nlink {nlink}, expected {expect}")
            if self.repair:
                await client.hset(keys.inode(ino), "nlink", expect)
                self.fixed(f"set nlink of inode {ino} to {expect}")
        raw_map = cast(dict[bytes, bytes], await client.hgetall(keys.blockmap(ino)))
        blockmap: dict[bytes, tuple[int, int]] = {}
        missing: list[bytes] = []
        for idx, value in raw_map.items():
            parsed = _map_entry(idx, value)
            if parsed is None:
                self.problem(f"corrupt block map entry {idx!r} -> {value!r} of inode {ino}")
                missing.append(idx)
            else:
                blockmap[idx] = parsed
        present = await self._existing([obj for obj, _ in blockmap.values()])
        valid_sum = 0
        lost = 0
        for idx, (obj, valid) in blockmap.items():
            valid_sum += valid
            if obj in present:
                referenced.add(obj)
            else:
                self.problem(f"object {obj} (block {int(idx)} of inode {ino}) is missing")
                missing.append(idx)
                lost += valid
        recorded = int(fields.get(b"bytes", 0))
        if valid_sum != recorded:
            self.problem(f"inode {ino} counts {recorded} bytes, map holds {valid_sum}")
        if not self.repair:
            return recorded
        if missing:
            await client.hdel(keys.blockmap(ino), *missing)
            ordered = sorted(missing, key=lambda i: (len(i), i))
            blocks = ", ".join(i.decode(errors="replace") for i in ordered)
            text = (
                f"{self.path(ino)} (inode {ino}): block(s) {blocks} now read as zeros; "
                "their objects were missing or their entries garbled"
            )
            log.warning("fsck repaired %s", text)
            self.fixed(text)
        if valid_sum - lost != recorded:
            await client.hset(keys.inode(ino), "bytes", valid_sum - lost)
            self.fixed(f"set bytes of inode {ino} to {valid_sum - lost}")
        return valid_sum - lost

    async def _existing(self, objs: list[int]) -> set[int]:
        return await self.objects.existing(objs)

    async def _free(self, ino: int, fields: dict[bytes, bytes]) -> None:
        keys = self.keys
        pipe = self.client.pipeline(transaction=True)
        # execute_command: a cluster pipeline runs delete() as a coroutine of its own.
        pipe.execute_command(
            "DEL", keys.inode(ino), keys.dirents(ino), keys.xattrs(ino), keys.symlink(ino)
        )
        pipe.zrem(keys.orphans, str(ino))
        pipe.zadd(keys.reclaim, {str(ino): 0})
        await pipe.execute()
        self.fixed(f"freed unreachable inode {ino} ({fields.get(b'bytes', b'0').decode()} bytes)")

    async def _check_objects(self, referenced: set[int], trash: set[int]) -> None:
        objects = await self.objects.scan_ids()
        self.report.objects = len(objects)
        leaked = sorted(set(objects) - referenced - trash)
        self.report.leaked_objects = leaked
        if not (self.repair and leaked):
            return
        idle = await self.objects.idle_seconds(leaked)
        old = [
            obj
            for obj, seconds in zip(leaked, idle, strict=True)
            if seconds is not None and seconds >= self.min_idle
        ]
        if old:
            await self.objects.delete(old)
            self.fixed(f"deleted {len(old)} leaked objects")

    async def _check_usage(self, live: dict[int, int]) -> None:
        usage = await self.client.hgetall(self.keys.usage)
        inodes, total = len(live), sum(live.values())
        bad = False
        if int(usage.get(b"inodes", 0)) != inodes:
            self.problem(f"usage counts {usage.get(b'inodes')!r} inodes, found {inodes}")
            bad = True
        if int(usage.get(b"bytes", 0)) != total:
            self.problem(f"usage counts {usage.get(b'bytes')!r} bytes, inodes hold {total}")
            bad = True
        if bad and self.repair:
            await self.client.hset(self.keys.usage, mapping={"inodes": inodes, "bytes": total})
            self.fixed(f"set usage to {inodes} inodes, {total} bytes")


async def fsck(
    client: Redis,
    volume: str,
    *,
    repair: bool = False,
    min_idle: int = LEAK_MIN_IDLE_S,
    progress: Progress | None = None,
) -> FsckReport:
    """Check every invariant of ``volume``; with ``repair``, fix what was found.

    ``progress`` is called as each inode's check ends (for a CLI progress bar).
    """
    keys = Keys(volume)
    layout = cast(bytes | None, await client.hget(keys.setting, "objects"))
    keys = keys.with_layout(layout.decode() if layout else TAGGED)
    return await _Checker(client, keys, repair, min_idle, progress).run()
