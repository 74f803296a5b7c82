"""The command line of ``redisfuse bench DIR`` (and ``python -m redisfuse.bench``).

``redisfuse.fuse.cli`` adds these arguments to its ``bench`` subcommand and
calls ``run_from_args``; ``benchmarks/run.py`` checks its pass-through options
against ``add_arguments`` before it starts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path

from .model import DEFAULT_TIME_LIMIT_S, WORKLOAD_KEYS, Sizes
from .report import format_table
from .suite import Options, run_repeated


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``redisfuse bench`` (also used by ``python -m redisfuse.bench``)."""
    parser.add_argument(
        "directory", help="where to run (a scratch subdirectory is made and removed)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: 256 MiB file, 2,000 small files ..."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="run everything N times and report medians (default 3)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="S",
        help="stop any workload after S seconds and report what it did "
        f"(default {DEFAULT_TIME_LIMIT_S:.0f})",
    )
    parser.add_argument(
        "--only", metavar="KEY[,KEY]", help="run only these workloads: " + ", ".join(WORKLOAD_KEYS)
    )
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop kernel caches (cold figures are then not cold)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        metavar="DIR",
        help="source tree for the tar workload (default: Python's stdlib)",
    )
    parser.add_argument(
        "--sync-fds",
        metavar="IN,OUT",
        help="before and after each workload write 'begin KEY' or 'end KEY' and a newline "
        "to file descriptor OUT, then wait for a line on IN (lets another process, such as "
        "benchmarks/run.py, measure over exactly each workload)",
    )
    sizes = parser.add_argument_group("sizes (override --quick and the defaults)")
    for name, help_text in (
        ("file-mib", "big file, MiB"),
        ("text-mib", "text file, MiB"),
        ("request-kib", "sequential request size, KiB"),
        ("random-reads", "random 4 KiB reads"),
        ("small-files", "small files"),
        ("small-size", "small file bytes"),
        ("dirs", "directories"),
        ("tree-files", "files in the tar archive (0: all)"),
    ):
        sizes.add_argument(f"--{name}", type=int, metavar="N", help=help_text)


def options_from_args(args: argparse.Namespace) -> Options:
    sizes = Sizes.quick() if args.quick else Sizes()
    overrides = {
        name: getattr(args, name) for name in asdict(sizes) if getattr(args, name, None) is not None
    }
    only = None
    if args.only:
        only = frozenset(k.strip() for k in args.only.split(",") if k.strip())
        unknown = only - set(WORKLOAD_KEYS)
        if unknown:
            raise SystemExit(f"redisfuse bench: unknown workload(s): {', '.join(sorted(unknown))}")
    return Options(
        sizes=replace(sizes, **overrides),
        time_limit=args.time_limit,
        drop=not args.no_drop_caches,
        only=only,
        tree=args.tree,
        progress=_to_stderr,
        edges=None if args.sync_fds is None else _sync_edges(args.sync_fds),
    )


def _sync_edges(spec: str) -> Callable[[str, str], None]:
    """The ``--sync-fds IN,OUT`` hook: announce each edge on OUT, wait for a line on IN."""
    try:
        fd_in, fd_out = (int(part) for part in spec.split(","))
    except ValueError:
        raise SystemExit(f"redisfuse bench: --sync-fds wants IN,OUT, got {spec!r}") from None

    def edges(edge: str, key: str) -> None:
        os.write(fd_out, f"{edge} {key}\n".encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = os.read(fd_in, 64)
            if not chunk:
                raise SystemExit("redisfuse bench: the --sync-fds peer went away")
            answer += chunk

    return edges


def _to_stderr(line: str) -> None:
    """Progress goes to stderr so that stdout carries only the table."""
    print(line, file=sys.stderr, flush=True)  # noqa: T201


def run_from_args(args: argparse.Namespace) -> int:
    """``redisfuse bench``: run, print the table, write the JSON; 1 if a workload failed."""
    if not os.path.isdir(args.directory):
        print(f"redisfuse bench: {args.directory} is not a directory", file=sys.stderr)  # noqa: T201
        return 2
    report = run_repeated(args.directory, options_from_args(args), max(args.repeat, 1))
    print(format_table(report))  # noqa: T201
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = any(row["errors"] or row["median"] is None for row in report["workloads"].values())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redisfuse.bench DIR ...``: the same as ``redisfuse bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m redisfuse.bench", description="Run the benchmark workloads in DIRECTORY."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
