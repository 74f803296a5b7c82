"""``rediss+cluster://``: a volume on a 3-master Redis Cluster that speaks only TLS.

Every node listens on TLS alone (``--port 0``), requires client certificates,
and talks TLS on the cluster bus (``--tls-cluster yes``) and to replicas
(``--tls-replication yes``); the cluster is created by ``redis-cli --tls``
as the README's plain recipe does. Shortcuts: one volume; a file of 24
objects, so every master holds some.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from redisfuse.backend import RedisOptions, open_volume
from redisfuse.backend.fsck import fsck
from tests.cluster_redis import RedisClusterInfo, start_cluster

from .certs import TlsFiles, make_tls_files
from .cli import redisfuse
from .servers import Proc, Servers, tls_server_args


def _tls_node(servers: Servers, files: TlsFiles) -> Callable[..., Proc]:
    def start(*args: str) -> Proc:
        return servers.start(*args, *tls_server_args(files), "--tls-cluster", "yes", tls_port=True)

    return start


def _tls_cluster(servers: Servers, files: TlsFiles) -> RedisClusterInfo:
    cli = ("--tls", "--cacert", str(files.ca), "--cert", str(files.client_cert),
           "--key", str(files.client_key))  # fmt: skip
    return start_cluster(_tls_node(servers, files), tls_args=cli)


async def test_a_volume_on_a_tls_only_cluster(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, volume_name: str
) -> None:
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    cluster = _tls_cluster(servers, files)
    assert cluster.url.startswith("rediss+cluster://")
    options = RedisOptions(
        url=cluster.url,
        tls_ca=str(files.ca),
        tls_cert=str(files.client_cert),
        tls_key=str(files.client_key),
    )
    data = os.urandom(24 * 65536)
    async with open_volume(volume=volume_name, options=options) as vol:
        await vol.write_file("/f", data)
        assert await vol.read_file("/f") == data
        report = await fsck(vol.inodes.ctx.client, volume_name)
        assert report.ok and report.objects == 24, str(report)
    per_master = [
        int(cluster.node_cli(port, "dbsize")) for port in cluster.masters()
    ]  # objects spread: every master holds some of the volume's keys
    assert len(per_master) == 3 and all(n > 0 for n in per_master), per_master
    tls = ["--redis-tls-ca", str(files.ca), "--redis-tls-cert", str(files.client_cert),
           "--redis-tls-key", str(files.client_key)]  # fmt: skip
    for command in ("status", "fsck"):
        done = redisfuse(command, "--redis-url", cluster.url, "--volume", volume_name, *tls)
        assert done.returncode == 0, f"{command}: {done.stderr}"
