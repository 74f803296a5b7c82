"""A volume on a real 3-master Redis Cluster: what only a cluster shows.

The backend's core suites (namespace, data) also run on the cluster (see
conftest.py's ``ALSO_ON_CLUSTER``); this module checks the cluster specifics:
the object layout recorded in ``setting``, objects spread over all masters,
fsck/gc scanning every master, and a resharding under a writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from redisfuse.backend import Volume, open_volume
from redisfuse.backend.connect import RedisOptions, make_client
from redisfuse.backend.events import EntryChanged, Resync
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import SPREAD, Keys
from tests.caching import stop
from tests.cluster_redis import RedisClusterInfo

MIB = 1024 * 1024


@pytest_asyncio.fixture
async def cluster_client(redis_cluster: RedisClusterInfo) -> AsyncIterator[Redis]:
    client = make_client(RedisOptions(url=redis_cluster.url))
    yield client
    await client.aclose()


async def _objects_per_master(redis_cluster: RedisClusterInfo, keys: Keys) -> Counter[int]:
    counts: Counter[int] = Counter()
    for port in redis_cluster.ports:
        node = Redis(host=redis_cluster.host, port=port)
        try:
            async for _ in node.scan_iter(match=keys.object_pattern, count=1000):
                counts[port] += 1
        finally:
            await node.aclose()
    return counts


async def test_objects_of_a_64_mib_file_are_spread_over_all_masters(
    redis_cluster: RedisClusterInfo, volume_name: str, cluster_client: Redis
) -> None:
    data = os.urandom(64 * MIB)  # incompressible: one object per 64 KiB block
    async with open_volume(redis_cluster.url, volume=volume_name) as vol:
        await vol.write_file("/big", data)
        assert await vol.read_file("/big") == data
    assert await cluster_client.hget(Keys(volume_name).setting, "objects") == SPREAD.encode()
    counts = await _objects_per_master(redis_cluster, Keys(volume_name, SPREAD))
    assert sum(counts.values()) == 1024
    assert len(counts) == 3, counts
    assert max(counts.values()) <= 512, counts
    report = await fsck(cluster_client, volume_name)
    assert report.ok, str(report)
    assert report.objects == 1024


async def test_gc_and_fsck_repair_reach_every_master(
    redis_cluster: RedisClusterInfo, volume_name: str, cluster_client: Redis
) -> None:
    """Replaced objects are purged and leaked ones found, wherever they live."""
    keys = Keys(volume_name, SPREAD)
    async with open_volume(redis_cluster.url, volume=volume_name) as vol:
        await vol.write_file("/f", os.urandom(20 * 65536))
        await vol.write_file("/f", os.urandom(20 * 65536))  # 20 objects to the trash
        await vol.remove("/f")  # 20 more to reclaim
        assert await vol.inodes.gc(grace_ms=0) == 20
    assert sum((await _objects_per_master(redis_cluster, keys)).values()) == 0
    await cluster_client.set(keys.obj(10**9), b"\x00leaked")  # a writer died before its commit
    report = await fsck(cluster_client, volume_name)
    assert report.leaked_objects == [10**9]
    await fsck(cluster_client, volume_name, repair=True, min_idle=0)
    assert (await fsck(cluster_client, volume_name)).ok


async def test_resharding_under_a_writer_keeps_the_file_intact(
    redis_cluster: RedisClusterInfo, volume_name: str, cluster_client: Redis
) -> None:
    """A third of the slots move while a file is written: MOVED and
    ASK are followed, and the file and fsck come out clean."""
    keys = Keys(volume_name)
    cluster = RedisCluster.from_url(f"redis://{redis_cluster.nodes[0]}")
    try:
        await cluster.initialize()
        source = cluster.get_node_from_key(keys.setting)
        assert source is not None
        target = next(p for p in redis_cluster.ports if p != int(source.port))
        ids = {
            port: redis_cluster.node_cli(port, "cluster", "myid").strip()
            for port in redis_cluster.ports
        }
    finally:
        await cluster.aclose()
    chunk = os.urandom(MIB)
    async with open_volume(redis_cluster.url, volume=volume_name) as vol:
        f = await vol.open("/f", "wb")
        reshard = asyncio.create_task(
            asyncio.to_thread(
                redis_cluster.cli,
                "--cluster", "reshard", redis_cluster.nodes[0],
                "--cluster-from", ids[int(source.port)],
                "--cluster-to", ids[target],
                "--cluster-slots", "100",
                "--cluster-yes",
                timeout=120,
            )
        )  # fmt: skip
        written = 0
        while not reshard.done() or written < 24:
            await f.write(chunk)
            await f.flush()
            written += 1
        await reshard
        await f.close()
        assert await vol.read_file("/f") == chunk * written
    report = await fsck(cluster_client, volume_name)
    assert report.ok, str(report)


async def test_a_command_waits_out_the_masters_of_a_moving_slot_redirecting_to_each_other(
    redis_cluster: RedisClusterInfo, volume_name: str, cluster_client: Redis
) -> None:
    """At the end of a move the source has handed the volume's slot over, and the
    target is not told yet that it owns it: each answers MOVED to the other, and
    redis-py gives up after 16 redirections ("TTL exhausted"). A command waits
    that moment out (it failed with EIO at once; so did the announcement of an
    event listener that had just followed the slot, which ended the listener)."""
    keys = Keys(volume_name)
    slot = int(redis_cluster.node_cli(redis_cluster.ports[0], "cluster", "keyslot", keys.setting))
    async with open_volume(redis_cluster.url, volume=volume_name) as vol:
        await vol.write_file("/f", b"data")
        source = redis_cluster.master_of(keys.setting)
        target = next(p for p in redis_cluster.ports if p != source)
        others = tuple(p for p in redis_cluster.ports if p != source)
        await asyncio.to_thread(redis_cluster.move_slot, slot, source, target, (source,))
        retried = vol.inodes.sessions.retries()
        read = asyncio.create_task(vol.read_file("/f"))
        while vol.inodes.sessions.retries() == retried:  # until it meets the loop
            assert not read.done(), read.exception()  # (it failed at once: EIO)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(redis_cluster.tell_owner, slot, target, others)
        assert await read == b"data"
    assert (await fsck(cluster_client, volume_name)).ok


async def test_change_events_follow_the_volume_slot_to_another_master(
    redis_cluster: RedisClusterInfo, volume_name: str, cluster_client: Redis
) -> None:
    """Another node hears a change (sharded pub/sub), and still does after the
    volume's slot moved to another master (the subscription follows it)."""
    keys = Keys(volume_name)
    slot = int(redis_cluster.node_cli(redis_cluster.ports[0], "cluster", "keyslot", keys.setting))
    heard: list[Any] = []
    listening = [asyncio.Event(), asyncio.Event()]

    async def listen(vol: Volume, k: int) -> None:
        async with contextlib.aclosing(vol.inodes.events()) as stream:  # type: ignore[type-var]
            async for event in stream:
                listening[k].set()
                if k == 1:
                    heard.append(event)

    async def hears(name: bytes) -> None:
        deadline = time.monotonic() + 10
        while EntryChanged(1, name) not in heard:
            assert time.monotonic() < deadline, heard
            await asyncio.sleep(0.02)

    async with (
        open_volume(redis_cluster.url, volume=volume_name) as a,
        open_volume(redis_cluster.url, volume=volume_name) as b,
    ):
        # Both listen, as mounts do: that is how ``a`` learns that ``b`` joined.
        tasks = [asyncio.create_task(listen(v, k)) for k, v in enumerate((a, b))]
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in listening)), 10)
            await a.write_file("/before", b"1")
            await hears(b"before")
            owner = next(  # the master holding the volume's keys
                p
                for p in redis_cluster.ports
                if int(redis_cluster.node_cli(p, "cluster", "countkeysinslot", str(slot))) > 0
            )
            target = next(p for p in redis_cluster.ports if p != owner)
            await asyncio.to_thread(redis_cluster.move_slot, slot, owner, target)
            # b subscribes anew at the slot's new master (yielding Resync: what
            # was sent in between is lost); from then on it hears a's changes.
            # A slot map read mid-move can send the subscription to the old
            # master (answered MOVED: followed again), one Redis dropped during
            # the move is found by the once-a-quiet-second check, and the
            # announcement of the new subscription can meet the two masters
            # redirecting to each other (retried until the target is told).
            deadline = time.monotonic() + 30
            n = 0
            while not any(
                isinstance(e, EntryChanged) and e.name.startswith(b"after") for e in heard
            ):
                assert time.monotonic() < deadline, heard
                for task in tasks:  # (a listener that ended: its error, not a silence)
                    assert not task.done(), task.exception()
                n += 1
                await a.write_file(f"/after{n}", b"2")
                await asyncio.sleep(0.1)
            assert heard.count(Resync()) >= 2, heard
        finally:
            for task in tasks:
                await stop(task)
    assert (await fsck(cluster_client, volume_name)).ok


