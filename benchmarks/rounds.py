"""The rounds: every workload on every target, ``--repeat`` times, then medians and ratios.

Each pass of the workloads runs in a child ``python -m redisfuse.bench``
(killed if it hangs), and the targets are interleaved round by round (tmpfs,
memfs ..., RedisFUSE ..., then again), so that a slow minute of the machine hits
every target alike.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import REFERENCE, RF_LOOPS, TARGETS, log, memfs_on, same_loop_ratio_key

from redisfuse import bench


def bench_once(
    target: str, directory: Path, bench_args: list[str], time_limit: float, out: Path
) -> dict[str, Any]:
    """One pass of ``redisfuse bench`` in a child process (killed if it hangs)."""
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
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=hard_limit)
    except subprocess.TimeoutExpired:
        log(f"  {target}: bench still running after {hard_limit:.0f} s: killed")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not out.exists():
        return {"error": f"bench on {target} ended with {proc.returncode} and no results"}
    report: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return report


def run_rounds(
    targets: dict[str, Path],
    bench_args: list[str],
    repeat: int,
    time_limit: float,
    scratch: Path,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    meta: dict[str, Any],
) -> None:
    """Every workload on every target, ``repeat`` times, targets interleaved per round."""
    for round_no in range(1, repeat + 1):
        for target, directory in targets.items():
            log(f"[round {round_no}/{repeat}] {target}: {directory}")
            report = bench_once(
                target, directory, bench_args, time_limit, scratch / f"{target}-{round_no}.json"
            )
            if "error" in report:
                meta.setdefault("errors", []).append(report["error"])
                log("  " + report["error"])
                continue
            meta["caches_dropped"] = meta.get("caches_dropped", True) and report["caches_dropped"]
            meta["sizes"] = report["sizes"]
            for key, row in report["workloads"].items():
                results[target].setdefault(key, []).append(
                    {
                        "value": row["values"][0],
                        "complete": row["complete"],
                        "error": (row["errors"] or [None])[0],
                        "detail": row["detail"],
                    }
                )


def summarize_workloads(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Per workload: each target's runs, median and noise, and each RedisFUSE ratio to memfs.

    ``ratio_<target>_memfs`` divides by memfs on trio (the reference of issue 9's targets);
    ``ratio_<target>_memfs-<loop>`` by memfs on the target's own loop.
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
        for target, loop in RF_LOOPS.items():
            row[f"ratio_{target}_{REFERENCE}"] = _ratio(row, target, REFERENCE)
            same = same_loop_ratio_key(target)
            if same is not None:
                row[same] = _ratio(row, target, memfs_on(loop))
        out[w.key] = row
    return out


def _ratio(row: dict[str, Any], target: str, memfs: str) -> float | None:
    """A target's median over a memfs median, None if either is missing (or memfs is 0)."""
    rf = row.get(target, {}).get("median")
    mem = row.get(memfs, {}).get("median")
    return rf / mem if rf is not None and mem else None
