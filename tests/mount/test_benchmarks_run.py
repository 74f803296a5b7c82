"""Smoke test of ``benchmarks/run.py``: memfs and RedisFUSE on the loop under test, side by side.

One real run with tiny sizes (a 2 MiB file, 20 small files, two workloads, one
round, no probes): its own redis-server, a memfs mount on trio (the reference),
memfs and RedisFUSE on the loop under test (``--event-loop``, else RedisFUSE's
default). It checks the wiring (targets, both ratios in the JSON and the
table, the cost per operation of the small-file workload, clean-up), not how
fast anything is or what anything costs. Shortcut: caches are not dropped
(``--no-drop-caches``), so that the test does not flush the machine's caches.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redisfuse.fuse.loops import DEFAULT_EVENT_LOOP

from . import mounting

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
DEADLINE_S = 100.0
WORKLOADS = ("seq_write", "create_4k")
COSTED = "create_4k"
"""The small-file workload among WORKLOADS: measured per operation (seq_write is not)."""


def _run(targets: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    """Run the benchmark, ending it with SIGTERM (it then unmounts everything) if it hangs."""
    argv = [
        sys.executable, str(RUN),
        "--repeat", "1",
        "--no-probes",
        "--targets", ",".join(targets),
        "--json", str(out),
        "--only", ",".join(WORKLOADS),
        "--file-mib", "2",
        "--small-files", "20",
        "--no-drop-caches",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"benchmarks/run.py still running after {DEADLINE_S} s:\n{stderr}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def test_memfs_and_redisfuse_on_the_loop_under_test(tmp_path: Path) -> None:
    loop = mounting.EVENT_LOOP or DEFAULT_EVENT_LOOP
    rf = "redisfuse" if loop == "trio" else f"redisfuse-{loop}"
    same = "memfs" if loop == "trio" else f"memfs-{loop}"
    targets = sorted({"memfs", same, rf})
    done = _run(targets, tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out.json").read_text())

    assert sorted(report["targets"]) == targets
    for path in report["targets"].values():
        assert not mounting.is_mounted(path), f"{path} left mounted"
        assert not os.path.exists(path), f"{path} left behind"
    for key in WORKLOADS:
        row = report["workloads"][key]
        for target in targets:
            assert row[target]["errors"] == [], (key, target)
            assert row[target]["median"] > 0, (key, target)
        ratio = row[f"ratio_{rf}_memfs"]
        assert ratio == pytest.approx(row[rf]["median"] / row["memfs"]["median"])
        if same != "memfs":
            same_ratio = row[f"ratio_{rf}_{same}"]
            assert same_ratio == pytest.approx(row[rf]["median"] / row[same]["median"])

    heading = next(line for line in done.stdout.splitlines() if line.startswith("workload"))
    assert f"{loop}/m " in heading
    assert (f"{loop}/m-same" in heading) == (loop != "trio")

    check_cost(report, done.stdout, targets, rf, same)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_cost(report: dict[str, Any], stdout: str, targets: list[str], rf: str, same: str) -> None:
    """The cost per operation is there, positive and finite, for every FUSE target."""
    assert "cost" not in report["workloads"]["seq_write"][rf]
    row = report["workloads"][COSTED]
    for target in targets:
        cost = row[target]["cost"]
        assert cost["operations"] == 20, target
        wanted = ["wall_us", "mount_cpu_us"]
        if target == rf:
            wanted += ["redis_cpu_us", "redis_commands", "redis_round_trips"]
        else:
            assert "redis_cpu_us" not in cost, target
        for metric in wanted:
            assert _positive(cost[metric]["median"]), (target, metric, cost[metric])
            assert len(cost[metric]["values"]) == 1, (target, metric)
        assert len(cost["windows"]) == 1 and cost["windows"][0]["seconds"] > 0, target
    mount_cpu = {t: row[t]["cost"]["mount_cpu_us"]["median"] for t in targets}
    assert row[f"cpu_ratio_{rf}_memfs"] == pytest.approx(mount_cpu[rf] / mount_cpu["memfs"])
    if same != "memfs":
        assert row[f"cpu_ratio_{rf}_{same}"] == pytest.approx(mount_cpu[rf] / mount_cpu[same])
    idle = report["cost_background"]["idle"]
    assert idle["seconds"] > 0 and set(idle["mount_cpu_us_per_s"]) == set(targets)
    for key in ("redis_cpu_us_per_s", "redis_commands_per_s", "redis_reads_per_s"):
        assert math.isfinite(idle[key]) and idle[key] >= 0, key
    assert "during_memfs" in report["cost_background"]

    lines = stdout.splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("Cost per operation"))
    columns = lines[heading + 1].split()
    for column in ("wall", "mount", "memfs", "m-same", "Redis", "cmds", "RTs"):
        assert column in columns, column
    rows = lines[heading + 3 : heading + 3 + len(targets)]
    assert rows[0].startswith(row["label"]), rows
    loop = rf.removeprefix("redisfuse-") if rf != "redisfuse" else "trio"
    figures = next(r for r in rows[1:] if r[42:].split()[0] == loop)[42:].split()[1:]
    # wall, mount, x memfs, [x m-same,] Redis, cmds, RTs, noise
    assert len(figures) == (8 if same != "memfs" else 7), figures
