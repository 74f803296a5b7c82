"""A master of a Redis Cluster is SIGKILLed under a writer; its replica takes over.

A cluster of its own for this test: 3 masters with a replica each
(``--cluster-replicas 1``), ``cluster-node-timeout`` 1 s. The writer writes
files of three 64 KiB blocks (objects spread over the masters) and closes
each: **acknowledged** means close returned (flush, then the handle's end).
First the master holding the volume's metadata slot is SIGKILLed, then a
master holding only objects; each time the writer must go on within the
retry deadline with no error reaching it, and afterwards every acknowledged
file must read back intact (also through a fresh client) and fsck be clean.

Without ``--replicas`` a write the master acknowledged may not have reached
its replica when the master dies (README); on one host the replication
stream leaves in the same event-loop turn as the reply, so here it always
had. Shortcut: the writer is one coroutine; files are small.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from redisfuse.backend import RedisOptions, Volume, open_volume
from redisfuse.backend.connect import retry_stats
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys
from tests.cluster_redis import RedisClusterInfo, start_cluster

BLOCK = 65536
PER_PHASE = 8
"""Files acknowledged before the first kill, and after each kill."""
DEADLINE_S = 30.0


@dataclass
class Writer:
    """Writes /f0, /f1, ... and remembers each file whose close returned."""

    vol: Volume
    acked: dict[str, bytes] = field(default_factory=dict)
    stop: bool = False

    async def run(self) -> None:
        i = 0
        while not self.stop:
            data = os.urandom(3 * BLOCK)
            f = await self.vol.open(f"/f{i}", "wb")
            await f.write(data)
            await f.close()  # an FSError here fails the test: nothing may reach the writer
            self.acked[f"/f{i}"] = data
            i += 1

    async def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"the writer stalled at {len(self.acked)} files"
            await asyncio.sleep(0.02)


async def kill_and_go_on(
    cluster: RedisClusterInfo, port: int, writer: Writer, task: asyncio.Task[None]
) -> float:
    """SIGKILL the master at ``port``; return how long until PER_PHASE more files were acked."""
    before = len(writer.acked)
    cluster.kill(port)
    killed = time.monotonic()
    await asyncio.wait([task, asyncio.create_task(writer.wait_for(before + PER_PHASE))],
                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    if task.done():
        task.result()  # the writer's error
    assert len(writer.acked) >= before + PER_PHASE
    assert port not in cluster.masters()
    return time.monotonic() - killed


async def write_through_two_kills(
    cluster: RedisClusterInfo, vol: Volume, keys: Keys
) -> tuple[Writer, float, float]:
    """Run a writer while first the metadata master, then an objects-only master
    is SIGKILLed; return it (stopped) and how long it took to go on after each."""
    writer = Writer(vol)
    task = asyncio.create_task(writer.run())
    try:
        await writer.wait_for(PER_PHASE)
        meta = cluster.master_of(keys.setting)
        took_meta = await kill_and_go_on(cluster, meta, writer, task)
        # A master with only objects of this volume, and still a replica to promote.
        new_meta = cluster.master_of(keys.setting)
        objects_only = next(p for p in cluster.masters() if p not in (meta, new_meta))
        took_objects = await kill_and_go_on(cluster, objects_only, writer, task)
        writer.stop = True
        await asyncio.wait_for(task, DEADLINE_S)  # ends after its file (no leaked objects)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return writer, took_meta, took_objects


async def test_the_writer_goes_on_after_a_master_failover(redis_factory, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    cluster = start_cluster(redis_factory, replicas=1, node_timeout_ms=1000)
    options = RedisOptions(url=cluster.url, retry_deadline=DEADLINE_S)
    keys = Keys(volume_name)
    async with open_volume(volume=volume_name, options=options) as vol:
        writer, took_meta, took_objects = await write_through_two_kills(cluster, vol, keys)
        stats = retry_stats(vol.inodes.ctx.client)
        assert stats is not None
        for path, data in writer.acked.items():
            assert await vol.read_file(path) == data, path
    async with open_volume(volume=volume_name, options=RedisOptions(url=cluster.url)) as fresh:
        for path, data in writer.acked.items():
            assert await fresh.read_file(path) == data, path
        report = await fsck(fresh.inodes.ctx.client, volume_name)
        assert report.ok, str(report)
    print(  # noqa: T201
        f"{PER_PHASE} files after killing the metadata master took {took_meta:.1f} s, "
        f"after killing an objects-only master {took_objects:.1f} s; {stats}"
    )
