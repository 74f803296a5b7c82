"""A Redis that may drop the volume's keys: eviction policies, and a volume that vanishes.

An ``allkeys-*`` maxmemory-policy is refused at open in one line; one set
while a volume is open stops its writes (EROFS) until it is safe again. A
volume whose keys are deleted under an open volume (FLUSHALL) fails every
request with EIO, says why in one ERROR line, has nothing of it written again
by the housekeeping, and resumes when the same volume is loaded back from its
dump. Each test that changes a server's configuration or flushes it owns that
redis-server (``redis_factory``); the cluster test restores the one master it
changes. Shortcuts: housekeeping runs every 50 ms, and waits poll with a
deadline.
"""

from __future__ import annotations

import errno
import io
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
from redis.asyncio import Redis

from redisfuse.backend import (
    FSError,
    ReadOnly,
    UnsafeRedis,
    Volume,
    VolumeGone,
    open_volume,
)
from redisfuse.backend.dump import dump_volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.load import load_volume, read_header
from redisfuse.backend.streams import AsyncReader, AsyncWriter
from tests.cluster_redis import start_cluster

EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")
SAFE = ("noeviction", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl")
HOUSEKEEPING_S = 0.05
WAIT_S = 10.0


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it is true, failing after WAIT_S seconds."""
    with anyio.fail_after(WAIT_S):
        while True:
            if await check():
                return
            await anyio.sleep(0.02)


async def raises(call: Callable[[], Awaitable[object]], kind: type[FSError]) -> bool:
    try:
        await call()
    except kind:
        return True
    except FSError:
        return False
    return False


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every WARNING or worse logged so far, as messages."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
async def raw_of() -> AsyncIterator[Callable[[str], Redis]]:
    """Clients for the servers a test starts, closed at its end."""
    clients: list[Redis] = []

    def make(url: str) -> Redis:
        clients.append(Redis.from_url(url))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


# -- eviction policies -----------------------------------------------------------------


async def test_policies_that_evict_keys_without_a_ttl_are_refused_at_open(  # type: ignore[no-untyped-def]
    redis_factory, raw_of
) -> None:
    server = redis_factory("--maxmemory", "64mb")
    raw = raw_of(server.url)
    name = f"t-{secrets.token_hex(4)}"
    for policy in EVICTING:
        await raw.config_set("maxmemory-policy", policy)
        for read_only in (False, True):
            with pytest.raises(UnsafeRedis) as caught:
                async with open_volume(server.url, volume=name, read_only=read_only):
                    pass
            message = str(caught.value.strerror)
            assert caught.value.errno == errno.EIO
            assert f"Redis at {server.url} has maxmemory-policy {policy}" in message
            assert "CONFIG SET maxmemory-policy noeviction" in message
            assert "\n" not in message
        assert await raw.dbsize() == 0  # refused before formatting anything
    for policy in SAFE:
        await raw.config_set("maxmemory-policy", policy)
        async with open_volume(server.url, volume=name) as vol:
            await vol.write_file(f"/{policy}", policy.encode())
    assert (await fsck(raw, name)).ok


async def test_a_policy_switched_to_evicting_stops_writes_until_it_is_safe_again(  # type: ignore[no-untyped-def]
    redis_factory, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "noeviction")
    raw = raw_of(server.url)
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with open_volume(server.url, volume=name) as vol, anyio.create_task_group() as tasks:
        tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
        await vol.write_file("/before", b"kept")
        f = await vol.open("/open", "wb")
        await f.write(b"buffered before the switch")

        await raw.config_set("maxmemory-policy", "allkeys-lru")
        # Noticed by the housekeeping's reading (at most a second old), without a df.
        await eventually(lambda: raises(lambda: vol.chmod("/before", 0o644), ReadOnly))
        for change in (
            lambda: vol.write_file("/after", b"no"),
            lambda: vol.rename("/before", "/renamed"),
            lambda: vol.remove("/before"),
            lambda: vol.chmod("/before", 0o600),
            f.flush,  # the buffered write is not committed either; it stays buffered
        ):
            with pytest.raises(ReadOnly) as caught:
                await change()
            assert caught.value.errno == errno.EROFS
            assert "maxmemory-policy allkeys-lru" in str(caught.value.strerror)
        assert await vol.read_file("/before") == b"kept"  # reading goes on
        assert await vol.listdir("/") == ["before", "open"]
        assert problems(caplog) == [
            f"maxmemory-policy of Redis at {server.url} changed from noeviction to "
            "allkeys-lru, which deletes keys without a TTL (the volume's) when memory runs "
            "short: writes fail with EROFS until it is safe again (CONFIG SET "
            "maxmemory-policy noeviction)"
        ]

        await raw.config_set("maxmemory-policy", "volatile-lru")
        await eventually(lambda: _ok(vol))
        await f.close()  # commits what stayed buffered
        assert await vol.read_file("/open") == b"buffered before the switch"
        assert len(problems(caplog)) == 1
        assert f"maxmemory-policy of {server.url} is safe again (volatile-lru)" in caplog.text
        tasks.cancel_scope.cancel()
    assert (await fsck(raw, name)).ok


async def _ok(vol: Volume) -> bool:
    try:
        await vol.makedirs("/d", exist_ok=True)
    except ReadOnly:
        return False
    return True


async def test_a_cluster_with_one_evicting_master_is_refused_and_watched(  # type: ignore[no-untyped-def]
    redis_cluster, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    """The policy of every master counts: the volume's objects go to all of them."""
    port = redis_cluster.ports[1]
    node = raw_of(f"redis://{redis_cluster.host}:{port}/0")
    before = (await node.config_get("maxmemory-policy"))["maxmemory-policy"]
    assert before == "noeviction"
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    try:
        await node.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(UnsafeRedis) as caught:
            async with open_volume(redis_cluster.url, volume=name):
                pass
        message = str(caught.value.strerror)
        assert f"master {redis_cluster.host}:{port} of Redis at {redis_cluster.url}" in message
        assert "maxmemory-policy allkeys-lru" in message

        await node.config_set("maxmemory-policy", "noeviction")
        async with open_volume(redis_cluster.url, volume=name) as vol:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
                await vol.write_file("/a", b"a")
                await node.config_set("maxmemory-policy", "allkeys-lfu")
                await eventually(lambda: raises(lambda: vol.write_file("/b", b"b"), ReadOnly))
                assert await vol.read_file("/a") == b"a"
                await node.config_set("maxmemory-policy", "noeviction")
                await eventually(lambda: _ok(vol))
                tasks.cancel_scope.cancel()
            assert (await fsck(vol.inodes.ctx.client, name)).ok
    finally:
        await node.config_set("maxmemory-policy", before)
    errors = problems(caplog)
    assert len(errors) == 1 and f"master {redis_cluster.host}:{port} of Redis" in errors[0]


# -- a volume that vanishes ------------------------------------------------------------


async def _dump(vol: Volume) -> bytes:
    buf = io.BytesIO()
    await dump_volume(vol.inodes.ctx, AsyncWriter(buf))
    return buf.getvalue()


async def _load(url: str, name: str, data: bytes) -> None:
    """``redisfuse load`` of ``data`` into ``name``, in-process."""
    src = AsyncReader(io.BytesIO(data))
    header = await read_header(src)
    async with open_volume(url, volume=name, codec=header.codec) as target:
        await load_volume(target.inodes.ctx, src, header.block_size, uuid=header.uuid)


async def test_a_flushed_volume_fails_every_request_writes_nothing_and_comes_back(  # type: ignore[no-untyped-def]
    redis_factory, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_factory()
    raw = raw_of(server.url)
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with (
        open_volume(server.url, volume=name, session_timeout=0.5) as vol,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
        await vol.write_file("/f", b"kept")
        handle = await vol.open("/f", "rb")
        data = await _dump(vol)

        await raw.flushall()
        await eventually(lambda: raises(lambda: vol.stat("/f"), VolumeGone))
        for request in (
            lambda: vol.stat("/"),
            lambda: vol.listdir("/"),
            lambda: vol.read_file("/f"),
            lambda: handle.read(),
            lambda: vol.write_file("/g", b"g"),
            lambda: vol.mkdir("/d"),
            vol.statfs,
        ):
            with pytest.raises(VolumeGone) as caught:
                await request()
            assert caught.value.errno == errno.EIO
        # Many housekeeping rounds, past the session timeout: nothing is recreated.
        await anyio.sleep(1.0)
        assert await raw.dbsize() == 0
        assert problems(caplog) == [
            f"volume {name!r} no longer exists in Redis at {server.url}: its keys were deleted "
            "(FLUSHALL/FLUSHDB?) or the server was replaced by an empty one; every request "
            "fails with EIO until the volume is back (redisfuse load of its dump), and "
            "nothing of it is written meanwhile"
        ]
        assert "declared dead" not in caplog.text

        # Another volume of that name is not this one: still gone.
        async with open_volume(server.url, volume=name):
            pass
        await anyio.sleep(0.3)
        assert await raises(lambda: vol.stat("/f"), VolumeGone)
        await raw.flushall()

        await _load(server.url, name, data)  # the same volume, restored from its dump
        await eventually(lambda: _reads(vol, "/f", b"kept"))
        assert "is back in Redis" in caplog.text
        with pytest.raises(FSError) as caught:
            await handle.read()  # opened in the session of before
        assert caught.value.errno == errno.EIO
        await vol.write_file("/after", b"writable again")
        assert len(problems(caplog)) == 1
        tasks.cancel_scope.cancel()
    assert (await fsck(raw, name)).ok


async def test_a_flushed_volume_whose_keys_come_back_resumes(  # type: ignore[no-untyped-def]
    redis_factory, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    """Its keys restored as Redis' own persistence brings them back (here DUMP and
    RESTORE of every key): the same uuid, and the mount goes on in a new session."""
    server = redis_factory()
    raw = raw_of(server.url)
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with (
        open_volume(server.url, volume=name, session_timeout=0.5) as vol,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
        await vol.write_file("/f", b"kept")
        first = vol.inodes.ctx.session
        saved = {key: await raw.dump(key) for key in await raw.keys("*")}
        await raw.flushall()
        await eventually(lambda: raises(lambda: vol.stat("/f"), VolumeGone))
        for key, value in saved.items():
            await raw.restore(key, 0, value)
        await eventually(lambda: _reads(vol, "/f", b"kept"))
        await vol.write_file("/g", b"g")
        assert vol.inodes.ctx.session != first
        assert "is back in Redis" in caplog.text and len(problems(caplog)) == 1
        tasks.cancel_scope.cancel()
    assert (await fsck(raw, name)).ok


async def _reads(vol: Volume, path: str, expected: bytes) -> bool:
    try:
        return await vol.read_file(path) == expected
    except FSError:
        return False


async def test_a_volume_declared_dead_elsewhere_is_not_taken_for_vanished(  # type: ignore[no-untyped-def]
    redis_factory, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    """The housekeeping's one read of the setting key tells the two apart."""
    server = redis_factory()
    raw = raw_of(server.url)
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with open_volume(server.url, volume=name) as vol, anyio.create_task_group() as tasks:
        first = vol.inodes.ctx.session
        await raw.zrem(vol.inodes.keys.sessions, str(first))  # what a reclaim does first
        tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
        await eventually(lambda: _session_changed(vol, first))
        await vol.write_file("/f", b"f")
        tasks.cancel_scope.cancel()
    assert "declared dead" in caplog.text and "no longer exists" not in caplog.text


async def _session_changed(vol: Volume, first: int) -> bool:
    return vol.inodes.ctx.session != first


async def _follow(vol: Volume) -> None:
    """Listen to the change events, as a mount does (it turns the metadata cache on)."""
    async for _ in vol.inodes.events():
        pass


async def test_a_volume_flushed_from_a_cluster_is_recognised_and_left_alone(  # type: ignore[no-untyped-def]
    redis_factory, raw_of, caplog: pytest.LogCaptureFixture
) -> None:
    """On a cluster the slot of a vanished volume is empty but has not moved: the event
    listener stays where it is, and nothing is written to any master."""
    cluster = start_cluster(redis_factory)
    masters = [raw_of(f"redis://{cluster.host}:{port}/0") for port in cluster.ports]
    name = f"t-{secrets.token_hex(4)}"
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with (
        open_volume(cluster.url, volume=name, session_timeout=0.5) as vol,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(vol.inodes.maintain, HOUSEKEEPING_S)
        tasks.start_soon(_follow, vol)
        await vol.write_file("/f", bytes(range(256)) * 2000)  # objects on several masters
        assert sum([await m.dbsize() for m in masters]) > 5
        for master in masters:
            await master.flushall()
        await eventually(lambda: raises(lambda: vol.stat("/f"), VolumeGone))
        await anyio.sleep(2.0)  # past the session timeout and the listener's quiet-second check
        assert [await m.dbsize() for m in masters] == [0] * len(masters)
        errors = problems(caplog)
        assert len(errors) == 1 and errors[0].startswith(f"volume {name!r} no longer exists")
        assert "slot moved" not in caplog.text
        tasks.cancel_scope.cancel()