async def test_a_subscription_made_at_a_master_without_the_slot_follows_the_slot(
    redis_cluster: RedisClusterInfo, volume_name: str
) -> None:
    """A slot map read while the volume's slot was moving can name the old master;
    SSUBSCRIBE there is answered MOVED. The listener must follow the slot, not die
    (it did: the MovedError escaped and the node heard no more changes)."""
    heard: list[Any] = []
    started = asyncio.Event()

    async def listen(vol: Volume) -> None:
        async with contextlib.aclosing(vol.inodes.events()) as stream:  # type: ignore[type-var]
            async for event in stream:
                started.set()
                heard.append(event)

    async with (
        open_volume(redis_cluster.url, volume=volume_name) as a,
        open_volume(redis_cluster.url, volume=volume_name) as b,
    ):
        client = b.inodes.ctx.client
        assert isinstance(client, RedisCluster)
        channel = b.inodes.keys.events_for(b.inodes.ctx.session)
        slot = client.keyslot(channel)
        right = client.nodes_manager.slots_cache[slot][0]
        wrong = next(n for n in client.get_primaries() if n.name != right.name)
        client.nodes_manager.slots_cache[slot] = [wrong]  # as if read mid-move
        listener = asyncio.create_task(listen(b))
        other = asyncio.create_task(listen(a))  # a learns of b from b's announcement
        try:
            await asyncio.wait_for(started.wait(), 10)
            deadline = time.monotonic() + 10
            n = 0
            while not any(isinstance(e, EntryChanged) for e in heard):
                assert not listener.done(), listener.exception()
                assert time.monotonic() < deadline, heard
                n += 1
                await a.write_file(f"/f{n}", b"x")
                await asyncio.sleep(0.1)
        finally:
            for task in (listener, other):
                await stop(task)
