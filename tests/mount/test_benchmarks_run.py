"""Smoke test of ``benchmarks/run.py``: memfs and RedisFUSE on the loop under test, side by side.

One real run with tiny sizes (a 2 MiB file, 20 small files, two workloads, one
round, no probes): its own redis-server, a memfs mount on trio (the reference),
memfs and RedisFUSE on the loop under test (``--event-loop``, else RedisFUSE's
default). It checks the wiring (targets, both ratios in the JSON and the
table, clean-up), not how fast anything is. Shortcut: caches are not dropped
(``--no-drop-caches``), so that the test does not flush the machine's caches.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from redisfuse.fuse.loops import DEFAULT_EVENT_LOOP

from . import mounting

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
DEADLINE_S = 100.0
WORKLOADS = ("seq_write", "create_4k")


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
