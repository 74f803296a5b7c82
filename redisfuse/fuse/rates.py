"""Turns two snapshots of a mount's counters into rates, and rates into lines of text.

Shared by ``redisfuse stats`` (a table row per interval) and the mount's
``--log-metrics`` (one summary line per period). A snapshot is the JSON the
mount serves (``metrics.MountMetrics.snapshot``); this module needs neither
pyfuse3 nor a mount, so it is plain functions over plain data.

The error column leaves out the :data:`ROUTINE` answers: missing names
(ENOENT: shells probe every PATH directory, editors probe for swap files),
extended attributes not set (ENODATA: the kernel asks for security.capability
before every write) and ACLs not supported (ENOTSUP alias EOPNOTSUPP: ``ls -l`` asks). They
would drown real failures. Prometheus has every errno, these included, by label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATS_XATTR = "user.redisfuse.stats"
"""The virtual extended attribute of a mount's root that holds its counters as JSON."""

MB = 1_000_000

ROUTINE = frozenset({"ENOENT", "ENODATA", "ENOTSUP", "EOPNOTSUPP"})
"""Errnos that answer a question ("no such name") rather than report a failure."""


@dataclass(frozen=True, slots=True)
class Totals:
    """The counters ``redisfuse stats`` shows, at one moment (the mount's monotonic clock)."""

    time: float
    ops: int
    errors: int
    """Failed requests, leaving out the ROUTINE answers."""
    seconds: float
    round_trips: int
    retries: int
    block_hits: int
    block_misses: int
    meta_hits: int
    meta_misses: int
    bytes_read: int
    bytes_written: int
    events: int
    open_handles: int
    dirty_bytes: int
    redis_down_s: float = 0.0
    """How long Redis has not been answering (0 while it answers)."""


def totals(snapshot: dict[str, Any]) -> Totals:
    """The :class:`Totals` of a snapshot."""
    requests: dict[str, dict[str, Any]] = snapshot["requests"]
    backend: dict[str, Any] = snapshot["backend"]
    errors = sum(
        n for op in requests.values() for name, n in op["errors"].items() if name not in ROUTINE
    )
    return Totals(
        time=float(snapshot["time"]),
        ops=sum(op["count"] for op in requests.values()),
        errors=errors,
        seconds=sum(op["seconds"] for op in requests.values()),
        round_trips=backend["redis_round_trips"],
        retries=backend["redis_retries"],
        block_hits=backend["block_cache_hits"],
        block_misses=backend["block_cache_misses"],
        meta_hits=backend["meta_cache_hits"],
        meta_misses=backend["meta_cache_misses"],
        bytes_read=backend["bytes_read"],
        bytes_written=backend["bytes_written"],
        events=sum(backend[k] for k in ("events_inode", "events_entry", "events_peer")),
        open_handles=backend["open_handles"],
        dirty_bytes=backend["dirty_bytes"],
        redis_down_s=float(backend.get("redis_down_seconds", 0.0)),
    )


@dataclass(frozen=True, slots=True)
class Rates:
    """What happened per second between two :class:`Totals` (latency: mean per request)."""

    ops: float
    errors: float
    latency_ms: float
    round_trips: float
    retries: float
    block_hit_pct: float | None
    """Hits of the block cache in percent (None: no block was asked for)."""
    meta_hit_pct: float | None
    read_mbs: float
    write_mbs: float
    events: float
    open_handles: int
    dirty_mb: float
    redis_down_s: float = 0.0
    """As in :class:`Totals`, at the later snapshot."""


def _pct(hits: int, misses: int) -> float | None:
    return None if hits + misses <= 0 else 100.0 * hits / (hits + misses)


def rates(before: Totals, after: Totals) -> Rates:
    """Rates over the time between the two snapshots (at least a millisecond)."""
    dt = max(after.time - before.time, 1e-3)
    ops = after.ops - before.ops
    return Rates(
        ops=ops / dt,
        errors=(after.errors - before.errors) / dt,
        latency_ms=(after.seconds - before.seconds) * 1e3 / ops if ops > 0 else 0.0,
        round_trips=(after.round_trips - before.round_trips) / dt,
        retries=(after.retries - before.retries) / dt,
        block_hit_pct=_pct(
            after.block_hits - before.block_hits, after.block_misses - before.block_misses
        ),
        meta_hit_pct=_pct(
            after.meta_hits - before.meta_hits, after.meta_misses - before.meta_misses
        ),
        read_mbs=(after.bytes_read - before.bytes_read) / dt / MB,
        write_mbs=(after.bytes_written - before.bytes_written) / dt / MB,
        events=(after.events - before.events) / dt,
        open_handles=after.open_handles,
        dirty_mb=after.dirty_bytes / MB,
        redis_down_s=after.redis_down_s,
    )


COLUMNS = (
    ("ops/s", 9),
    ("err/s", 7),
    ("lat ms", 7),
    ("rt/s", 8),
    ("retry/s", 7),
    ("bcache%", 7),
    ("mcache%", 7),
    ("rd MB/s", 8),
    ("wr MB/s", 8),
    ("evt/s", 7),
    ("open", 5),
    ("dirty MB", 8),
    ("redis", 8),
)
"""The columns of ``redisfuse stats`` and their widths."""


def header() -> str:
    return " ".join(title.rjust(width) for title, width in COLUMNS)


def _num(value: float, width: int) -> str:
    text = f"{value:.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return text.rjust(width)


def _pct_text(value: float | None, width: int) -> str:
    return "-".rjust(width) if value is None else f"{value:.1f}".rjust(width)


def redis_state(r: Rates) -> str:
    """``up``, or ``down:12s`` while Redis is not answering (one word: scripts split rows)."""
    return f"down:{r.redis_down_s:.0f}s" if r.redis_down_s > 0 else "up"


def row(r: Rates) -> str:
    """One line of the table under :func:`header`."""
    cells = (
        r.ops,
        r.errors,
        r.latency_ms,
        r.round_trips,
        r.retries,
        r.block_hit_pct,
        r.meta_hit_pct,
        r.read_mbs,
        r.write_mbs,
        r.events,
        r.open_handles,
        r.dirty_mb,
        None,
    )
    out = []
    for (title, width), value in zip(COLUMNS, cells, strict=True):
        if title == "redis":
            out.append(redis_state(r).rjust(width))
        elif title.endswith("%"):
            out.append(_pct_text(value, width))
        elif title == "open":
            out.append(str(value).rjust(width))
        else:
            assert value is not None
            out.append(_num(value, width))
    return " ".join(out)


def summary(r: Rates) -> str:
    """The same numbers as one sentence-like log line (``--log-metrics``)."""

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}%"

    return (
        f"{r.ops:.1f} ops/s, {r.errors:.1f} errors/s, {r.latency_ms:.2f} ms avg, "
        f"Redis {r.round_trips:.1f} round trips/s, {r.retries:.1f} retries/s, "
        f"block cache {pct(r.block_hit_pct)} hits, metadata cache {pct(r.meta_hit_pct)} hits, "
        f"read {r.read_mbs:.2f} MB/s, write {r.write_mbs:.2f} MB/s, "
        f"{r.events:.1f} events/s, {r.open_handles} open, {r.dirty_mb:.2f} MB dirty"
        + (f", Redis not answering for {r.redis_down_s:.0f} s" if r.redis_down_s > 0 else "")
    )
