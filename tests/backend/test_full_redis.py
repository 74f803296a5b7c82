"""A full Redis: ENOSPC, nothing committed without its objects, honest statfs, quotas.

Each test starts its own small redis-server (``--maxmemory``, noeviction, as a
user would run one) so that filling it disturbs no other test. Shortcuts: the
servers are a few MiB, and incompressible data comes from one seeded generator.
"""

from __future__ import annotations

import errno
import random
import secrets

import pytest
from redis.asyncio import Redis

from redisfuse.backend import FSError, NoSpace, open_volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys

MIB = 1 << 20
MAXMEMORY = 8 * MIB


def noise(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes (zlib cannot shrink them), the same for the same seed."""
    return random.Random(seed).randbytes(size)


@pytest.fixture
def small_redis(redis_factory):  # type: ignore[no-untyped-def]
    return redis_factory("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction")


async def _fill(vol, path: str, chunk: int = MIB, limit: int = 64 * MIB) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """Write noise to ``path`` until Redis is full; return what was written and the
    size Redis acknowledged (the file's size after the failed close)."""
    data = noise(limit)
    f = await vol.open(path, "wb")
    written = 0
    with pytest.raises(NoSpace):
        try:
            while written < limit:
                await f.write(data[written : written + chunk])
                written += chunk
                await f.flush()
        finally:
            await f.close()
    return data[:written], (await vol.stat(path)).size


async def make_full(url: str) -> None:
    """Lower maxmemory below what Redis uses: every write that needs memory fails.

    (After a fill, Redis hovers at its limit, where small writes still pass.)
    """
    raw = Redis.from_url(url)
    try:
        used = int((await raw.info("memory"))["used_memory"])
        await raw.config_set("maxmemory", used - MIB)
    finally:
        await raw.aclose()


async def _assert_map_complete(raw: Redis, volume: str) -> None:
    """Every block map entry of the volume names an object that exists."""
    keys = Keys(volume)
    async for key in raw.scan_iter(match=keys.pattern("m")):
        for value in (await raw.hgetall(key)).values():
            obj = int(value.split(b":")[0])
            assert await raw.exists(keys.obj(obj)), f"{key!r} names missing object {obj}"


async def test_filling_redis_gives_enospc_and_keeps_what_was_committed(small_redis) -> None:  # type: ignore[no-untyped-def]
    name = f"t-{secrets.token_hex(4)}"
    raw = Redis.from_url(small_redis.url)
    try:
        async with open_volume(small_redis.url, volume=name, write_buffer_bytes=MIB) as vol:
            written, acknowledged = await _fill(vol, "/big")
            assert 0 < acknowledged <= len(written)
            assert acknowledged > MAXMEMORY // 4, "the volume stopped long before Redis was full"
            assert await vol.read_file("/big") == written[:acknowledged]
            await _assert_map_complete(raw, name)
            report = await fsck(raw, name)
            assert report.ok, str(report)

            # Reading, listing, stat and statfs all still work on the full Redis.
            assert await vol.listdir("/") == ["big"]
            st = await vol.statfs()
            assert st.bytes_total == MAXMEMORY
            assert st.bytes_free < MAXMEMORY // 10

            # So does deleting, and it makes room: as much fits again, give or take
            # one write (a few KiB of client buffers decide whether the last MiB
            # fits; the lean path's connections hold some, see lane.py).
            await vol.remove("/big")
            await vol.inodes.gc(grace_ms=0)
            again, refilled = await _fill(vol, "/again")
            assert refilled >= acknowledged - MIB
            assert await vol.read_file("/again") == again[:refilled]
            await _assert_map_complete(raw, name)
            await vol.remove("/again")
            await vol.inodes.gc(grace_ms=0)
            assert (await vol.statfs()).bytes_free > MAXMEMORY // 2
        report = await fsck(raw, name)
        assert report.ok, str(report)
    finally:
        await raw.aclose()


async def test_a_commit_whose_object_is_missing_changes_nothing(
    vol, vol2, raw, volume_name
) -> None:  # type: ignore[no-untyped-def]
    """The commit script itself refuses to point the map at an object that is not
    stored (what a SET refused by a full Redis leaves), and the stored ones go."""
    keys = Keys(volume_name)
    old = noise(3 * 65536, seed=1)
    await vol.write_file("/f", old)
    before = {k async for k in raw.scan_iter(match=keys.pattern("o"))}

    async def lose_one_object() -> None:
        new = {k async for k in raw.scan_iter(match=keys.pattern("o"))} - before
        assert len(new) == 2
        await raw.delete(sorted(new)[0])

    f = await vol.open("/f", "r+b")
    await f.write(noise(2 * 65536, seed=2))
    vol.inodes.data.before_commit = lose_one_object
    try:
        with pytest.raises(FSError) as caught:
            await f.flush()
    finally:
        vol.inodes.data.before_commit = None
    assert caught.value.errno == errno.EIO
    assert await vol2.read_file("/f") == old  # another node: this one still has the buffer
    assert {k async for k in raw.scan_iter(match=keys.pattern("o"))} == before
    await vol.inodes.data.settle(vol.inodes._dirty[(await vol.stat("/f")).ino])
    await f.close()  # commits the kept buffer, now that nothing interferes
    assert (await vol.read_file("/f"))[: 2 * 65536] == noise(2 * 65536, seed=2)


async def test_statfs_without_maxmemory_reports_the_machine(vol, raw) -> None:  # type: ignore[no-untyped-def]
    memory = await raw.info("memory")
    assert int(memory["maxmemory"]) == 0
    st = await vol.statfs()
    assert st.bytes_total == int(memory["total_system_memory"])
    assert 0 < st.bytes_free <= st.bytes_total


async def test_byte_and_inode_quotas_are_reported_and_enforced(redis_server, raw) -> None:  # type: ignore[no-untyped-def]
    name = f"t-{secrets.token_hex(4)}"
    async with open_volume(redis_server.url, volume=name, quota_bytes=MIB, quota_inodes=4) as vol:
        st = await vol.statfs()
        assert (st.bytes_total, st.quota_bytes, st.quota_inodes) == (MIB, MIB, 4)
        assert st.inodes_total == 4 and st.bytes_free == MIB
        await vol.write_file("/a", noise(MIB // 2))
        with pytest.raises(NoSpace):
            await vol.write_file("/b", noise(MIB))
        assert await vol.read_file("/a") == noise(MIB // 2)
        await vol.mkdir("/d")  # root, a, b (empty after the refused commit), d
        with pytest.raises(NoSpace):
            await vol.mkdir("/e")
        await vol.remove("/b")
        await vol.mkdir("/e")
    # Another open of the volume finds the quotas; 0 lifts them.
    async with open_volume(redis_server.url, volume=name) as vol:
        st = await vol.statfs()
        assert (st.quota_bytes, st.quota_inodes) == (MIB, 4)
        await vol.inodes.capacity.set_quota(bytes_=0, inodes=0)
        st = await vol.statfs()
        assert (st.quota_bytes, st.quota_inodes) == (0, 0)
        assert st.bytes_total > MIB
        await vol.write_file("/b", noise(MIB))
    report = await fsck(raw, name)
    assert report.ok, str(report)


async def test_an_existing_volume_opens_on_a_full_redis_and_a_new_one_does_not(
    small_redis,  # type: ignore[no-untyped-def]
) -> None:
    name = f"t-{secrets.token_hex(4)}"
    async with open_volume(small_redis.url, volume=name, write_buffer_bytes=MIB) as vol:
        written, acknowledged = await _fill(vol, "/big")
    # Mounting an existing volume on a full Redis works, so files can be read and deleted.
    async with open_volume(small_redis.url, volume=name) as vol:
        assert await vol.read_file("/big") == written[:acknowledged]
    await make_full(small_redis.url)
    with pytest.raises(NoSpace, match="out of memory"):
        async with open_volume(small_redis.url, volume=f"new-{name}"):
            pass
