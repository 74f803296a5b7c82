"""What every part of ``run.py`` shares: the targets and their names, and progress output.

A target is a directory the workloads run in: ``tmpfs`` (the kernel's
ceiling), memfs (``memfs.py``, the ceiling of a Python FUSE filesystem) on one
event loop, or a RedisFUSE mount on one ``--event-loop``. The performance
targets (issue 9) are ratios to memfs on trio, so that is the reference every
RedisFUSE column is divided by; memfs on asyncio and uvloop give each RedisFUSE
loop a second ratio, to the ceiling of its own loop.
"""

from __future__ import annotations

import sys

MIB = 1 << 20
MEMFS_LOOPS = {"memfs": "trio", "memfs-asyncio": "asyncio", "memfs-uvloop": "uvloop"}
"""memfs targets, each a mount of ``memfs.py --event-loop LOOP``."""
RF_LOOPS = {"redisfuse": "trio", "redisfuse-asyncio": "asyncio", "redisfuse-uvloop": "uvloop"}
"""RedisFUSE targets, each a mount of its own volume on one ``--event-loop``."""
TARGETS = ("tmpfs", *MEMFS_LOOPS, *RF_LOOPS)
DEFAULT_TARGETS = ("tmpfs", "memfs", "redisfuse")
REFERENCE = "memfs"
"""The ceiling the performance targets (issue 9) are stated against: memfs on trio."""
COLUMNS = {
    "tmpfs": "tmpfs",
    "memfs": "memfs",
    "memfs-asyncio": "m-asyncio",
    "memfs-uvloop": "m-uvloop",
    **RF_LOOPS,
}
"""Column headings: memfs on trio is plain ``memfs``; RedisFUSE columns are named by loop."""
NOISE_KEYS = {
    "tmpfs": "t",
    "memfs": "m",
    "memfs-asyncio": "ma",
    "memfs-uvloop": "mu",
    **{target: loop[0] for target, loop in RF_LOOPS.items()},
}
"""Short names in the heading of the noise column (``noise t/m/t``)."""


def memfs_on(loop: str) -> str:
    """The memfs target that runs on ``loop``."""
    return next(target for target, own in MEMFS_LOOPS.items() if own == loop)


def same_loop_ratio_key(target: str) -> str | None:
    """The JSON key of a RedisFUSE target's ratio to memfs on its own loop.

    None for trio, whose own-loop memfs is the reference itself (``ratio_redisfuse_memfs``).
    """
    memfs = memfs_on(RF_LOOPS[target])
    return None if memfs == REFERENCE else f"ratio_{target}_{memfs}"


def log(message: str) -> None:
    """Progress to stderr; stdout carries only the final tables."""
    print(message, file=sys.stderr, flush=True)  # noqa: T201
