"""``--metrics HOST:PORT``: serves a mount's snapshot as Prometheus metrics over HTTP.

prometheus_client (the ``metrics`` extra) serves ``/metrics`` from its own
thread. Nothing is counted through it: at each scrape a custom collector takes
one snapshot (``metrics.MountMetrics``) and turns it into metric families, so
the request path pays for plain integers only, never for prometheus_client's
locks. Imports neither pyfuse3 nor prometheus_client at load time, so that
the command line can check for the extra before anything else. Every metric
carries the labels ``mountpoint`` and ``volume`` (several mounts on one host
scrape into one Prometheus).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import EXIT_USAGE, UsageError
from .opstats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .metrics import MountMetrics

log = logging.getLogger(__name__)

MISSING = "--metrics needs prometheus_client: pip install 'redisfuse[metrics]'"

_BOUNDS = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]

COUNTERS = (
    ("redis_round_trips", "redis_round_trips", "Requests sent to Redis (a pipeline counts once)"),
    ("redis_commands", "redis_commands", "Redis commands sent (each command of a pipeline)"),
    ("redis_retries", "redis_retries", "Redis requests resent after a broken connection"),
    ("redis_timeouts", "redis_timeouts", "Redis requests with no reply within the read timeout"),
    ("redis_gave_up", "redis_gave_up", "Redis requests that failed at the retry deadline (EIO)"),
    ("redis_outages", "redis_outages", "Times Redis stopped answering (reported in the log)"),
    ("redis_outage_seconds", "redis_outage_seconds", "Seconds Redis was not answering"),
    ("events_stalled", "events_stalled", "Change-event subscriptions replaced after silence"),
    ("block_cache_hits", "block_cache_hits", "Blocks found in the block cache"),
    ("block_cache_misses", "block_cache_misses", "Blocks fetched from Redis"),
    ("block_cache_hit_bytes", "block_cache_hit_bytes", "Bytes of blocks found in the cache"),
    ("meta_cache_hits", "meta_cache_hits", "Attribute and entry lookups answered by the cache"),
    ("meta_cache_misses", "meta_cache_misses", "Attribute and entry lookups the cache missed"),
    ("read_bytes", "bytes_read", "File data returned to read requests"),
    ("written_bytes", "bytes_written", "File data accepted by write requests"),
    ("redis_loaded_bytes", "object_bytes_loaded", "Stored (compressed) block bytes fetched"),
    ("redis_stored_bytes", "object_bytes_stored", "Stored (compressed) block bytes sent"),
    ("session_renewals", "session_renewals", "New sessions after this one was declared dead"),
    ("replica_waits", "replica_waits", "Waits for replicas (--replicas: fsync, close)"),
    ("replica_failures", "replica_failures", "Waits that ended with too few replicas (EIO)"),
    ("replica_lost_changes", "replica_lost_changes", "Acknowledged changes lost in a failover"),
)
"""(metric name without prefix, BackendStats field, help) of the backend's counters."""

GAUGES = (
    ("redis_up", "redis_up", "0 while Redis is not answering (an outage under way)"),
    ("session_id", "session", "This mount's session id in the volume"),
    ("session_alive", "session_alive", "1 while this mount's session lease is current"),
    ("peers", "peers", "Other live sessions of the volume"),
    ("open_handles", "open_handles", "Open file handles"),
    ("dirty_bytes", "dirty_bytes", "Written data buffered here, not yet committed to Redis"),
    ("block_cache_bytes", "block_cache_bytes", "Bytes held by the block cache"),
    ("block_cache_capacity_bytes", "block_cache_capacity", "Size limit of the block cache"),
    ("block_cache_objects", "block_cache_objects", "Blocks held by the block cache"),
)


def require() -> None:
    """Fail in one line, before mounting, when prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise UsageError(MISSING, EXIT_USAGE) from None


class SnapshotCollector:
    """Builds every metric family from one snapshot per scrape."""

    def __init__(self, metrics: MountMetrics) -> None:
        self.metrics = metrics
        self.labels = ["mountpoint", "volume"]
        self.values = [metrics.mountpoint, metrics.volume]

    def _family(self, kind: Any, name: str, doc: str, extra: tuple[str, ...] = ()) -> Any:
        return kind(f"redisfuse_{name}", doc, labels=[*self.labels, *extra])

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self.metrics.snapshot()
        base = self.values
        requests = self._family(
            CounterMetricFamily, "fuse_requests", "FUSE requests served", ("operation",)
        )
        errors = self._family(
            CounterMetricFamily,
            "fuse_errors",
            "FUSE requests that failed, by errno (a negative lookup counts as ENOENT)",
            ("operation", "errno"),
        )
        latency = self._family(
            HistogramMetricFamily,
            "fuse_request_duration_seconds",
            "Time from a FUSE request's arrival to its answer",
            ("operation",),
        )
        for op, numbers in sorted(snap["requests"].items()):
            requests.add_metric([*base, op], numbers["count"])
            for err, n in sorted(numbers["errors"].items()):
                errors.add_metric([*base, op, err], n)
            cumulative, buckets = 0, []
            for bound, n in zip(_BOUNDS, numbers["buckets"], strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([*base, op], buckets, numbers["seconds"])
        yield requests
        yield errors
        yield latency

        backend = snap["backend"]
        for name, key, doc in COUNTERS:
            family = self._family(CounterMetricFamily, name, doc)
            family.add_metric(base, backend[key])
            yield family
        for name, key, doc in GAUGES:
            family = self._family(GaugeMetricFamily, name, doc)
            family.add_metric(base, float(backend[key]))
            yield family
        events = self._family(
            CounterMetricFamily, "events", "Change events from other nodes", ("kind",)
        )
        for kind in ("inode", "entry", "peer", "resync"):
            events.add_metric([*base, kind], backend[f"events_{kind}"])
        yield events
        kernel = snap["kernel"]
        invalidations = self._family(
            CounterMetricFamily, "kernel_invalidations", "Kernel cache invalidations", ("kind",)
        )
        for kind in ("inode", "entry"):
            invalidations.add_metric([*base, kind], kernel[f"{kind}_invalidations"])
        yield invalidations
        uptime = self._family(GaugeMetricFamily, "uptime_seconds", "Seconds since the mount")
        uptime.add_metric(base, snap["uptime"])
        yield uptime


def serve(metrics: MountMetrics, host: str, port: int) -> Callable[[], None]:
    """Start the HTTP endpoint (``/metrics``); returns the function that stops it.

    A port that cannot be bound is a user mistake: one line, before mounting.
    """
    from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

    registry = CollectorRegistry()
    registry.register(SnapshotCollector(metrics))
    ProcessCollector(registry=registry)
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as exc:
        raise UsageError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}", EXIT_USAGE
        ) from exc
    log.info("serving Prometheus metrics at http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
