"""``redisfuse stats MOUNTPOINT``: a mount's rates, live, one line per interval.

The numbers come from the mount itself, found from the mountpoint alone: the
virtual extended attribute ``user.redisfuse.stats`` of the mount's root holds
its counters as JSON (``metrics.MountMetrics``), whether or not ``--metrics``
was given. Reading it is one getxattr, answered from the mount's memory (no
Redis, no socket or file to find). On a terminal the header is bold and
repeated every screenful; elsewhere the output is plain lines, for scripts.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from typing import Any, TextIO

from .errors import EXIT_MOUNTPOINT, EXIT_USAGE, UsageError
from .rates import STATS_XATTR, header, rates, row, totals

HEADER_EVERY = 20
"""On a terminal, the header is printed again after this many rows."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", help="where a RedisFUSE volume is mounted")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between lines (default 1)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="stop after N lines (default: run until Ctrl-C)",
    )


def read_snapshot(mountpoint: str) -> dict[str, Any]:
    """The mount's counters, or a UsageError saying in one line why there are none."""
    try:
        raw = os.getxattr(mountpoint, STATS_XATTR)
    except FileNotFoundError:
        raise UsageError(f"{mountpoint} does not exist", EXIT_MOUNTPOINT) from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise UsageError(
                f"{mountpoint}: the mount's process is gone (unmount it: fusermount3 -u)",
                EXIT_MOUNTPOINT,
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(
                f"{mountpoint}: permission denied (another user's mount, without --allow-other?)",
                EXIT_MOUNTPOINT,
            ) from None
        raise UsageError(f"{mountpoint} is not a RedisFUSE mount", EXIT_MOUNTPOINT) from None
    try:
        snapshot: dict[str, Any] = json.loads(raw)
        totals(snapshot)
    except (ValueError, KeyError, TypeError):
        raise UsageError(
            f"{mountpoint}: unreadable statistics (a different RedisFUSE version?)",
            EXIT_MOUNTPOINT,
        ) from None
    return snapshot


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the rates of the mount at ``args.mountpoint`` every ``args.interval`` seconds."""
    out = out or sys.stdout
    if args.interval <= 0:
        raise UsageError("--interval must be positive", EXIT_USAGE)
    if args.count < 0:
        raise UsageError("--count cannot be negative", EXIT_USAGE)
    mountpoint = os.path.abspath(args.mountpoint)
    first = read_snapshot(mountpoint)
    tty = out.isatty()
    bold, plain = ("\033[1m", "\033[0m") if tty else ("", "")
    out.write(
        f"volume {first['volume']} at {first['mountpoint']} (pid {first['pid']}, "
        f"session {first['backend']['session']}, {first['event_loop']} loop)\n"
    )
    before = totals(first)
    printed = 0
    while args.count == 0 or printed < args.count:
        if printed % HEADER_EVERY == 0 and (tty or printed == 0):
            out.write(f"{bold}{header()}{plain}\n")
        time.sleep(args.interval)
        after = totals(read_snapshot(mountpoint))
        out.write(row(rates(before, after)) + "\n")
        out.flush()
        before = after
        printed += 1
    return 0
