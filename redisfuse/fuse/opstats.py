"""Per-operation request counters of the mount, kept as plain numbers on the hot path.

Every FUSE request passes the handler wrapper of ``boundary.py``, which records
it here: a count, the seconds it took (sum and a histogram bucket) and, when it
failed, its errno. That is a few integer additions, one ``bisect`` over a
short tuple and two ``perf_counter`` calls per request; no metrics library is
touched until someone reads the numbers (the Prometheus exporter builds its
metric families from :meth:`RequestStats.snapshot` at scrape time).

What counts as an error: every request answered with an errno, labelled with
it (ENOENT included: a stat of a missing name is an error, errno ENOENT). A
lookup answered with a *negative entry* (``--negative-timeout``: the kernel
caches the absence) is a successful FUSE reply, but the application sees
ENOENT all the same, so the lookup handler counts it as an ENOENT error too:
the numbers do not depend on that option. A request interrupted by the
kernel (cancelled) counts as EINTR.

pyfuse3 serves one mount per process, so the counters are the process's:
:data:`REQUESTS`, bound to each handler when its class is defined.
"""

from __future__ import annotations

import bisect
import errno
from dataclasses import dataclass, field
from typing import Any

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency histogram; one more bucket holds the rest (+Inf)."""


@dataclass(slots=True)
class OpStats:
    """Requests of one FUSE operation: how many, how long, which failed with what."""

    name: str
    count: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    """Requests per latency bucket (not cumulative); the last one is above every bound."""
    errors: dict[int, int] = field(default_factory=dict)
    """Failed requests by errno."""

    def done(self, seconds: float) -> None:
        """One request finished (whatever its answer) after ``seconds``."""
        self.count += 1
        self.seconds += seconds
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def failed(self, err: int) -> None:
        """The request just counted by :meth:`done` failed with ``err`` (0: EIO)."""
        err = err or errno.EIO
        self.errors[err] = self.errors.get(err, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-able); atomic copies, so any thread may call it."""
        return {
            "count": self.count,
            "seconds": self.seconds,
            "buckets": list(self.buckets),
            "errors": {errno.errorcode.get(e, str(e)): n for e, n in dict(self.errors).items()},
        }


class RequestStats:
    """The :class:`OpStats` of every operation, made when its handler is defined."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStats] = {}

    def __repr__(self) -> str:
        total = sum(op.count for op in list(self.ops.values()))
        return f"<RequestStats {total} requests over {len(self.ops)} operations>"

    def op(self, name: str) -> OpStats:
        stats = self.ops.get(name)
        if stats is None:
            stats = self.ops[name] = OpStats(name)
        return stats

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Operations that served at least one request, by name."""
        return {name: op.snapshot() for name, op in list(self.ops.items()) if op.count}


REQUESTS = RequestStats()
"""This process's mount (pyfuse3 serves one mount per process)."""
