"""Metrics without a mount: the request counters and rates as plain code, and the
commands' answers to user mistakes (one line, an exit code).

``redisfuse stats`` on what is not a mount, and ``--metrics`` without the
``metrics`` extra (prometheus_client hidden from the child process), which
is refused before FUSE or Redis is touched.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redisfuse.fuse.cli import parse_address
from redisfuse.fuse.opstats import LATENCY_BUCKETS, OpStats
from redisfuse.fuse.rates import COLUMNS, Totals, header, rates, row, summary, totals

CLI = [sys.executable, "-c", "from redisfuse.fuse.cli import main; raise SystemExit(main())"]


def test_stats_refuses_what_is_not_a_mount(tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        done = subprocess.run(
            [*CLI, "stats", str(target), "--count", "1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 3
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("redisfuse: ")


def test_metrics_without_prometheus_client(tmp_path: Path) -> None:
    """--metrics without the extra says what to install, in one line, and mounts nothing."""
    (tmp_path / "mnt").mkdir()
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from redisfuse.fuse.cli import main\n"
        f"sys.exit(main(['mount', {str(tmp_path / 'mnt')!r}, '--metrics', '9567']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "redisfuse: --metrics needs prometheus_client: pip install 'redisfuse[metrics]'"
    )
    assert not os.path.ismount(tmp_path / "mnt")


def test_latency_buckets_are_upper_bounds() -> None:
    op = OpStats("lookup")
    op.done(LATENCY_BUCKETS[1])  # on a bound: that bucket (Prometheus' le)
    op.done(LATENCY_BUCKETS[1] * 1.01)
    op.done(60.0)  # past every bound: +Inf
    op.failed(0)
    assert op.buckets[1] == op.buckets[2] == op.buckets[-1] == 1
    assert (op.count, sum(op.buckets)) == (3, 3)
    assert op.snapshot()["errors"] == {"EIO": 1}


def _snapshot(t: float, ops: int, seconds: float, errors: dict[str, int]) -> dict:  # type: ignore[type-arg]
    backend = dict.fromkeys(
        (
            "redis_round_trips",
            "redis_retries",
            "block_cache_hits",
            "block_cache_misses",
            "meta_cache_hits",
            "meta_cache_misses",
            "bytes_read",
            "bytes_written",
            "events_inode",
            "events_entry",
            "events_peer",
            "open_handles",
            "dirty_bytes",
        ),
        0,
    )
    backend.update(redis_round_trips=ops * 2, block_cache_hits=ops, bytes_written=ops * 1000)
    op = {"count": ops, "seconds": seconds, "buckets": [], "errors": errors}
    return {"time": t, "requests": {"write": op}, "backend": backend}


def test_rates_between_two_snapshots() -> None:
    before = totals(_snapshot(10.0, 100, 0.1, {"ENOENT": 5}))
    after = totals(_snapshot(12.0, 300, 0.5, {"ENOENT": 50, "ENODATA": 9, "EIO": 4}))
    assert isinstance(after, Totals)
    r = rates(before, after)
    assert r.ops == 100.0  # 200 requests in 2 s
    assert r.errors == 2.0  # EIO only: missing names and unset xattrs are answers
    assert r.latency_ms == pytest.approx(2.0)  # 0.4 s over 200 requests
    assert (r.round_trips, r.block_hit_pct, r.meta_hit_pct) == (200.0, 100.0, None)
    assert r.write_mbs == 0.1
    cells = row(r).split()
    assert len(cells) == len(COLUMNS) and len(row(r)) == len(header())
    assert cells[:3] == ["100", "2.00", "2.00"]


def test_a_redis_outage_shows_in_the_row_and_the_summary() -> None:
    before = totals(_snapshot(10.0, 100, 0.1, {}))
    down = _snapshot(12.0, 100, 0.1, {})
    down["backend"]["redis_down_seconds"] = 12.4
    r = rates(before, totals(down))
    assert row(r).split()[-1] == "down:12s"
    assert summary(r).endswith(", Redis not answering for 12 s")
    up = rates(before, totals(_snapshot(12.0, 100, 0.1, {})))
    assert row(up).split()[-1] == "up" and "not answering" not in summary(up)


def test_metrics_address() -> None:
    assert parse_address("9567") == ("127.0.0.1", 9567)
    assert parse_address(":9567") == ("0.0.0.0", 9567)
    assert parse_address("[::1]:9567") == ("::1", 9567)
    for bad in ("x", "host:", "70000", "h:0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_address(bad)
