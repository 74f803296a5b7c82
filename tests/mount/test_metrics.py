"""Metrics of a real mount: the Prometheus endpoint, ``redisfuse stats`` and ``--log-metrics``.

One mount for the module, started with ``--metrics`` on a free port and
``--log-metrics 0.5``; each test works in its own directory and compares
counters before and after known operations. Shortcuts: the metrics port is
picked by binding port 0 and releasing it (a race with another process is
possible, and would fail the mount's start with "Address already in use");
the "other node" is a backend Volume in the test process.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from redisfuse.backend import open_volume
from redisfuse.fuse.rates import COLUMNS, STATS_XATTR

from ..conftest import _free_port
from .conftest import module_mount
from .mounting import Mount, wait_for

CLI = [sys.executable, "-c", "from redisfuse.fuse.cli import main; raise SystemExit(main())"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metered(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:  # type: ignore[no-untyped-def]
    port = _free_port("127.0.0.1")
    extra = ["--metrics", f"127.0.0.1:{port}", "--log-metrics", "0.5"]
    with module_mount(redis_server.url, tmp_path_factory, extra) as m:
        m.metrics_url = f"http://127.0.0.1:{port}/metrics"  # type: ignore[attr-defined]
        yield m


@pytest.fixture
def work(metered: Mount, request: pytest.FixtureRequest) -> Path:
    path = metered.path / f"{request.node.name[:40]}-{secrets.token_hex(3)}"
    path.mkdir()
    return path


def scrape(m: Mount) -> Samples:
    """Every sample of the mount's /metrics, by name and labels (minus mountpoint/volume)."""
    with urllib.request.urlopen(m.metrics_url, timeout=10) as reply:  # type: ignore[attr-defined]
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if s.name.startswith("redisfuse_"):
                assert labels.pop("mountpoint") == str(m.path)
                assert labels.pop("volume") == m.volume
            out[(s.name, frozenset(labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, op: str) -> float:
    return value(samples, "redisfuse_fuse_requests_total", operation=op)


def test_scrape_counts_known_operations(metered: Mount, work: Path) -> None:
    files, size = 20, 1000
    before = scrape(metered)
    for i in range(files):
        (work / f"f{i}").write_bytes(b"x" * size)
    created = scrape(metered)
    for i in range(5):
        assert not (work / f"missing{i}").exists()
    after = scrape(metered)

    assert requests(after, "create") - requests(before, "create") == files
    assert requests(after, "write") - requests(before, "write") == files
    written = "redisfuse_written_bytes_total"
    assert value(after, written) - value(before, written) == files * size
    # A stat of a missing name is counted as a lookup failing with ENOENT (the mount
    # answers it with a negative entry, which the kernel turns into ENOENT); so is the
    # lookup before each create.
    errors = "redisfuse_fuse_errors_total"
    enoent = {"operation": "lookup", "errno": "ENOENT"}
    assert value(created, errors, **enoent) - value(before, errors, **enoent) == files
    assert value(after, errors, **enoent) - value(created, errors, **enoent) == 5
    assert (
        value(after, "redisfuse_fuse_requests_total", operation="lookup")
        - value(created, "redisfuse_fuse_requests_total", operation="lookup")
        == 5
    )
    # Every request is in its operation's latency histogram.
    for op in ("create", "write", "lookup"):
        count = value(after, "redisfuse_fuse_request_duration_seconds_count", operation=op)
        inf = value(
            after, "redisfuse_fuse_request_duration_seconds_bucket", operation=op, le="+Inf"
        )
        assert count == inf == requests(after, op) > 0
        assert value(after, "redisfuse_fuse_request_duration_seconds_sum", operation=op) > 0
    trips = "redisfuse_redis_round_trips_total"
    assert value(after, trips) - value(before, trips) >= files  # a create is one round trip
    assert value(after, "redisfuse_session_alive") == 1
    assert value(after, "redisfuse_session_id") > 0
    assert value(after, "redisfuse_redis_up") == 1
    assert value(after, "redisfuse_redis_outages_total") == 0
    assert value(after, "process_resident_memory_bytes") > 0


def test_reads_and_events_from_another_node(metered: Mount, work: Path) -> None:
    """A file written by another node: its change events arrive and are counted, and
    reading it through the mount fetches every block from Redis (block cache misses)."""
    data = os.urandom(300_000)  # five blocks of 64 KiB, the last one partly filled
    before = scrape(metered)

    async def other_node() -> None:
        async with open_volume(metered.url, volume=metered.volume) as vol:
            await vol.write_file(f"/{work.name}/remote", data)

    asyncio.run(other_node())

    def events_arrived() -> bool:
        now = scrape(metered)
        return value(now, "redisfuse_events_total", kind="entry") > value(
            before, "redisfuse_events_total", kind="entry"
        ) and value(now, "redisfuse_kernel_invalidations_total", kind="entry") > value(
            before, "redisfuse_kernel_invalidations_total", kind="entry"
        )

    wait_for(events_arrived)
    mid = scrape(metered)
    assert (work / "remote").read_bytes() == data
    after = scrape(metered)
    read = "redisfuse_read_bytes_total"
    assert value(after, read) - value(mid, read) == len(data)
    # Five blocks, none cached here; concurrent read-ahead requests may both miss one.
    misses = "redisfuse_block_cache_misses_total"
    assert 5 <= value(after, misses) - value(mid, misses) <= 10
    loaded = "redisfuse_redis_loaded_bytes_total"
    stored = len(data) + 5  # raw (random data does not shrink), plus a codec byte per block
    assert stored <= value(after, loaded) - value(mid, loaded) <= 2 * stored


def test_stats_command_prints_rates(metered: Mount, work: Path) -> None:
    """``redisfuse stats MOUNTPOINT --count 2`` while files are being written."""
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            (work / f"g{i}").write_bytes(b"y" * 4096)
            i += 1

    writer = threading.Thread(target=load)
    writer.start()
    try:
        done = subprocess.run(
            [
                *CLI,
                "stats",
                str(metered.path),
                "--count",
                "2",
                "--interval",
                "0.5",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        stop.set()
        writer.join()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"volume {metered.volume} at {metered.path}")
    assert lines[1].split() == [w for title, _ in COLUMNS for w in title.split()]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 2
    for cells in rows:
        assert len(cells) == len(COLUMNS)
        ops, errors, _latency, trips = (float(c) for c in cells[:4])
        write_mbs = float(cells[8])
        # 4 KiB files written back to back: each is several requests and round trips.
        assert ops > 10 and trips > 2 and write_mbs > 0
        assert errors == 0


def test_log_metrics_lines(metered: Mount) -> None:
    pattern = re.compile(r"metrics: [\d.]+ ops/s, [\d.]+ errors/s, .* round trips/s")
    wait_for(lambda: len(pattern.findall(metered.log())) >= 2, timeout=10)


def test_stats_xattr_is_virtual(metered: Mount) -> None:
    """The stats attribute of the root is neither listed nor writable."""
    assert STATS_XATTR not in os.listxattr(metered.path)
    with pytest.raises(PermissionError):
        os.setxattr(metered.path, STATS_XATTR, b"{}")
    assert os.getxattr(metered.path, STATS_XATTR).startswith(b"{")
