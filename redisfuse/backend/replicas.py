"""Waits until this node's commits reached N replicas (Redis WAIT); knows nothing of files.

Redis replicates asynchronously: a write the master acknowledged may be lost
when a replica is promoted before it arrived. With ``replicas`` set, fsync
and close return only once every write of this client so far is on that
many replicas, or fail with EIO when the wait times out.

WAIT counts the writes of the connection it is sent on, and a pool spreads
commands over connections; so the wait is a barrier on one connection: a
zero INCRBY (a write that changes nothing but still travels down the one
ordered replication stream) and WAIT right behind it. Once a replica has
acknowledged that write, it has everything the master ran before it,
including every commit this node saw acknowledged.
"""

from __future__ import annotations

import errno
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import FSError
from .keys import Keys
from .redis_errors import redis_error

log = logging.getLogger(__name__)


class ReplicaWait:
    """The barrier fsync and close go through when ``--replicas`` asks for it."""

    def __init__(self, client: Redis, keys: Keys, replicas: int, timeout: float, address: str):
        self.client = client
        self.keys = keys
        self.replicas = replicas
        self.timeout_ms = max(1, int(timeout * 1000))
        self.address = address
        self.waits = 0
        self.failures = 0

    def __repr__(self) -> str:
        return (
            f"<ReplicaWait replicas={self.replicas} timeout={self.timeout_ms}ms "
            f"waits={self.waits} failures={self.failures}>"
        )

    async def confirm(self) -> None:
        """Return once ``replicas`` replicas have every write so far; EIO on timeout."""
        if self.replicas <= 0:
            return
        self.waits += 1
        try:
            reached = await self.reached()
        except RedisError as exc:
            raise redis_error(exc, self.address) from exc
        if reached < self.replicas:
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

    async def reached(self) -> int:
        """How many replicas have every write of this client so far (the barrier)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.incrby(self.keys.counter_sess, 0)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return int((await pipe.execute())[1])

    async def aclose(self) -> None:
        """Release what the barrier holds (nothing here: it uses the volume's client)."""
