"""Two nodes race on one volume: exactly one contender wins and nothing leaks.

``vol`` and ``vol2`` are independent backend instances (own Redis connections,
sessions and caches) on one volume. Each round starts the competing calls
together with ``asyncio.gather``, so they interleave at every await (name
resolution, inode id allocation, the script itself). After each round the
winners are counted, the losers' errnos checked, and statfs's inode counter
must equal what the survivors add up to; fsck runs at the end of each test
(and again after close, in the ``vol`` fixture).

Every race runs twice: with the nodes' metadata caches off (the fixtures'
default: every lookup reads Redis) and on (each node consumes its change
events, so names and attributes are served from its cache). With caches on, a
node may briefly read what the other node changed a moment ago, until the event
arrives: checks that read through a node's cache then poll with a deadline
(``settled``); the outcome of the race itself and the statfs counters, which
come from Redis, are checked at once.

Shortcuts: both nodes share one event loop and one redis-server, so the races
are interleavings at await points rather than parallel CPUs; ROUNDS is modest;
calls are staggered by a few loop turns that vary by round so that each side
gets ahead sometimes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import (
    ROOT_INO,
    Exists,
    FSError,
    Inodes,
    NotEmpty,
    NotFound,
    Volume,
)
from redisfuse.backend.fsck import fsck
from tests.caching import caching

ROUNDS = 30
ALSO_ON_CLUSTER = {
    "test_exclusive_create_has_one_winner",
    "test_rename_of_one_source_has_one_winner",
}
"""Also run on the test cluster (conftest.py): with caches on, the change events
(sharded pub/sub there) must arrive."""

SETTLE_S = 5.0
UID, GID = os.getuid(), os.getgid()


@dataclass
class Nodes:
    """The two nodes of a race test, and whether their metadata caches are on."""

    vol: Volume
    vol2: Volume
    cached: bool

    @property
    def inodes(self) -> tuple[Inodes, Inodes]:
        return self.vol.inodes, self.vol2.inodes

    async def settled(self, check: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Run ``check(*args)``; with caches on, retry it until the events have arrived."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                await check(*args)
                return
            except (AssertionError, FSError):
                if not self.cached or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.01)


@pytest_asyncio.fixture(params=["uncached", "cached"])
async def nodes(request: pytest.FixtureRequest, vol: Volume, vol2: Volume) -> AsyncIterator[Nodes]:
    """``vol`` and ``vol2``, with their metadata caches off or on (event streams running)."""
    if request.param == "uncached":
        yield Nodes(vol, vol2, cached=False)
        return
    async with caching(vol), caching(vol2):
        yield Nodes(vol, vol2, cached=True)


async def _after(yields: int, call: Awaitable[Any]) -> Any:
    for _ in range(yields):
        await asyncio.sleep(0)
    return await call


async def race(*calls: Awaitable[Any], stagger: int = 0) -> list[Any]:
    """Run the calls concurrently; each result is a value or the FSError it raised.

    The call at index ``k`` starts after ``(stagger >> 2k) & 3`` turns of the loop,
    so that varying ``stagger`` across rounds varies which call gets ahead.
    """
    results = await asyncio.gather(
        *(_after((stagger >> (2 * k)) & 3, c) for k, c in enumerate(calls)),
        return_exceptions=True,
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, FSError):
            raise r
    return results


def one_winner(results: Sequence[Any], loses_with: type[FSError]) -> int:
    """The index of the only call that succeeded; every other one failed with ``loses_with``."""
    wins = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    assert len(wins) == 1, f"{len(wins)} winners: {results}"
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, loses_with):
            raise AssertionError(f"loser failed with {r!r}, expected {loses_with.__name__}")
    return wins[0]


async def assert_inodes(nodes: Nodes, expected: int) -> None:
    """statfs on both nodes (read from Redis, never cached) counts ``expected`` inodes."""
    for v in (nodes.vol, nodes.vol2):
        used = (await v.statfs()).inodes_used
        assert used == expected, f"statfs counts {used} inodes, expected {expected}"


async def assert_names(nodes: Sequence[Inodes], parent: int, name: bytes, ino: int) -> None:
    for fs in nodes:
        assert (await fs.lookup(parent, name)).ino == ino


async def assert_nlink(nodes: Sequence[Inodes], ino: int, nlink: int) -> None:
    for fs in nodes:
        assert (await fs.getattr(ino)).nlink == nlink


async def assert_freed(nodes: Sequence[Inodes], ino: int) -> None:
    for fs in nodes:
        try:
            attr = await fs.getattr(ino)
        except NotFound:
            continue
        raise AssertionError(f"inode {ino} was not freed: {fs!r} sees {attr}")


async def assert_contents(nodes: Sequence[Inodes], ino: int, data: bytes) -> None:
    for fs in nodes:
        assert await read_all(fs, ino) == data


async def assert_exists(v: Volume, path: str, exists: bool) -> None:
    assert await v.exists(path) == exists, f"{path} exists: {not exists}"


async def assert_fsck(raw: Redis, volume_name: str) -> None:
    report = await fsck(raw, volume_name)
    assert report.ok, f"fsck:\n{report}"


async def new_file(fs: Inodes, parent: int, name: bytes, data: bytes = b"") -> int:
    fh, attr = await fs.create(parent, name, 0o644, os.O_WRONLY, UID, GID)
    try:
        if data:
            await fs.write(fh, 0, data)
    finally:
        await fs.release(fh)
    return attr.ino


async def read_all(fs: Inodes, ino: int) -> bytes:
    fh, attr = await fs.open(ino, os.O_RDONLY)
    try:
        return await fs.read(fh, 0, attr.size + 1)
    finally:
        await fs.release(fh)


async def test_exclusive_create_has_one_winner(nodes: Nodes, raw: Redis, volume_name: str) -> None:
    fs1, fs2 = nodes.inodes
    contenders = [fs1, fs2, fs1, fs2]
    for i in range(ROUNDS):
        name = b"f%d" % i
        results = await race(
            *(fs.create(ROOT_INO, name, 0o644, os.O_WRONLY, UID, GID) for fs in contenders),
            stagger=i,
        )
        won = one_winner(results, Exists)
        fh, attr = results[won]
        await contenders[won].release(fh)
        await assert_inodes(nodes, 2 + i)
        await nodes.settled(assert_names, nodes.inodes, ROOT_INO, name, attr.ino)
    assert sorted(await nodes.vol2.listdir("/")) == sorted(f"f{i}" for i in range(ROUNDS))
    await assert_fsck(raw, volume_name)


async def test_mkdir_has_one_winner(nodes: Nodes, raw: Redis, volume_name: str) -> None:
    fs1, fs2 = nodes.inodes
    contenders = [fs1, fs2, fs1, fs2]
    for i in range(ROUNDS):
        name = b"d%d" % i
        results = await race(
            *(fs.mkdir(ROOT_INO, name, 0o755, UID, GID) for fs in contenders), stagger=i
        )
        attr = results[one_winner(results, Exists)]
        await assert_inodes(nodes, 2 + i)
        await nodes.settled(assert_names, nodes.inodes, ROOT_INO, name, attr.ino)
        await nodes.settled(assert_nlink, nodes.inodes, ROOT_INO, 2 + i + 1)
    await assert_fsck(raw, volume_name)


@pytest.mark.parametrize("kind", ["file", "dir"])
async def test_renames_onto_one_target_leave_one_survivor(
    nodes: Nodes, raw: Redis, volume_name: str, kind: str
) -> None:
    """POSIX rename replaces: both succeed, one inode ends up named, the others are freed.

    The target name is the same in every round, so from the second round on
    each race also replaces the previous round's survivor.
    """
    fs1, fs2 = nodes.inodes
    target = b"t"
    for i in range(ROUNDS):
        a, b = b"a%d" % i, b"b%d" % i
        if kind == "file":
            content = {
                await new_file(fs1, ROOT_INO, a, b"A%d" % i * 5000): b"A%d" % i * 5000,
                await new_file(fs2, ROOT_INO, b, b"B%d" % i * 7000): b"B%d" % i * 7000,
            }
        else:
            content = {
                (await fs1.mkdir(ROOT_INO, a, 0o755, UID, GID)).ino: b"",
                (await fs2.mkdir(ROOT_INO, b, 0o755, UID, GID)).ino: b"",
            }
        results = await race(
            fs1.rename(ROOT_INO, a, ROOT_INO, target),
            fs2.rename(ROOT_INO, b, ROOT_INO, target),
            stagger=i,
        )
        assert results == [None, None]
        await assert_inodes(nodes, 2)
        listing = await fs1.readdir(ROOT_INO)  # readdir reads Redis, never the cache
        assert [e.name for e in listing] == [target]
        survivor = listing[0].ino
        assert survivor in content
        (loser,) = content.keys() - {survivor}
        await nodes.settled(assert_names, nodes.inodes, ROOT_INO, target, survivor)
        await nodes.settled(assert_freed, nodes.inodes, loser)
        if kind == "file":
            await assert_contents(nodes.inodes, survivor, content[survivor])
        else:
            await nodes.settled(assert_nlink, nodes.inodes, ROOT_INO, 3)
    await assert_fsck(raw, volume_name)


async def test_rename_of_one_source_has_one_winner(
    nodes: Nodes, raw: Redis, volume_name: str
) -> None:
    fs1, fs2 = nodes.inodes
    for i in range(ROUNDS):
        ino = await new_file(fs1, ROOT_INO, b"s", b"x" * i)
        x, y = b"x%d" % i, b"y%d" % i
        results = await race(
            fs1.rename(ROOT_INO, b"s", ROOT_INO, x),
            fs2.rename(ROOT_INO, b"s", ROOT_INO, y),
            stagger=i,
        )
        won = one_winner(results, NotFound)
        await assert_inodes(nodes, 2 + i)
        names = set(await nodes.vol2.listdir("/"))
        assert (f"x{i}" in names) == (won == 0) and (f"y{i}" in names) == (won == 1)
        assert "s" not in names
        await nodes.settled(assert_names, nodes.inodes, ROOT_INO, [x, y][won], ino)
    await assert_fsck(raw, volume_name)


async def test_link_and_unlink_of_one_name_have_one_winner(
    nodes: Nodes, raw: Redis, volume_name: str
) -> None:
    fs1, fs2 = nodes.inodes
    ino = await new_file(fs1, ROOT_INO, b"f", b"data")
    contenders = [fs1, fs2, fs1, fs2]
    for i in range(ROUNDS):
        results = await race(*(fs.link(ino, ROOT_INO, b"l") for fs in contenders), stagger=i)
        one_winner(results, Exists)
        await nodes.settled(assert_nlink, nodes.inodes, ino, 2)
        results = await race(*(fs.unlink(ROOT_INO, b"l") for fs in contenders), stagger=i)
        one_winner(results, NotFound)
        await nodes.settled(assert_nlink, nodes.inodes, ino, 1)
        await assert_inodes(nodes, 2)
    assert await nodes.vol2.listdir("/") == ["f"]
    await assert_fsck(raw, volume_name)


async def test_link_races_unlink_of_the_new_name(
    nodes: Nodes, raw: Redis, volume_name: str
) -> None:
    """Either the unlink comes second and removes the new name, or it finds nothing."""
    fs1, fs2 = nodes.inodes
    ino = await new_file(fs1, ROOT_INO, b"f", b"data")
    for i in range(ROUNDS):
        linked, unlinked = await race(
            fs1.link(ino, ROOT_INO, b"l"), fs2.unlink(ROOT_INO, b"l"), stagger=i
        )
        assert not isinstance(linked, BaseException), linked
        present = isinstance(unlinked, NotFound)
        if not present:
            assert unlinked is None, unlinked
        await assert_inodes(nodes, 2)
        for v in (nodes.vol, nodes.vol2):
            await nodes.settled(assert_exists, v, "/l", present)
        await nodes.settled(assert_nlink, nodes.inodes, ino, 1 + present)
        if present:
            await fs2.unlink(ROOT_INO, b"l")
    await assert_fsck(raw, volume_name)


async def test_unlink_of_last_name_races_link(nodes: Nodes, raw: Redis, volume_name: str) -> None:
    """A link that comes second must fail (ENOENT) and must not resurrect or leak the inode."""
    fs1, fs2 = nodes.inodes
    expected = 1
    for i in range(ROUNDS):
        f, g = b"f%d" % i, b"g%d" % i
        data = b"%d" % i * 30_000
        ino = await new_file(fs1, ROOT_INO, f, data)
        unlinked, linked = await race(
            fs1.unlink(ROOT_INO, f), fs2.link(ino, ROOT_INO, g), stagger=i
        )
        assert unlinked is None, unlinked
        if isinstance(linked, BaseException):
            assert isinstance(linked, NotFound), linked
            await assert_inodes(nodes, expected)
            await nodes.settled(assert_freed, nodes.inodes, ino)
        else:
            assert linked.ino == ino
            expected += 1
            await assert_inodes(nodes, expected)
            await nodes.settled(assert_nlink, nodes.inodes, ino, 1)
            await assert_contents(nodes.inodes, ino, data)
    await assert_fsck(raw, volume_name)


async def test_rmdir_races_create_inside(nodes: Nodes, raw: Redis, volume_name: str) -> None:
    """Either the directory goes (and the create finds no parent) or it keeps the new file."""
    fs1, fs2 = nodes.inodes
    expected = 1
    for i in range(ROUNDS):
        d = b"d%d" % i
        parent = (await fs1.mkdir(ROOT_INO, d, 0o755, UID, GID)).ino
        removed, created = await race(
            fs1.rmdir(ROOT_INO, d),
            fs2.create(parent, b"x", 0o644, os.O_WRONLY, UID, GID),
            stagger=i,
        )
        if isinstance(created, BaseException):
            assert removed is None, removed
            assert isinstance(created, NotFound), created
            await assert_inodes(nodes, expected)
            for v in (nodes.vol, nodes.vol2):
                await nodes.settled(assert_exists, v, f"/d{i}", False)
        else:
            assert isinstance(removed, NotEmpty), removed
            await fs2.release(created[0])
            expected += 2
            await assert_inodes(nodes, expected)
            assert await nodes.vol.listdir(f"/d{i}") == ["x"]
    await assert_fsck(raw, volume_name)
