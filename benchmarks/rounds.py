"""The rounds: every workload on every target, ``--repeat`` times, then medians and ratios.

Each pass of the workloads runs in a child ``python -m redisfuse.bench``
(killed if it hangs), and the targets are interleaved round by round (tmpfs,
memfs ..., RedisFUSE ..., then again), so that a slow minute of the machine hits
every target alike.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import REFERENCE, RF_LOOPS, TARGETS, log, memfs_on, same_loop_ratio_key
from cost import METRICS, CostMeter

from redisfuse import bench


def bench_once(
    target: str,
    directory: Path,
    bench_args: list[str],
    time_limit: float,
    out: Path,
    edges: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """One pass of ``redisfuse bench`` in a child process (killed if it hangs).

    With ``edges``, the child announces the beginning and end of each workload
    (``--sync-fds``) and waits while ``edges(edge, key)`` runs here.
    """
    argv = [
        sys.executable,
        "-m",
        "redisfuse.bench",
        str(directory),
        "--repeat",
        "1",
        "--json",
        str(out),
        "--time-limit",
        str(time_limit),
        *bench_args,
    ]
    hard_limit = time_limit * (len(bench.WORKLOADS) + 4) + 300
    deadline = time.monotonic() + hard_limit
    ours: list[int] = []
    theirs: list[int] = []
    if edges is not None:
        answer_r, answer_w = os.pipe()
        edge_r, edge_w = os.pipe()
        ours, theirs = [answer_w, edge_r], [answer_r, edge_w]
        argv += ["--sync-fds", f"{answer_r},{edge_w}"]
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, start_new_session=True, pass_fds=theirs
        )
    finally:
        for fd in theirs:
            os.close(fd)
    try:
        if edges is not None:
            _serve_edges(edge_r, answer_w, edges, deadline)
        proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        log(f"  {target}: bench still running after {hard_limit:.0f} s: killed")
    finally:
        for fd in ours:
            os.close(fd)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not out.exists():
        return {"error": f"bench on {target} ended with {proc.returncode} and no results"}
    report: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return report


def _serve_edges(
    edge_r: int, answer_w: int, edges: Callable[[str, str], None], deadline: float
) -> None:
    """Answer each ``EDGE KEY`` line from the child after ``edges(EDGE, KEY)``, until EOF.

    Raises TimeoutExpired at ``deadline`` (the caller kills the child).
    """
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([edge_r], [], [], left)[0]:
            raise subprocess.TimeoutExpired("redisfuse.bench", deadline)
        chunk = os.read(edge_r, 4096)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            edge, _, key = line.decode().partition(" ")
            edges(edge, key)
            os.write(answer_w, b"go\n")


def run_rounds(
    targets: dict[str, Path],
    bench_args: list[str],
    repeat: int,
    time_limit: float,
    scratch: Path,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    meta: dict[str, Any],
    meter: CostMeter | None = None,
) -> None:
    """Every workload on every target, ``repeat`` times, targets interleaved per round.

    With ``meter``, each run of a small-file workload on a FUSE target also gets
    its ``cost_window`` (the meter's raw deltas) and ``cost`` (per operation).
    """
    units = {w.key: w.unit for w in bench.WORKLOADS}
    for round_no in range(1, repeat + 1):
        for target, directory in targets.items():
            log(f"[round {round_no}/{repeat}] {target}: {directory}")
            windows: dict[str, dict[str, Any]] = {}
            edges = None
            if meter is not None and target in meter.mounts:
                edges = meter.edges(target, windows)
            out = scratch / f"{target}-{round_no}.json"
            report = bench_once(target, directory, bench_args, time_limit, out, edges)
            if "error" in report:
                meta.setdefault("errors", []).append(report["error"])
                log("  " + report["error"])
                continue
            meta["caches_dropped"] = meta.get("caches_dropped", True) and report["caches_dropped"]
            meta["sizes"] = report["sizes"]
            for key, row in report["workloads"].items():
                run: dict[str, Any] = {
                    "value": row["values"][0],
                    "complete": row["complete"],
                    "error": (row["errors"] or [None])[0],
                    "detail": row["detail"],
                }
                if meter is not None and key in windows:
                    run["cost_window"] = windows[key]
                    run["cost"] = meter.per_operation(target, key, units[key], run)
                results[target].setdefault(key, []).append(run)


def summarize_workloads(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per workload: each target's runs, median and noise, and each RedisFUSE ratio to memfs.

    ``ratio_<target>_memfs`` divides by memfs on trio (the reference of issue 9's targets);
    ``ratio_<target>_memfs-<loop>`` by memfs on the target's own loop. Where runs were
    measured for cost, each target also gets ``cost`` (``_cost_summary``) and the row
    ``cpu_ratio_<target>_memfs`` and ``cpu_ratio_<target>_memfs-<loop>``: the same
    ratios of mount CPU per operation.
    """
    out: dict[str, Any] = {}
    for w in bench.WORKLOADS:
        row: dict[str, Any] = {
            "label": w.label,
            "unit": w.unit,
            "higher_is_better": w.higher_is_better,
        }
        for target in TARGETS:
            runs = results.get(target, {}).get(w.key, [])
            if not runs:
                continue
            row[target] = {
                "values": [r["value"] for r in runs],
                **bench.summarize([r["value"] for r in runs]),
                "complete": all(r["complete"] for r in runs),
                "errors": [r["error"] for r in runs if r["error"]],
                "detail": runs[-1]["detail"],
            }
            cost = _cost_summary(runs)
            if cost:
                row[target]["cost"] = cost
        for target, loop in RF_LOOPS.items():
            row[f"ratio_{target}_{REFERENCE}"] = _ratio(row, target, REFERENCE)
            same = same_loop_ratio_key(target)
            if same is not None:
                row[same] = _ratio(row, target, memfs_on(loop))
            if any("cost" in row.get(t, {}) for t in (target, REFERENCE)):
                row[f"cpu_ratio_{target}_{REFERENCE}"] = _cpu_ratio(row, target, REFERENCE)
                if same is not None:
                    row[f"cpu_{same}"] = _cpu_ratio(row, target, memfs_on(loop))
        out[w.key] = row
    return out


def _cost_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric of ``cost.METRICS``: each run's figure per operation, median and noise."""
    costs = [r["cost"] for r in runs if r.get("cost")]
    if not costs:
        return {}
    out: dict[str, Any] = {"operations": costs[-1]["operations"]}
    for metric in METRICS:
        values = [c[metric] for c in costs if metric in c]
        if values:
            out[metric] = {"values": values, **bench.summarize(values)}
    out["windows"] = [r["cost_window"] for r in runs if r.get("cost_window")]
    return out


def _cpu_ratio(row: dict[str, Any], target: str, memfs: str) -> float | None:
    """A target's median mount CPU per operation over memfs's, None if either is missing."""
    rf = row.get(target, {}).get("cost", {}).get("mount_cpu_us", {}).get("median")
    mem = row.get(memfs, {}).get("cost", {}).get("mount_cpu_us", {}).get("median")
    return rf / mem if rf is not None and mem else None


def _ratio(row: dict[str, Any], target: str, memfs: str) -> float | None:
    """A target's median over a memfs median, None if either is missing (or memfs is 0)."""
    rf = row.get(target, {}).get("median")
    mem = row.get(memfs, {}).get("median")
    return rf / mem if rf is not None and mem else None
