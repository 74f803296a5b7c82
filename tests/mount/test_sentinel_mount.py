"""A real mount on Sentinel with ``--replicas 1``: the master is SIGKILLed under an fsyncing writer.

A master, two replicas and three sentinels (quorum 2, down-after 1 s; the
group of tests/deploy/servers.py). Two replicas, not the issue's one: with
``--replicas 1`` fsync waits for a replica, and after the failover the
promoted one is the master, so a second replica must be left to acknowledge.

The writer (a thread of the test process) puts record ``i`` at offset
``i * RECORD`` with pwrite and then fsyncs. **Acknowledged** means: that
fsync returned without an error. A write or fsync that fails (EIO, while the
mount's retries give up) is retried for the same record at the same offset,
so a retry can only rewrite what it wrote before. The main thread SIGKILLs
the master once ``BEFORE`` records are acknowledged; the writer goes on to
``TOTAL``. At the end every acknowledged record must read back, through the
mount and through a fresh backend client. Shortcuts: records are small; one
writer.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from redisfuse.backend import RedisOptions, open_volume
from redisfuse.backend.fsck import fsck

from ..deploy.servers import Servers, master_port, start_sentinel_group
from .mounting import start_mount, stop_mount

RECORD = 64
BEFORE, TOTAL = 20, 60
ATTEMPTS = 20
"""A record whose write or fsync failed this often in a row fails the test."""


def _record(i: int) -> bytes:
    return f"{i:08d}".encode().ljust(RECORD - 1, b".") + b"\n"


@dataclass
class Writer:
    """Appends numbered records with an fsync after each; counts what was acknowledged."""

    path: Path
    acked: int = 0
    failures: list[str] = field(default_factory=list)
    error: BaseException | None = None
    first_acked: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                while self.acked < TOTAL:
                    self._one(fd, self.acked)
                    self.acked += 1
                    if self.acked >= BEFORE:
                        self.first_acked.set()
            finally:
                os.close(fd)
        except BaseException as exc:  # reported by the test thread
            self.error = exc
            self.first_acked.set()

    def _one(self, fd: int, i: int) -> None:
        for _ in range(ATTEMPTS):
            try:
                os.pwrite(fd, _record(i), i * RECORD)
                os.fsync(fd)
                return
            except OSError as exc:  # the failover outlasted the mount's retries
                self.failures.append(f"record {i}: {exc}")
        raise AssertionError(f"record {i} failed {ATTEMPTS} times: {self.failures[-3:]}")


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Servers(tmp_path_factory) as started:
        yield started


async def _backend_read(url: str, volume: str) -> tuple[bytes, bool, str]:
    async with open_volume(volume=volume, options=RedisOptions(url=url)) as vol:
        data = await vol.read_file("/log")
        report = await fsck(vol.inodes.ctx.client, volume)
    return data, report.ok, str(report)


def test_fsynced_appends_survive_killing_the_master_under_the_mount(
    servers: Servers, tmp_path: Path
) -> None:
    group = start_sentinel_group(servers)
    volume = f"m-{secrets.token_hex(4)}"
    args = ["--replicas", "1", "--replica-timeout", "10"]
    m = start_mount(tmp_path / "mnt", group.url, volume, tmp_path / "mount.log", args)
    try:
        writer = Writer(m.path / "log")
        thread = threading.Thread(target=writer.run, daemon=True)
        thread.start()
        assert writer.first_acked.wait(20), "the writer made no progress"
        old = group.master.port
        group.master.proc.send_signal(signal.SIGKILL)
        killed, at = time.monotonic(), writer.acked
        thread.join(60)
        assert not thread.is_alive(), f"the writer hung at record {writer.acked}"
        took = time.monotonic() - killed
        assert writer.error is None, f"{writer.error!r}\n{m.log()}"
        assert writer.acked == TOTAL
        assert master_port(group) != old
        expected = b"".join(_record(i) for i in range(TOTAL))
        assert (m.path / "log").read_bytes() == expected
        data, ok, report = asyncio.run(_backend_read(group.url, volume))
        assert data == expected
        assert ok, report
    finally:
        code = stop_mount(m)
    assert code == 0, m.log()
    print(  # noqa: T201
        f"killed at record {at}; {TOTAL - at} fsynced records after it took {took:.1f} s; "
        f"{len(writer.failures)} failed attempts retried"
    )
