"""What statfs reports: the volume's usage against the room it really has.

A volume lives in Redis memory, so its size is Redis' ``maxmemory`` when one is
set, else the machine's memory as Redis reports it; a volume quota (settings
``quota_bytes`` and ``quota_inodes``, enforced by the commit and create
scripts) narrows that. Free space is the least of the quota's room and Redis'
room (memory used counts every volume and Redis' own overhead, and data is
stored compressed, so it is an estimate, as on any compressing filesystem).

The usage counters are read on every call (one round trip, as before); Redis'
memory figures and the quotas ride along in that same round trip at most once
a second, so a ``df`` in a loop neither costs a second round trip nor makes
Redis compute its INFO each time. On a cluster the memory figures are those
of all masters summed, read in a round trip of their own. Between two readings, the memory used is
moved by what the volume's byte count moved, so a write shows at once.

The same INFO reading carries Redis' ``maxmemory_policy`` (of every master on a
cluster), handed to the volume's health (health.py): a policy changed to one
that evicts keys stops writes. When no df has read it for a second, the
session's housekeeping reads the policy itself (:meth:`Capacity.poll`, one
INFO memory per round), so a change is noticed within a housekeeping interval
at no cost to requests. That reading leaves statfs' figures alone: refreshed
in the background, they would also move with whatever else Redis frees or
stores meanwhile, and a write would no longer show in df as its own size.
"""

from __future__ import annotations

import time
from typing import Any

from .cluster import is_cluster, memory_info
from .context import Context
from .health import policies_of
from .model import StatFs

CACHE_S = 1.0
"""How long Redis' memory figures and the quotas are reused."""

NO_INODE_QUOTA = 1 << 40
"""Inodes reported without an inode quota (metadata is bounded by memory, not a table)."""


def _int(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def compute(
    block_size: int,
    usage: list[Any],
    quota: list[Any],
    memory: dict[str, Any],
    bytes_since: int = 0,
) -> StatFs:
    """Build the answer from ``usage`` (inodes, bytes), ``quota`` (bytes, inodes)
    and Redis' INFO memory section, taken when the volume held ``bytes_since``
    fewer bytes than now (so that a write shows in df at once, not a second on)."""
    inodes_used, bytes_used = _int(usage[0]), _int(usage[1])
    quota_bytes, quota_inodes = _int(quota[0]), _int(quota[1])
    used_memory = max(_int(memory.get("used_memory")) + bytes_since, 0)
    room = _int(memory.get("maxmemory")) or _int(memory.get("total_system_memory"))
    redis_free = max(room - used_memory, 0)
    if quota_bytes:
        total = quota_bytes
        free = min(max(quota_bytes - bytes_used, 0), redis_free)
    else:
        total = room
        free = redis_free
    return StatFs(
        block_size=block_size,
        bytes_used=bytes_used,
        inodes_used=inodes_used,
        bytes_total=total,
        bytes_free=free,
        inodes_total=quota_inodes or NO_INODE_QUOTA,
        quota_bytes=quota_bytes,
        quota_inodes=quota_inodes,
    )


class Capacity:
    """Reads the volume's statfs answer, keeping Redis' memory figures for a second."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._quota: list[Any] = [0, 0]
        self._memory: dict[str, Any] = {}
        self._bytes_then = 0
        """The volume's byte count when ``_memory`` was read."""
        self._at = -CACHE_S
        self._policy_at = -CACHE_S
        """When the eviction policy was last read (by statfs or by poll)."""

    def __repr__(self) -> str:
        return f"<Capacity quota={self._quota} memory_age={time.monotonic() - self._at:.1f}s>"

    async def statfs(self) -> StatFs:
        """Usage and room; this node's pending releases are sent first, so that
        space freed by a last close shows at once."""
        ctx = self.ctx
        await ctx.flush_releases()
        stale = time.monotonic() - self._at >= CACHE_S
        with ctx.guard():
            pipe = ctx.client.pipeline(transaction=False)
            pipe.hmget(ctx.keys.usage, ["inodes", "bytes"])
            if stale:
                pipe.hmget(ctx.keys.setting, ["quota_bytes", "quota_inodes"])
                if not is_cluster(ctx.client):
                    pipe.info("memory")
            results = await pipe.execute()
            if stale and is_cluster(ctx.client):
                results.append(await memory_info(ctx.client))
        bytes_now = _int(results[0][1])
        if stale:
            self._quota = results[1]
            if is_cluster(ctx.client):
                self._memory, policies = results[2]
            else:
                self._memory = results[2]
                policies = policies_of({ctx.address: self._memory})
            self._bytes_then = bytes_now
            self._at = self._policy_at = time.monotonic()
            ctx.health.note_policies(policies)
        return compute(
            ctx.settings.block_size,
            results[0],
            self._quota,
            self._memory,
            bytes_now - self._bytes_then,
        )

    async def poll(self) -> None:
        """Read Redis' eviction policy if no reading is CACHE_S fresh (housekeeping: a
        policy changed under the volume is noticed without a df)."""
        if time.monotonic() - self._policy_at < CACHE_S:
            return
        ctx = self.ctx
        with ctx.guard():
            if is_cluster(ctx.client):
                _, policies = await memory_info(ctx.client)
            else:
                memory = await ctx.client.info("memory")
                policies = policies_of({ctx.address: memory})
        self._policy_at = time.monotonic()
        ctx.health.note_policies(policies)

    async def set_quota(self, *, bytes_: int | None = None, inodes: int | None = None) -> None:
        """Set (positive) or remove (0) the volume's byte and inode quotas."""
        ctx = self.ctx
        fields: dict[Any, Any] = {
            name: value
            for name, value in (("quota_bytes", bytes_), ("quota_inodes", inodes))
            if value is not None
        }
        if not fields:
            return
        with ctx.guard():
            await ctx.client.hset(ctx.keys.setting, mapping=fields)
        self._at = -CACHE_S
