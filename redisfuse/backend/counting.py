"""Counts the requests a Redis client sends: round trips (one command, or a pipeline).

Round trips are counted where every request of the backend leaves:
:class:`CountingRedis` (what ``connect.make_client`` builds) counts each
command it sends and each pipeline it executes, once (a pipeline of 40
commands is one round trip); a cluster client (``cluster.DeadlineCluster``
and its pipeline) keeps the same tally. redis-py's resends after a broken connection are
counted apart, by ``deadline.DeadlineRetry``. The event subscription's reads are
not round trips and are not counted here (``stats.Counters`` counts events).
The cost is two integer additions per request, and no extra frame in the await.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline


@dataclass(slots=True)
class RedisTally:
    """Requests one client sent: round trips (commands alone or pipelines) and commands."""

    round_trips: int = 0
    commands: int = 0


class CountingRedis(Redis):
    """``redis.asyncio.Redis`` that tallies each command and pipeline it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = RedisTally()

    def execute_command(self, *args: Any, **options: Any) -> Coroutine[Any, Any, Any]:
        # Not a coroutine itself: returning redis-py's adds no frame to the await.
        tally = self.tally
        tally.round_trips += 1
        tally.commands += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = CountingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.tally = self.tally
        return pipe


class CountingPipeline(Pipeline):
    """A pipeline whose execute() counts one round trip for all its commands."""

    tally: RedisTally

    def execute(self, raise_on_error: bool = True) -> Coroutine[Any, Any, list[Any]]:
        if self.command_stack:
            self.tally.round_trips += 1
            self.tally.commands += len(self.command_stack)
        return super().execute(raise_on_error)


def redis_tally(client: Redis) -> RedisTally:
    """The tally of a client made by ``make_client`` (an empty one for any other client)."""
    tally = getattr(client, "tally", None)
    return tally if isinstance(tally, RedisTally) else RedisTally()
