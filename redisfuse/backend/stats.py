"""Plain counters of one open volume, and the snapshot that reads them; no metrics library.

The backend counts what it does (bytes read and written, Redis round trips,
cache hits, change events, session renewals) in plain integers, one addition
each, so that counting costs nothing a benchmark can see and a library user
pays for no metrics package. Frontends (the FUSE mount's Prometheus exporter,
``redisfuse stats``, ``--log-metrics``) read :func:`snapshot`, which may run
in another thread than the event loop (prometheus_client serves scrapes from
its own): it reads only ints and takes atomic copies (``list(d.values())``,
``dict(d)``) of the containers the loop changes, never iterates them live.

Round trips are counted by the client itself (``counting.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .connect import reachability_of, retry_stats
from .counting import redis_tally

if TYPE_CHECKING:
    from .volume import Inodes


@dataclass(slots=True)
class Counters:
    """What the backend counts as it works; kept on the volume's Context."""

    bytes_read: int = 0
    """File data returned by read() (what applications read, cache hits included)."""
    bytes_written: int = 0
    """File data accepted by write()."""
    object_bytes_loaded: int = 0
    """Stored (compressed) block bytes fetched from Redis."""
    object_bytes_stored: int = 0
    """Stored (compressed) block bytes sent to Redis by commits."""
    events_inode: int = 0
    events_entry: int = 0
    events_peer: int = 0
    events_resync: int = 0
    events_stalled: int = 0
    """Change-event subscriptions found silent (and replaced)."""
    session_renewals: int = 0
    """New sessions started after another node declared this one dead."""


@dataclass(frozen=True, slots=True)
class BackendStats:
    """A snapshot of one open volume's counters and state (see :func:`snapshot`)."""

    volume: str
    session: int
    session_alive: bool
    """Whether this node's lease is current (others count it alive)."""
    session_renewals: int
    peers: int
    open_handles: int
    dirty_bytes: int
    """Written data buffered on this node, not yet committed to Redis."""
    bytes_read: int
    bytes_written: int
    object_bytes_loaded: int
    object_bytes_stored: int
    redis_round_trips: int
    redis_commands: int
    redis_retries: int
    redis_retry_causes: dict[str, int] = field(default_factory=dict)
    block_cache_hits: int = 0
    block_cache_misses: int = 0
    block_cache_hit_bytes: int = 0
    block_cache_bytes: int = 0
    block_cache_capacity: int = 0
    block_cache_objects: int = 0
    meta_cache_hits: int = 0
    meta_cache_misses: int = 0
    events_inode: int = 0
    events_entry: int = 0
    events_peer: int = 0
    events_resync: int = 0
    events_stalled: int = 0
    """Subscriptions that went silent (no event, no keep-alive answer) and were replaced."""
    redis_up: bool = True
    """False while an outage is under way: Redis stopped answering (deadline.py)."""
    redis_down_seconds: float = 0.0
    """How long the outage under way has lasted (0 while Redis answers)."""
    redis_outages: int = 0
    """Outages so far: runs of failed requests long enough to be reported."""
    redis_outage_seconds: float = 0.0
    """Total length of the outages, the one under way included."""
    redis_timeouts: int = 0
    """Attempts that got no reply within the read timeout (retried as lost connections)."""
    redis_gave_up: int = 0
    """Requests that failed after retrying to their deadline (EIO)."""
    replica_waits: int = 0
    """fsync/close (and, on a cluster, commits) that waited for replicas (``--replicas``)."""
    replica_failures: int = 0
    """Waits that ended with too few replicas (EIO)."""
    replica_lost_changes: int = 0
    """Acknowledged changes found lost in a failover (EIO)."""


def snapshot(inodes: Inodes) -> BackendStats:
    """The volume's counters now; safe to call from a thread other than the event loop's."""
    ctx = inodes.ctx
    counters = ctx.counters
    tally = redis_tally(ctx.client)
    retries = retry_stats(ctx.client)
    block = inodes.data.cache
    meta = ctx.cache
    wait = inodes.replica_wait
    reach = reachability_of(ctx.client)
    down = reach.down_for() if reach is not None else 0.0
    return BackendStats(
        volume=ctx.keys.volume,
        session=int(ctx.session),
        session_alive=inodes.sessions.lease_valid and not ctx.declared_dead,
        session_renewals=counters.session_renewals,
        peers=len(ctx.peers),
        open_handles=inodes.open_handle_count(),
        dirty_bytes=inodes.dirty_bytes(),
        bytes_read=counters.bytes_read,
        bytes_written=counters.bytes_written,
        object_bytes_loaded=counters.object_bytes_loaded,
        object_bytes_stored=counters.object_bytes_stored,
        redis_round_trips=tally.round_trips,
        redis_commands=tally.commands,
        redis_retries=retries.total if retries is not None else 0,
        redis_retry_causes=dict(retries.causes) if retries is not None else {},
        block_cache_hits=block.hits,
        block_cache_misses=block.misses,
        block_cache_hit_bytes=block.hit_bytes,
        block_cache_bytes=block.size,
        block_cache_capacity=block.capacity,
        block_cache_objects=len(block),
        meta_cache_hits=meta.hits,
        meta_cache_misses=meta.misses,
        events_inode=counters.events_inode,
        events_entry=counters.events_entry,
        events_peer=counters.events_peer,
        events_resync=counters.events_resync,
        events_stalled=counters.events_stalled,
        redis_up=down == 0.0,
        redis_down_seconds=down,
        redis_outages=reach.outages if reach is not None else 0,
        redis_outage_seconds=(reach.outage_seconds if reach is not None else 0.0) + down,
        redis_timeouts=reach.timeouts if reach is not None else 0,
        redis_gave_up=reach.gave_up if reach is not None else 0,
        replica_waits=wait.waits if wait is not None else 0,
        replica_failures=wait.failures if wait is not None else 0,
        replica_lost_changes=wait.lost if wait is not None else 0,
    )
