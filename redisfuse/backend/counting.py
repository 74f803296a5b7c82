"""Counts the requests a Redis client sends: round trips (one command, or a pipeline).

Round trips are counted where every request of the backend leaves:
:class:`CountingRedis` (what ``connect.make_client`` builds) counts each
command it sends and each pipeline it executes, once (a pipeline of 40
commands is one round trip); a cluster client (``cluster.DeadlineCluster``
and its pipeline) keeps the same tally. redis-py's resends after a broken connection are
counted apart, by ``deadline.DeadlineRetry``. The event subscription's reads are
not round trips and are not counted here (``stats.Counters`` counts events).
The cost is two integer additions per request, and no extra frame in the await.

A client given :class:`~redisfuse.backend.lane.Lanes` (connect.py does, for a
single server) sends the commands those may carry, alone or as a pipeline,
through them instead of through redis-py's pool and retry (lane.py says why);
replies are turned into values by redis-py's own response callbacks, as
redis-py does, so callers see no difference.
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from .lane import LANE_COMMANDS, Lanes

_EMPTY_RESPONSE = "EMPTY_RESPONSE"
_DROPPED_OPTIONS = ("keys", "NEVER_DECODE", _EMPTY_RESPONSE)
"""Options redis-py's commands pass to its own reply parsing, not to the callbacks."""


@dataclass(slots=True)
class RedisTally:
    """Requests one client sent: round trips (commands alone or pipelines) and commands."""

    round_trips: int = 0
    commands: int = 0


class CountingRedis(Redis):
    """``redis.asyncio.Redis`` that tallies each command and pipeline it sends."""

    lanes: Lanes | None = None
    """The lean path for the commands it may carry (None: all go through redis-py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = RedisTally()

    def execute_command(self, *args: Any, **options: Any) -> Coroutine[Any, Any, Any]:
        # Not a coroutine itself: returning redis-py's adds no frame to the await.
        tally = self.tally
        tally.round_trips += 1
        tally.commands += 1
        if self.lanes is not None and args[0] in LANE_COMMANDS:
            return self._on_lane(self.lanes, args, options)
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    async def _on_lane(self, lanes: Lanes, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        (reply,) = await lanes.send((args,))
        return parse_reply(self.response_callbacks, args[0], reply, options, raise_errors=True)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = CountingPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )
        pipe.tally = self.tally
        pipe.lanes = self.lanes
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.lanes is not None:
            await self.lanes.aclose()
        await super().aclose(close_connection_pool)


class CountingPipeline(Pipeline):
    """A pipeline whose execute() counts one round trip for all its commands."""

    tally: RedisTally
    lanes: Lanes | None = None

    def execute(self, raise_on_error: bool = True) -> Coroutine[Any, Any, list[Any]]:
        stack = self.command_stack
        if stack:
            self.tally.round_trips += 1
            self.tally.commands += len(stack)
            lanes = self.lanes
            if (
                lanes is not None
                and not self.is_transaction
                and not self.watching
                and all(args[0] in LANE_COMMANDS for args, _ in stack)
            ):
                self.command_stack = []
                return self._on_lane(lanes, stack, raise_on_error)
        return super().execute(raise_on_error)

    async def _on_lane(self, lanes: Lanes, stack: list[Any], raise_on_error: bool) -> list[Any]:
        replies = await lanes.send([args for args, _ in stack])
        callbacks = self.response_callbacks
        out = [
            parse_reply(callbacks, args[0], reply, options, raise_errors=False)
            for (args, options), reply in zip(stack, replies, strict=True)
        ]
        if raise_on_error:
            for result in out:
                if isinstance(result, ResponseError):
                    raise result
        return out


def parse_reply(
    callbacks: Mapping[Any, Any],
    name: Any,
    reply: Any,
    options: dict[str, Any],
    *,
    raise_errors: bool,
) -> Any:
    """A raw reply as redis-py's ``parse_response`` would return it (RESP2, bytes):
    an error reply raised (or kept in place, in a pipeline), else the command's
    response callback applied."""
    if isinstance(reply, ResponseError):
        if _EMPTY_RESPONSE in options:
            return options[_EMPTY_RESPONSE]
        if raise_errors:
            raise reply
        return reply
    if options:
        options = {k: v for k, v in options.items() if k not in _DROPPED_OPTIONS}
    callback = callbacks.get(name)
    return reply if callback is None else callback(reply, **options)


def redis_tally(client: Redis) -> RedisTally:
    """The tally of a client made by ``make_client`` (an empty one for any other client)."""
    tally = getattr(client, "tally", None)
    return tally if isinstance(tally, RedisTally) else RedisTally()
