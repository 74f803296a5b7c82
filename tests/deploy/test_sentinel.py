"""Sentinel: a volume follows a failover, and --replicas keeps acknowledged writes.

A master, two replicas and three sentinels (quorum 2, down-after 1 s) on free
ports. Two replicas, not one: with --replicas 1 a writer after the failover
needs a replica left over besides the one promoted. The writer appends a
record and fsyncs (flush) each time; the master is SIGKILLed under it, and
afterwards every record it saw acknowledged, before and after, must be there.
Shortcut: backend level (no mount); records are small.
"""

from __future__ import annotations

import errno
import logging
import signal
import time

import pytest

from redisfuse.backend import FSError, RedisOptions, open_volume
from redisfuse.backend.connect import retry_stats
from redisfuse.backend.fsck import fsck
from redisfuse.backend.stats import snapshot

from .certs import make_tls_files
from .cli import redisfuse
from .servers import SentinelGroup, Servers, master_port, start_sentinel_group

RECORD = 64
BEFORE, AFTER = 20, 20


def _record(i: int) -> bytes:
    return f"{i:08d}".encode().ljust(RECORD, b".")


async def test_acknowledged_writes_survive_a_failover(servers: Servers, volume_name: str) -> None:
    group = start_sentinel_group(servers)
    options = RedisOptions(url=group.url, replicas=1, replica_timeout=10.0, retry_deadline=30.0)
    acked = 0
    async with open_volume(volume=volume_name, options=options) as vol:
        async with await vol.open("/log", "wb") as f:
            for i in range(BEFORE):
                await f.write(_record(i))
                await f.flush()
                acked += 1
            old = group.master.port
            group.master.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            while acked < BEFORE + AFTER:
                await f.write(_record(acked))
                await f.flush()  # retried through the failover, then WAITs for a replica
                acked += 1
            took = time.monotonic() - killed
            assert master_port(group) != old
        wait = vol.inodes.replica_wait
        assert wait is not None and wait.waits >= BEFORE + AFTER and wait.failures == 0
        stats = retry_stats(vol.inodes.ctx.client)
        assert stats is not None and stats.total > 0  # the failover was crossed by retrying
        assert await vol.read_file("/log") == b"".join(_record(i) for i in range(acked))
    print(f"{AFTER} fsynced appends across the failover took {took:.1f} s")  # noqa: T201
    async with open_volume(volume=volume_name, options=RedisOptions(url=group.url)) as vol:
        assert await vol.read_file("/log") == b"".join(_record(i) for i in range(acked))
        report = await fsck(vol.inodes.ctx.client, volume_name)
        assert report.ok, str(report)
    for command in ("status", "fsck"):
        done = redisfuse(command, "--redis-url", group.url, "--volume", volume_name)
        assert done.returncode == 0, f"{command}: {done.stderr}"


async def test_too_few_replicas_fail_fsync_with_eio_and_one_log_line(
    redis_server, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    options = RedisOptions(url=redis_server.url, replicas=1, replica_timeout=0.2)
    async with open_volume(volume=volume_name, options=options) as vol:
        f = await vol.open("/f", "wb")
        await f.write(b"x")
        with caplog.at_level(logging.WARNING), pytest.raises(FSError) as caught:
            await f.flush()
        assert caught.value.errno == errno.EIO
        assert "reached 0 of 1 replicas within 0.2 s" in caplog.text
        with pytest.raises(FSError):
            await f.close()  # close waits too, and reports the same
        assert await vol.read_file("/f") == b"x"  # the master has it; only the replicas lack it


async def test_a_tls_only_sentinel_group_follows_a_failover(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, volume_name: str
) -> None:
    """``rediss+sentinel://``: sentinels, master and replicas speak only TLS and
    require client certificates; the volume asks the sentinels over TLS, follows
    the failover, and ``--replicas`` still confirms over TLS."""
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    group = start_sentinel_group(servers, tls=files)
    assert group.url.startswith("rediss+sentinel://")
    tls = {"tls_ca": str(files.ca), "tls_cert": str(files.client_cert),
           "tls_key": str(files.client_key)}  # fmt: skip
    options = RedisOptions(url=group.url, replicas=1, retry_deadline=30.0, **tls)
    async with open_volume(volume=volume_name, options=options) as vol:
        await vol.write_file("/before", b"1" * 100_000)
        old = group.master.port
        group.master.proc.send_signal(signal.SIGKILL)
        await vol.write_file("/after", b"2" * 100_000)  # retried through the failover
        assert master_port(group) != old
        assert await vol.read_file("/before") == b"1" * 100_000
        wait = vol.inodes.replica_wait
        assert wait is not None and wait.waits >= 2 and wait.failures == 0
    cli_tls = ["--redis-tls-ca", str(files.ca), "--redis-tls-cert", str(files.client_cert),
               "--redis-tls-key", str(files.client_key)]  # fmt: skip
    for command in ("status", "fsck"):
        done = redisfuse(command, "--redis-url", group.url, "--volume", volume_name, *cli_tls)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    async with open_volume(volume=volume_name, options=RedisOptions(url=group.url, **tls)) as vol:
        assert await vol.read_file("/after") == b"2" * 100_000


def _cut_replication(group: SentinelGroup) -> None:
    """Switch the replicas' ACL user off at the master and cut their links."""
    with group.client(group.master.port) as master:
        master.acl_setuser("repl", enabled=False)
        master.client_kill_filter(_type="replica")
        while master.info("replication")["connected_slaves"]:
            time.sleep(0.01)


async def test_changes_lost_in_a_failover_fail_the_next_fsync(
    servers: Servers, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The window a barrier cannot close by waiting: the master acknowledges a
    change and dies before any replica has it (here: the replicas are frozen
    meanwhile). The next fsync's barrier then runs at the promoted replica,
    whose WAIT succeeds; it must still fail with EIO, as the change is gone.

    The replicas sync as an ACL user of their own, which is switched off (and
    their links cut) to stop replication: a frozen replica would still find
    the change in its socket buffer when it wakes."""
    repl = ("--masteruser", "repl", "--masterauth", "repl-pw",
            "--user", "repl", "on", ">repl-pw", "+psync", "+replconf", "+ping")  # fmt: skip
    group = start_sentinel_group(servers, server_args=repl)
    options = RedisOptions(url=group.url, replicas=1, replica_timeout=10.0, retry_deadline=30.0)
    async with open_volume(volume=volume_name, options=options) as vol:
        f = await vol.open("/log", "wb")
        await f.write(_record(0))
        await f.flush()  # confirmed by a replica
        _cut_replication(group)
        await vol.mkdir("/acknowledged-then-lost")  # the master alone has it
        group.master.proc.send_signal(signal.SIGKILL)
        group.master.proc.wait()
        await f.write(_record(1))
        with caplog.at_level(logging.ERROR), pytest.raises(FSError) as caught:
            await f.flush()  # the commit goes to the promoted replica; so does the barrier
        assert caught.value.errno == errno.EIO
        assert "1 change(s) this mount saw acknowledged are missing" in caplog.text
        wait = vol.inodes.replica_wait
        assert wait is not None and wait.lost == 1
        assert snapshot(vol.inodes).replica_lost_changes == 1  # what --metrics exports
        assert not await vol.exists("/acknowledged-then-lost")
        await f.write(_record(2))
        await f.flush()  # reported once; later changes are confirmed again
        await f.close()
        assert await vol.read_file("/log") == b"".join(_record(i) for i in range(3))
