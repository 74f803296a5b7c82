"""The benchmark suite in one command: RedisFUSE beside its ceilings, measured in one run.

Run (as root for cold-cache figures and a real tmpfs mount):

    .venv/bin/python benchmarks/run.py [--quick] [--repeat 3] [--json FILE]

It starts a private redis-server (free port, temporary directory, no
persistence), mounts RedisFUSE with its default options (one mount per
``--event-loop`` asked for in ``--targets``) and the in-memory
pyfuse3 filesystem of ``memfs.py`` (one mount per event loop asked for) in
temporary directories, makes a tmpfs directory, and runs every workload of
``redisfuse.bench`` on each target ``--repeat`` times, interleaving the targets
round by round so that a drift of the machine hits all targets alike. It prints
the medians side by side with the ratios RedisFUSE / memfs (on trio, and on
RedisFUSE's own loop) and the noise (max - min over median); then, for the
small-file workloads, the cost per operation: the CPU of the mount and of
Redis, Redis's commands and round trips (``cost.py``); then it measures, on
fresh mounts of their own, Redis commands and round trips per operation, peak
RSS and Redis memory (``probes.py``).

Whatever happens (an error, Ctrl-C, SIGTERM), everything is unmounted and
stopped, and the results gathered so far are printed and written.

Extra options after the known ones (``--file-mib 64``, ``--small-files 500`` ...)
are passed to ``redisfuse bench`` and override the sizes.

This file only parses the command line and runs the steps in order; the steps
live beside it: ``targets.py`` (redis-server, tmpfs, memfs and RedisFUSE
mounts), ``rounds.py`` (the workloads, round by round; medians and ratios),
``cost.py`` (CPU, commands and round trips per operation), ``probes.py`` (per
operation, memory, RSS), ``report.py`` (the printed report), ``common.py``
(target names).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis
from common import DEFAULT_TARGETS, MEMFS_LOOPS, TARGETS, log
from cost import BACKGROUND_S, CostMeter, background_check
from probes import run_op_probes, run_rss_probe, vm_status
from report import format_report
from rounds import run_rounds, summarize_workloads
from targets import RedisServer, open_targets, remove_base

from redisfuse import bench


def code_revision() -> dict[str, Any]:
    """The commit of the RedisFUSE code measured, and its uncommitted files."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain", "redisfuse").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "dirty": dirty}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str], list[str]]:
    """Our options, the ``redisfuse bench`` options passed through, and the targets wanted.

    Unknown options and targets end the run here, before anything is started.
    """
    parser = argparse.ArgumentParser(
        description="RedisFUSE beside tmpfs and an in-memory pyfuse3 filesystem, in one run."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="256 MiB instead of 1 GiB, 2,000 small files instead of 10,000 ...",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="runs per workload and target (default 3)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="where to write the results (default: "
        "rfbench-<time>.json in the system temporary directory)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        metavar="S",
        help="stop any single workload after S seconds (default 60)",
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default "
        f"{','.join(DEFAULT_TARGETS)}); memfs and redisfuse run on --event-loop trio, "
        "the others on the loop they name",
    )
    parser.add_argument(
        "--no-cost",
        action="store_true",
        help="skip the cost per operation (mount and Redis CPU, commands, round trips) "
        "of the small-file workloads",
    )
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the per-operation, RSS and Redis memory measurements",
    )
    args, bench_args = parser.parse_known_args(argv)
    if args.quick:
        bench_args = ["--quick", *bench_args]
    check = argparse.ArgumentParser()
    bench.add_arguments(check)
    check.parse_args(["/", *bench_args])  # reject unknown options before starting anything
    targets_wanted = [t for t in args.targets.split(",") if t]
    if set(targets_wanted) - set(TARGETS):
        parser.error(f"unknown target(s) in {args.targets}")
    return args, bench_args, targets_wanted


def main(argv: list[str] | None = None) -> int:
    args, bench_args, targets_wanted = parse_args(argv)
    json_path = Path(
        args.json or Path(tempfile.gettempdir()) / time.strftime("rfbench-%Y%m%d-%H%M%S.json")
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)

    started = time.time()
    report: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "euid": os.geteuid(),
            "loadavg_start": os.getloadavg(),
        },
        "redisfuse_code": code_revision(),
        "repeat": args.repeat,
        "time_limit_s": args.time_limit,
        "bench_args": bench_args,
    }
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TARGETS}
    code = 0
    base = Path(tempfile.mkdtemp(prefix="rfbench-"))
    try:
        with ExitStack() as stack:
            stack.callback(remove_base, base)
            server = RedisServer(base / "redis")
            stack.callback(server.stop)
            server.start()
            report["machine"]["redis"] = redis.Redis(port=server.port).info("server")[
                "redis_version"
            ]
            targets = open_targets(stack, base, server, targets_wanted)
            read_ahead = targets.match_read_ahead()
            if read_ahead is not None:
                report["read_ahead_kb"] = read_ahead
            report["targets"] = {t: str(p) for t, p in targets.dirs.items()}
            log(f"redis-server on port {server.port}; targets: {report['targets']}")
            meter = None
            if targets.mounts and not args.no_cost:
                meter = CostMeter(server.port, server.pid, targets.pids())
                stack.callback(meter.close)
                log(f"background with every mount idle ({BACKGROUND_S:.0f} s)")
                report["cost_background"] = {"idle": meter.measure_background()}
            try:
                run_rounds(
                    targets.dirs,
                    bench_args,
                    args.repeat,
                    args.time_limit,
                    base,
                    results,
                    report,
                    meter,
                )
            finally:
                report["workloads"] = summarize_workloads(results)
                if meter is not None:
                    check = background_check(results, MEMFS_LOOPS)
                    if check is not None:
                        report["cost_background"]["during_memfs"] = check
            if "redisfuse" in targets.mounts:
                report["rss"] = {"main_mount": vm_status(targets.mounts["redisfuse"].pid)}
            targets.stop_mounts()
            if not args.no_probes:
                random_data = bench.random_pool()
                log("per-operation probes (fresh mount behind a counting proxy)")
                sizes = report.get("sizes") or {"text_mib": 64}
                ops, memory = run_op_probes(server, base, random_data, sizes["text_mib"])
                report["redis_ops"] = ops
                report["redis_memory"] = memory
                log("mount RSS with --cache-size 16")
                report.setdefault("rss", {}).update(run_rss_probe(server, base, random_data))
    except KeyboardInterrupt:
        log("interrupted: everything was unmounted and stopped; partial results follow")
        code = 130
    except Exception as exc:  # report what we have, then fail
        log(f"failed: {type(exc).__name__}: {exc}")
        report.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        code = 1
    report.setdefault("workloads", summarize_workloads(results))
    report["duration_s"] = time.time() - started
    report["machine"]["loadavg_end"] = os.getloadavg()
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(format_report(report))  # noqa: T201
    print(f"\nJSON: {json_path}")  # noqa: T201
    return code


if __name__ == "__main__":
    sys.exit(main())
