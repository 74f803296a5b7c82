"""Smoke test of ``redisfuse bench``: every workload runs and reports a positive figure.

Tiny sizes (a 2 MiB file, 20 small files ...) on the mount and on local disk:
this checks the wiring (command line, JSON, every workload, cleanup, the
``--sync-fds`` hook), not how fast anything is. The suites run with
``--no-drop-caches`` so that the test does not flush the whole machine's caches
six times; ``drop_caches`` itself is exercised once on a single file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redisfuse import bench
from redisfuse.fuse.cli import main

TINY = [
    "--repeat", "1",
    "--file-mib", "2",
    "--text-mib", "1",
    "--random-reads", "20",
    "--small-files", "20",
    "--dirs", "5",
    "--tree-files", "20",
    "--no-drop-caches",
]  # fmt: skip


def _run_bench(directory: Path, out: Path) -> dict[str, object]:
    code = main(["bench", str(directory), *TINY, "--json", str(out)])
    assert code == 0
    report: dict[str, object] = json.loads(out.read_text())
    return report


def _check(report: dict[str, object], directory: Path) -> None:
    workloads = report["workloads"]
    assert isinstance(workloads, dict)
    assert set(workloads) == set(bench.WORKLOAD_KEYS)
    for key, row in workloads.items():
        assert row["errors"] == [], key
        assert row["complete"], key
        assert row["median"] is not None and row["median"] > 0, key
        assert all(v > 0 for v in row["values"]), key
    assert workloads["create_4k"]["detail"]["files"] == 20
    assert workloads["tar_extract"]["detail"]["files"] == 20
    assert not [p for p in os.listdir(directory) if p.startswith("rfbench-")], "scratch left"


def test_bench_on_mount(work: Path, tmp_path: Path) -> None:
    _check(_run_bench(work, tmp_path / "mount.json"), work)


def test_bench_on_local_dir(tmp_path: Path) -> None:
    target = tmp_path / "local"
    target.mkdir()
    _check(_run_bench(target, tmp_path / "local.json"), target)


def test_drop_caches_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 8192)
    dropped = bench.drop_caches([path])
    assert dropped == os.access(bench.DROP_CACHES, os.W_OK)
    assert path.read_bytes() == b"x" * 8192


def test_bench_rejects_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", str(tmp_path / "nowhere"), *TINY]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_sync_fds_announces_each_workload_and_waits(tmp_path: Path) -> None:
    """``--sync-fds IN,OUT``: 'begin KEY' and 'end KEY' around each workload, in order, each
    answered before the child goes on (what benchmarks/run.py measures the mount's CPU by)."""
    answer_r, answer_w = os.pipe()
    edge_r, edge_w = os.pipe()
    argv = [
        sys.executable, "-m", "redisfuse.bench", str(tmp_path),
        "--repeat", "1", "--only", "create_4k,stat", "--small-files", "5",
        "--no-drop-caches", "--sync-fds", f"{answer_r},{edge_w}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, pass_fds=(answer_r, edge_w), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    os.close(answer_r)
    os.close(edge_w)
    seen: list[str] = []
    try:
        with os.fdopen(edge_r, "rb") as edges, os.fdopen(answer_w, "wb", buffering=0) as answers:
            for line in edges:
                seen.append(line.decode().strip())
                answers.write(b"go\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen == ["begin create_4k", "end create_4k", "begin stat", "end stat"]
