"""The backend's own counters (stats.py, counting.py), read without FUSE.

Each test does operations whose cost is known and checks the snapshot moved by
exactly that much. Shortcut: the event stream is driven by a task of the test
itself, as the FUSE mount drives it.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import anyio

from redisfuse.backend import ROOT_INO, Volume
from redisfuse.backend.stats import BackendStats

ALSO_ON_CLUSTER = {"test_round_trips"}
"""The cluster client counts as the single-server one does (cluster.DeadlineCluster)."""

DATA = os.urandom(150_000)  # 3 blocks of 64 KiB, the last one partly filled; incompressible


async def test_bytes_and_blocks(vol: Volume, vol2: Volume) -> None:
    before = vol.inodes.stats()
    await vol.write_file("/f", DATA)
    assert await vol.read_file("/f") == DATA
    after = vol.inodes.stats()
    assert after.bytes_written - before.bytes_written == len(DATA)
    assert after.bytes_read - before.bytes_read == len(DATA)
    # Random data is stored raw: the stored bytes are the data plus a codec byte per block.
    assert after.object_bytes_stored - before.object_bytes_stored == len(DATA) + 3
    # The commit put its blocks in this node's cache: the read hit all three.
    assert after.block_cache_hits - before.block_cache_hits == 3
    assert after.block_cache_hit_bytes - before.block_cache_hit_bytes == len(DATA)
    assert after.block_cache_bytes == len(DATA)
    assert after.block_cache_objects == 3

    # Another node has none of them: three misses, loaded from Redis, then hits.
    other = vol2.inodes.stats()
    assert await vol2.read_file("/f") == DATA
    first = vol2.inodes.stats()
    assert first.block_cache_misses - other.block_cache_misses == 3
    assert first.object_bytes_loaded - other.object_bytes_loaded == len(DATA) + 3
    assert await vol2.read_file("/f") == DATA
    second = vol2.inodes.stats()
    assert second.block_cache_hits - first.block_cache_hits == 3
    assert second.object_bytes_loaded == first.object_bytes_loaded


async def test_round_trips(vol: Volume) -> None:
    """A command alone is one round trip; a pipeline is one round trip for all its commands
    (on a cluster too, where the commands of a pipeline go to their masters in parallel)."""
    fs = vol.inodes
    before = fs.stats()
    await fs.getattr(ROOT_INO)  # one HGETALL (no event stream: the metadata cache is off)
    one = fs.stats()
    assert (one.redis_round_trips - before.redis_round_trips, one.redis_commands) == (
        1,
        before.redis_commands + 1,
    )
    await fs.listxattr(ROOT_INO)  # EXISTS and HKEYS in one pipeline
    two = fs.stats()
    assert two.redis_round_trips - one.redis_round_trips == 1
    assert two.redis_commands - one.redis_commands == 2
    assert two.redis_retries == 0
    assert one.meta_cache_hits == 0


async def test_session_state(vol: Volume) -> None:
    fs = vol.inodes
    assert fs.stats().session == int(fs.ctx.session) > 0
    assert fs.stats().session_alive
    f = await vol.open("/g", "wb")
    await f.write(b"x" * 1000)
    state = fs.stats()
    assert (state.open_handles, state.dirty_bytes) == (1, 1000)
    await f.close()
    state = fs.stats()
    assert (state.open_handles, state.dirty_bytes) == (0, 0)
    # The snapshot is plain data (the mount sends it as JSON) and can be read from a thread.
    from_thread = await anyio.to_thread.run_sync(fs.stats)
    assert isinstance(from_thread, BackendStats)
    assert asdict(from_thread)["volume"] == vol.name


async def test_events_counted(vol: Volume, vol2: Volume) -> None:
    """Events from another node are counted by kind, as the stream hears them."""
    fs = vol.inodes
    subscribed, heard = anyio.Event(), anyio.Event()

    async def listen() -> None:
        async for _ in fs.events():
            state = fs.stats()
            if state.events_resync:
                subscribed.set()
            if state.events_entry and state.events_inode:
                heard.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(listen)
        with anyio.fail_after(10):
            await subscribed.wait()
            await vol2.mkdir("/d")
            await heard.wait()
        tasks.cancel_scope.cancel()
    state = fs.stats()
    assert state.events_resync == 1
    assert state.events_entry >= 1 and state.events_inode >= 1
