"""Waits until this node's commits reached N replicas (Redis WAIT); knows nothing of files.

Redis replicates asynchronously: a write the master acknowledged may be lost
when a replica is promoted before it arrived. With ``replicas`` set, fsync
and close return only once every write of this client so far is on that
many replicas, or fail with EIO when the wait times out.

WAIT counts the writes of the connection it is sent on, and a pool spreads
commands over connections; so the wait is a barrier on one connection: a
zero HINCRBY of the session's ``acked`` count (a write that changes nothing
but still travels down the one ordered replication stream) and WAIT right
behind it. Once a replica has acknowledged that write, it has everything the
master ran before it, including every commit this node saw acknowledged.

Unless the master that acknowledged them is gone: a barrier that meets a
failover is retried, and then runs at the promoted replica, which may lack
the last commits. The zero HINCRBY also reads how many of the session's
mutating requests the answering server has seen succeed (``rq:SID`` in
keys.py); fewer than this node received means acknowledged changes were
lost, and fsync says so with EIO instead of vouching for them.
"""

from __future__ import annotations

import errno
import logging
from typing import NoReturn

from redis.exceptions import RedisError

from ..errors import FSError
from .context import Context
from .redis_errors import redis_error

log = logging.getLogger(__name__)

ACKED = "acked"
"""The field of ``rq:SID`` counting the session's successful mutating requests."""


class ReplicaWait:
    """The barrier fsync and close go through when ``--replicas`` asks for it."""

    def __init__(self, ctx: Context, replicas: int, timeout: float):
        self.ctx = ctx
        self.client = ctx.client
        self.keys = ctx.keys
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        self.address = ctx.address
        self.waits = 0
        self.failures = 0
        self.lost = 0
        """Acknowledged changes found missing after a failover (reported with EIO)."""

    def __repr__(self) -> str:
        return (
            f"<ReplicaWait replicas={self.replicas} timeout={self.timeout_ms}ms "
            f"waits={self.waits} failures={self.failures} lost={self.lost}>"
        )

    async def confirm(self) -> None:
        """Return once ``replicas`` replicas have every write so far; EIO on timeout,
        or when acknowledged changes were lost in a failover."""
        if self.replicas <= 0:
            return
        self.waits += 1
        expected = self.ctx.acked
        try:
            reached, seen = await self.reached()
        except RedisError as exc:
            raise redis_error(exc, self.address) from exc
        if seen < expected:
            self._lost(expected - seen)
        if reached < self.replicas:
            self.too_few(reached)

    def too_few(self, reached: int) -> NoReturn:
        """Report a wait that ended with fewer than ``replicas`` replicas (EIO)."""
        self.failures += 1
        log.warning(
            "write reached %d of %d replicas within %.1f s (Redis at %s): "
            "fsync/close fail with EIO; check the replicas' links (INFO replication)",
            reached,
            self.replicas,
            self.timeout_ms / 1000,
            self.address,
        )
        raise FSError(
            errno.EIO,
            f"write reached {reached} of {self.replicas} replicas within "
            f"{self.timeout_ms / 1000:.1f} s",
        )

    def _lost(self, missing: int) -> None:
        """Report changes the server no longer has (once: the count starts over from
        what the server has, so the next fsync vouches only for later changes)."""
        self.lost += missing
        self.ctx.acked -= missing
        log.error(
            "%d change(s) this mount saw acknowledged are missing at Redis %s: the master "
            "failed before they reached a replica; fsync/close fail with EIO",
            missing,
            self.address,
        )
        raise FSError(
            errno.EIO,
            f"{missing} acknowledged change(s) were lost in a Redis failover",
        )

    def queue_count(self, pipe: object) -> None:
        """Queue the barrier write that reads the server's count (see the docstring)."""
        pipe.hincrby(self.keys.requests(self.ctx.session), ACKED, 0)  # type: ignore[attr-defined]

    async def reached(self) -> tuple[int, int]:
        """How many replicas have every write of this client so far (the barrier), and
        how many successes of the session the server has seen."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_count(pipe)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        seen, reached = await pipe.execute()
        return int(reached), int(seen)

    async def aclose(self) -> None:
        """Release what the barrier holds (nothing here: it uses the volume's client)."""
