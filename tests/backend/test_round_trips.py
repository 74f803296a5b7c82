"""What the caches save: reads and lookups that need fewer round trips to Redis.

Round trips are counted on the server, from ``INFO commandstats``: a read that
needs its block map runs the ``read_map`` script (an EVALSHA), and every fetch
of objects is one MGET. The reading volume runs its event stream, as a mount
does, so its metadata cache is on; the file is written through a second client
so that the reader's object cache starts empty.

Shortcut: the counts are of the whole server, so these tests assume nothing
else talks to it meanwhile (the volumes' own housekeeping runs every 2 s and
sends neither MGET nor EVALSHA).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

from redis.asyncio import Redis

from redisfuse.backend import Volume
from redisfuse.backend.counting import redis_tally
from redisfuse.backend.model import BLOCK_SIZE
from redisfuse.backend.namespace import LISTING_ON_MISS
from redisfuse.backend.reader import MAP_WINDOW_BLOCKS, READ_AHEAD_BLOCKS
from tests.caching import caching

BS = BLOCK_SIZE


async def calls(raw: Redis) -> Counter[str]:
    """Calls per command so far on the server."""
    stats = await raw.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def block(idx: int) -> bytes:
    """Block ``idx`` of the test file: compressible, and different from every other."""
    return (b"%08d" % idx) * (BS // 8)


async def write_blocks(v: Volume, path: str, count: int) -> None:
    async with await v.open(path, "wb") as f:
        for idx in range(count):
            await f.write(block(idx))


async def test_random_reads_cost_one_round_trip_once_the_map_window_is_cached(
    vol: Volume, vol2: Volume, raw: Redis
) -> None:
    blocks = MAP_WINDOW_BLOCKS + 40
    await write_blocks(vol2, "/big", blocks)
    ino = (await vol.stat("/big")).ino
    async with caching(vol):
        fh, _ = await vol.inodes.open(ino, os.O_RDONLY)
        try:
            order = [100, 7, 200, 101, 37, MAP_WINDOW_BLOCKS - 1, 150]
            before = await calls(raw)
            for idx in order:
                assert await vol.inodes.read(fh, idx * BS + 100, 4096) == block(idx)[100:4196]
            delta = await calls(raw) - before
            # One map window for all of them (the first read), one MGET per read.
            assert delta["evalsha"] == 1
            assert delta["mget"] == len(order)
            # A random reader gets the objects it read and no others.
            assert len(vol.inodes.data.cache) == len(order)

            before = await calls(raw)
            idx = MAP_WINDOW_BLOCKS + 3  # the next window: one more map read
            assert await vol.inodes.read(fh, idx * BS, 4096) == block(idx)[:4096]
            delta = await calls(raw) - before
            assert (delta["evalsha"], delta["mget"]) == (1, 1)
        finally:
            await vol.inodes.release(fh)


async def test_a_sequential_reader_finds_the_next_blocks_fetched_ahead(
    vol: Volume, vol2: Volume, raw: Redis
) -> None:
    blocks = 4 * READ_AHEAD_BLOCKS
    await write_blocks(vol2, "/seq", blocks)
    ino = (await vol.stat("/seq")).ino
    request = 2 * BS  # the kernel's 128 KiB reads
    async with caching(vol):
        fh, _ = await vol.inodes.open(ino, os.O_RDONLY)
        try:
            before = await calls(raw)
            got = bytearray()
            waited = 0
            for offset in range(0, blocks * BS, request):
                misses = vol.inodes.data.cache.misses
                got += await vol.inodes.read(fh, offset, request)
                waited += vol.inodes.data.cache.misses > misses
                await asyncio.sleep(0.005)  # the reader's own work: read-ahead proceeds
            delta = await calls(raw) - before
        finally:
            await vol.inodes.release(fh)
    assert bytes(got) == b"".join(block(i) for i in range(blocks))
    reads = blocks * BS // request
    # The blocks were fetched in a few batches ahead of the reader, not per read ...
    assert delta["mget"] <= reads // 2
    # ... and it found almost every read's blocks already there.
    assert waited <= 3, f"{waited} of {reads} reads waited for Redis"


async def test_a_miss_in_a_small_directory_makes_later_misses_there_free(
    vol: Volume, vol2: Volume, raw: Redis
) -> None:
    await vol2.mkdir("/d")
    for i in range(5):
        await vol2.write_file(f"/d/f{i}", b"x")
    async with caching(vol):
        before = await calls(raw)
        for i in range(20):
            assert not await vol.exists(f"/d/new{i}")
        assert await vol.exists("/d/f3")
        delta = await calls(raw) - before
        # The first miss brought the listing; the hit still asks (for the attributes).
        assert delta["evalsha"] == 2 + 1  # /d resolved once, the first miss, f3

        # Another node's change drops the listing: the next miss asks again and sees it.
        await vol2.write_file("/d/new5", b"y")
        for _ in range(100):
            if await vol.exists("/d/new5"):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("another node's new file stayed invisible")


async def test_a_miss_in_a_large_directory_does_not_bring_its_names(
    vol: Volume, vol2: Volume, raw: Redis
) -> None:
    await vol2.mkdir("/big")
    ino = (await vol2.stat("/big")).ino
    for i in range(LISTING_ON_MISS + 1):
        await vol2.inodes.mknod(ino, b"f%d" % i, 0o100644, 0, 0)
    async with caching(vol):
        await vol.stat("/big")
        before = await calls(raw)
        for i in range(3):
            assert not await vol.exists(f"/big/new{i}")
        delta = await calls(raw) - before
        assert delta["evalsha"] == 3


async def test_a_directory_this_node_fills_stays_known_however_long_it_takes(
    vol: Volume, raw: Redis
) -> None:
    """Unpacking an archive into a new directory: every new name is known absent
    without a round trip (the kernel looks each one up before creating it), also
    after the cache's lifetime has passed many times over, because each change of
    this node counts as seeing the directory anew."""
    async with caching(vol):
        vol.inodes.ctx.cache.ttl = 0.2
        ino = (await vol.mkdir("/d")).ino
        before = await calls(raw)
        for i in range(40):
            name = b"f%d" % i
            assert vol.inodes.known_absent(ino, name), f"{name!r} needed a lookup"
            await vol.inodes.mknod(ino, name, 0o100644, 0, 0)
            await asyncio.sleep(0.02)  # 0.8 s in all: four lifetimes of the cache
        delta = await calls(raw) - before
        assert delta["evalsha"] == 40  # the creates, and nothing else


async def test_what_a_rename_moved_is_known_without_asking(vol: Volume, raw: Redis) -> None:
    """The kernel asks for a renamed file's attributes right after the rename (its
    ctime changed), and `mv` then `rm` or `stat` of the new name is common: the
    rename's reply brings the moved inode and its new name, so none of that asks
    Redis, for a plain rename and for an exchange."""
    async with caching(vol):
        root = (await vol.stat("/")).ino
        a = (await vol.write_file("/a", b"a"), await vol.stat("/a"))[1]
        b = await vol.mkdir("/b")
        await vol.inodes.rename(root, b"a", root, b"a2")
        await vol.inodes.rename(root, b"a2", root, b"b", 2)  # RENAME_EXCHANGE
        before = await calls(raw)
        moved = await vol.inodes.getattr(a.ino)
        assert (await vol.inodes.lookup(root, b"b")).ino == a.ino
        assert (await vol.inodes.lookup(root, b"a2")).ino == b.ino
        assert moved.ctime_ns >= a.ctime_ns and moved.size == 1
        delta = await calls(raw) - before
        del delta["info"]  # calls() itself
        assert not delta, delta
        tally = redis_tally(vol.inodes.ctx.client)
        trips = tally.round_trips
        await vol.inodes.unlink(root, b"b")
        assert tally.round_trips - trips == 1  # the unlink script, nothing to resolve first
