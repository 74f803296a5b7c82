"""Gathers a mount's numbers in one snapshot and logs them; exports nothing itself.

A snapshot joins the request counters of the FUSE handlers (``opstats.py``),
the backend's counters and session state (``Inodes.stats``) and the kernel
invalidations (``invalidate.py``) into plain JSON-able data. Three readers use
it: the Prometheus exporter (``prometheus.py``, ``--metrics``), ``redisfuse
stats`` (which reads it from the virtual xattr ``user.redisfuse.stats`` of the
mount's root, see ``operations.getxattr``) and :func:`log_metrics`
(``--log-metrics``). Taking a snapshot only reads numbers and copies
containers atomically, so the exporter's HTTP thread may take one too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from typing import Any

import anyio

from ..backend import Inodes
from .invalidate import KernelInvalidator
from .opstats import REQUESTS
from .rates import rates, summary, totals

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 1


class MountMetrics:
    """The numbers of one mount (pyfuse3 serves one per process)."""

    def __init__(
        self,
        mountpoint: str,
        volume: str,
        event_loop: str,
        inodes: Inodes,
        invalidator: KernelInvalidator,
    ) -> None:
        self.mountpoint = mountpoint
        self.volume = volume
        self.event_loop = event_loop
        self.inodes = inodes
        self.invalidator = invalidator
        self.started = time.monotonic()

    def __repr__(self) -> str:
        return f"<MountMetrics {self.volume!r} at {self.mountpoint} {REQUESTS!r}>"

    def snapshot(self) -> dict[str, Any]:
        """Everything counted so far, as plain data (any thread may call this)."""
        inv = self.invalidator
        now = time.monotonic()
        return {
            "version": SNAPSHOT_VERSION,
            "mountpoint": self.mountpoint,
            "volume": self.volume,
            "pid": os.getpid(),
            "event_loop": self.event_loop,
            "time": now,
            "uptime": now - self.started,
            "requests": REQUESTS.snapshot(),
            "backend": asdict(self.inodes.stats()),
            "kernel": {
                "inode_invalidations": inv.inode_invalidations,
                "entry_invalidations": inv.entry_invalidations,
                "resyncs": inv.resyncs,
                "known_inodes": len(inv.known),
            },
        }

    def encoded(self) -> bytes:
        """The snapshot as compact JSON (the value of the stats xattr)."""
        return json.dumps(self.snapshot(), separators=(",", ":")).encode()


async def log_metrics(metrics: MountMetrics, period: float) -> None:
    """Log one summary line of the last ``period`` seconds, every ``period`` seconds."""
    before = totals(metrics.snapshot())
    while True:
        await anyio.sleep(period)
        after = totals(metrics.snapshot())
        log.info("metrics: %s", summary(rates(before, after)))
        before = after
