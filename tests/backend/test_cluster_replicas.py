"""``--replicas`` on a Redis Cluster: fsync and close wait for the replicas of every master.

A cluster of its own: 3 masters with a replica each. A file's objects are
spread over all masters, so the replica that matters can belong to any of
them, not only to the master of the volume's metadata. SIGSTOP freezes one
replica of a master that holds only objects: fsync must then fail with EIO
and the log line, and succeed again once the replica runs. Shortcut: the
replica is frozen, not partitioned (both stop its acknowledgements).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal
import time

import pytest
from redis import Redis

from redisfuse.backend import FSError, RedisOptions, open_volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys
from redisfuse.backend.stats import snapshot
from tests.backend.test_cluster_failover import DEADLINE_S, write_through_two_kills
from tests.cluster_redis import RedisClusterInfo, start_cluster

BLOCK = 65536


def _pid(cluster: RedisClusterInfo, port: int) -> int:
    info = cluster.node_cli(port, "info", "server")
    return int(re.search(r"process_id:(\d+)", info)[1])  # type: ignore[index]


async def test_fsync_waits_for_the_replicas_of_every_master(  # type: ignore[no-untyped-def]
    redis_factory, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = start_cluster(redis_factory, replicas=1)
    keys = Keys(volume_name)
    meta = cluster.master_of(keys.setting)
    objects_only = next(p for p in cluster.masters() if p != meta)
    (frozen,) = cluster.replicas_of(objects_only)
    options = RedisOptions(url=cluster.url, replicas=1, replica_timeout=0.5)
    first, second = os.urandom(24 * BLOCK), os.urandom(24 * BLOCK)
    async with open_volume(volume=volume_name, options=options) as vol:
        async with await vol.open("/first", "wb") as f:
            await f.write(first)
            await f.flush()  # every replica runs: reached
        pid = _pid(cluster, frozen)
        os.kill(pid, signal.SIGSTOP)
        try:
            f = await vol.open("/second", "wb")
            await f.write(second)  # 24 objects: some on every master
            with caplog.at_level(logging.WARNING), pytest.raises(FSError) as caught:
                await f.flush()
            assert caught.value.errno == errno.EIO
            assert "reached 0 of 1 replicas within 0.5 s" in caplog.text
        finally:
            os.kill(pid, signal.SIGCONT)
        await f.flush()  # the replica caught up: the same writes are confirmed now
        await f.close()
        wait = vol.inodes.replica_wait
        assert wait is not None and wait.failures == 1
        state = snapshot(vol.inodes)  # what --metrics exports
        assert state.replica_failures == 1 and state.replica_waits >= 3
        assert await vol.read_file("/first") == first
        assert await vol.read_file("/second") == second
        report = await fsck(vol.inodes.ctx.client, volume_name)
        assert report.ok and report.objects == 48, str(report)


async def test_acknowledged_files_survive_killing_masters(redis_factory, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    """With two replicas per master and ``--replicas 1``, the metadata master and
    then an objects-only master are SIGKILLed under a writer that closes each
    file: it goes on, every close confirmed by a replica (no EIO: one replica
    is left after each promotion), and every file it saw closed is intact."""
    cluster = start_cluster(redis_factory, replicas=2, node_timeout_ms=1000)
    options = RedisOptions(url=cluster.url, replicas=1, retry_deadline=DEADLINE_S)
    keys = Keys(volume_name)
    async with open_volume(volume=volume_name, options=options) as vol:
        writer, _, _ = await write_through_two_kills(cluster, vol, keys)
        wait = vol.inodes.replica_wait
        assert wait is not None and wait.waits >= len(writer.acked) and wait.failures == 0
    async with open_volume(volume=volume_name, options=RedisOptions(url=cluster.url)) as fresh:
        for path, data in writer.acked.items():
            assert await fresh.read_file(path) == data, path
        report = await fsck(fresh.inodes.ctx.client, volume_name)
        assert report.ok, str(report)


REPLICATION_USER = (
    "--masteruser", "repl", "--masterauth", "repl-pw",
    "--user", "repl", "on", ">repl-pw", "+psync", "+replconf", "+ping", "+sync",
)  # fmt: skip
"""Replicas sync as an ACL user of their own, which a test can switch off at one master."""


def _cut_replication(cluster: RedisClusterInfo, port: int) -> None:
    """Stop the master at ``port`` replicating: its replicas' user off, their links cut
    (freezing a replica would not do: the kernel still takes the stream for it)."""
    with Redis(port=port, decode_responses=True) as master:
        master.acl_setuser("repl", enabled=False)
        master.client_kill_filter(_type="replica")
        while master.info("replication")["connected_slaves"]:
            time.sleep(0.01)


async def test_objects_a_dead_master_took_along_are_never_named(  # type: ignore[no-untyped-def]
    redis_factory, volume_name: str
) -> None:
    """A master that acknowledged a file's objects dies before any replica has them.
    The commit must not name them: with ``--replicas`` its objects wait for a replica
    first, so the file's flush goes on at the promoted replica (objects stored
    again) and the file is whole; the old order (commit, then a barrier that ran
    at the promoted replica) left a block map naming objects that were gone."""
    cluster = start_cluster(
        lambda *args: redis_factory(*args, *REPLICATION_USER), replicas=2, node_timeout_ms=1000
    )
    keys = Keys(volume_name)
    options = RedisOptions(url=cluster.url, replicas=1, retry_deadline=30.0)
    data = os.urandom(24 * BLOCK)
    async with open_volume(volume=volume_name, options=options) as vol:
        await vol.write_file("/before", b"x")  # the volume exists; every master is in use
        meta = cluster.master_of(keys.setting)
        doomed = next(p for p in cluster.masters() if p != meta)
        f = await vol.open("/f", "wb")
        await f.write(data)  # buffered: nothing is stored yet
        _cut_replication(cluster, doomed)
        flush = asyncio.create_task(f.flush())
        await asyncio.sleep(0.5)  # its objects are on the doomed master, no replica has them
        cluster.kill(doomed)
        await asyncio.wait_for(flush, 30)
        await f.close()
        assert doomed not in cluster.masters()
        assert await vol.read_file("/f") == data
    async with open_volume(volume=volume_name, options=RedisOptions(url=cluster.url)) as fresh:
        assert await fresh.read_file("/f") == data
        report = await fsck(fresh.inodes.ctx.client, volume_name)
        assert report.ok, str(report)
