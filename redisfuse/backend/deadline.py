"""Bounds every Redis request by the retry deadline, and tells when Redis stops answering.

A request (one command, or one pipeline) that fails with a lost connection, a
refusal, a reset, or no reply within the read timeout (the client's
``socket_timeout``) is sent again with jittered backoff until ``deadline``
seconds after it was first sent; then it fails (EIO at the FUSE boundary).
So a request waits at most the deadline plus one read timeout, whatever
Redis does. Retrying a mutating script is safe: its request id makes it run
once (lib.lua ``once()``).

Costs are per stalled request, not per request: the fast path is one
``time.monotonic()``, a context variable set and reset, and one attribute
test. Only a failed attempt pays for more: the next attempts run in a cancel
scope that ends at the deadline plus one read timeout, so an attempt that
reconnects, re-authenticates and pings cannot outlast it.

redis-py nests retries: a connection's reconnect and its health-check PING
run their own ``call_with_retry`` inside an attempt of the request's. The
deadline lives in a context variable, so the nested calls retry only until
the enclosing request's deadline, never for a deadline of their own; the
cluster client's inner retry loop asks the same variable through
:class:`DeadlineBackoff`.

:class:`Reachability` is what the retries of one client saw: it logs one
WARNING when Redis stops answering and one INFO when it answers again, with
how long it was gone, and counts outages for the metrics. Once a request has
failed at its deadline, the outage is known: until Redis answers again, each
request gets one attempt (bounded by the read timeout) instead of a deadline
of its own, so that the clean-up after a failure and the requests queued
behind it fail within a read timeout too.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff
from redis.exceptions import TimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

WARN_AFTER_S = 1.0
"""A run of failures (refused, reset) is an outage worth a WARNING once it lasts this long;
one lost connection retried at once is routine (and counted, not logged)."""

_UNTIL: ContextVar[float] = ContextVar("redisfuse_redis_until", default=0.0)
"""The deadline (monotonic) of the Redis request being sent in this task, or 0."""


@contextmanager
def request_deadline(seconds: float) -> Iterator[float]:
    """The deadline of a request that starts now, unless one is already running (nested)."""
    until = _UNTIL.get()
    if until:
        yield until
        return
    until = time.monotonic() + seconds
    token = _UNTIL.set(until)
    try:
        yield until
    finally:
        _UNTIL.reset(token)


@dataclass(slots=True)
class RetryStats:
    """How often this client retried a command, by the error that made it retry."""

    total: int = 0
    causes: Counter[str] = field(default_factory=Counter)

    def __repr__(self) -> str:
        return f"<RetryStats {self.total} {dict(self.causes)}>"

    def note(self, error: Exception) -> None:
        """A request is sent again after ``error``."""
        self.total += 1
        self.causes[type(error).__name__] += 1
        log.debug("Redis command retried after %s: %s", type(error).__name__, error)


class Reachability:
    """Whether Redis answers, as the requests of one client see it; logs each outage once.

    Shared by every connection of the client (redis-py gives each connection a
    copy of the retry, and the copies share this). Its numbers are plain
    attributes, so a snapshot may be read from another thread (stats.py).
    """

    def __init__(self, address: str, deadline: float, read_timeout: float) -> None:
        self.address = address
        self.deadline = deadline
        self.read_timeout = read_timeout
        self.failing_since: float | None = None
        """When (monotonic) the current run of failures started; None while Redis answers."""
        self.warned = False
        """The current run of failures was reported (an outage)."""
        self.unavailable = False
        """A request reached its deadline in this outage: later ones get one attempt each."""
        self.outages = 0
        """Outages reported so far (the one under way included)."""
        self.outage_seconds = 0.0
        """Length of the outages that ended."""
        self.timeouts = 0
        """Attempts that got no reply within the read timeout."""
        self.gave_up = 0
        """Requests that failed at their deadline."""

    def __repr__(self) -> str:
        state = "answering" if self.failing_since is None else f"failing {self.down_for():.1f}s"
        return f"<Reachability {self.address} {state} outages={self.outages}>"

    def down_for(self) -> float:
        """Seconds the outage under way has lasted (0 when none was reported)."""
        since = self.failing_since
        return time.monotonic() - since if since is not None and self.warned else 0.0

    def failed(self, error: Exception) -> None:
        """An attempt failed; reports the outage once it has lasted long enough."""
        now = time.monotonic()
        timed_out = isinstance(error, TimeoutError)
        if timed_out:
            self.timeouts += 1
        if self.failing_since is None:
            # A timeout means nothing came for a whole read timeout already.
            self.failing_since = now - (self.read_timeout if timed_out else 0.0)
        if not self.warned and now - self.failing_since >= min(WARN_AFTER_S, self.deadline):
            self._warn(error, now)

    def deadline_passed(self, error: Exception) -> None:
        """A request failed at its deadline: the outage is known (see the module docstring)."""
        self.gave_up += 1
        self.unavailable = True
        if not self.warned:
            self._warn(error, time.monotonic())

    def _warn(self, error: Exception, now: float) -> None:
        assert self.failing_since is not None
        self.warned = True
        self.outages += 1
        gone = now - self.failing_since
        if isinstance(error, TimeoutError):
            log.warning(
                "Redis at %s not answering for %.0f s; retrying until the deadline (%g s)",
                self.address,
                gone,
                self.deadline,
            )
        else:
            log.warning(
                "Redis at %s unreachable for %.1f s (%s); retrying until the deadline (%g s)",
                self.address,
                gone,
                error,
                self.deadline,
            )

    def answered(self) -> None:
        """A reply came: an outage under way is over."""
        since = self.failing_since
        if since is None:
            return
        if self.warned:
            gone = time.monotonic() - since
            self.outage_seconds += gone
            log.info("Redis at %s answering again after %.1f s", self.address, gone)
        self.failing_since = None
        self.warned = False
        self.unavailable = False


class DeadlineRetry(Retry):
    """redis-py's retry, bounded by time instead of a count, counting and reporting
    what it retries (see the module docstring).

    ``retries`` stays as a cap on the number of attempts (the first PING at
    start-up uses a small one); ``deadline`` is the bound that matters.
    """

    def __init__(
        self,
        backoff: AbstractBackoff,
        retries: int,
        *,
        deadline: float,
        reach: Reachability,
    ) -> None:
        super().__init__(backoff, retries)
        self.deadline = deadline
        self.reach = reach
        self.stats = RetryStats()

    def __deepcopy__(self, memo: dict[int, Any]) -> DeadlineRetry:
        """redis-py gives each connection a deep copy: they share one tally and Reachability."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in vars(self).items():
            shared = name in ("stats", "reach")
            setattr(clone, name, value if shared else copy.deepcopy(value, memo))
        return clone

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        until = _UNTIL.get()
        outer = not until
        if outer:
            until = time.monotonic() + self.deadline
            token = _UNTIL.set(until)
        try:
            try:
                result = await do()
            except self._supported_errors as error:
                first = error
            else:
                # A pub/sub read that timed out on purpose returns None: not an answer.
                if self.reach.failing_since is not None and result is not None:
                    self.reach.answered()
                return result
            return await self._again(
                do, fail, is_retryable, with_failure_count, first, until, outer
            )
        finally:
            if outer:
                _UNTIL.reset(token)

    async def _again(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None,
        with_failure_count: bool,
        error: Exception,
        until: float,
        outer: bool,
    ) -> T:
        """The attempts after a failed one, until one succeeds or the deadline passes."""
        reach = self.reach
        read_timeout = reach.read_timeout
        self._backoff.reset()  # type: ignore[no-untyped-call]
        failures = 0
        while True:
            retryable = (self._is_retryable is None or self._is_retryable(error)) and (
                is_retryable is None or is_retryable(error)
            )
            failures += 1
            if retryable:
                self.stats.note(error)
                reach.failed(error)
            await (fail(error, failures) if with_failure_count else fail(error))
            now = time.monotonic()
            if not retryable or failures > self._retries:
                raise error  # (a count is the bound of the first PING only: not an outage)
            if now >= until or reach.unavailable:
                if outer:
                    reach.deadline_passed(error)
                raise error
            await anyio.sleep(min(self._backoff.compute(failures), until - now))
            # Every attempt from here on ends by the deadline plus one read timeout.
            with anyio.move_on_after(max(until - time.monotonic(), 0.0) + read_timeout) as scope:
                try:
                    result = await do()
                except self._supported_errors as exc:
                    error = exc
                    continue
            if scope.cancelled_caught:
                error = TimeoutError(
                    f"no reply from Redis at {reach.address} within the retry deadline"
                )
                continue
            reach.answered()
            return result


class DeadlineBackoff(AbstractBackoff):
    """A backoff for redis-py's own retry loops (the cluster client's), which count
    attempts: it ends them once the request's deadline has passed (DeadlineRetry
    sets it), by raising the TimeoutError the deadline means."""

    def __init__(self, inner: AbstractBackoff) -> None:
        self.inner = inner

    def reset(self) -> None:
        self.inner.reset()  # type: ignore[no-untyped-call]

    def compute(self, failures: int) -> float:
        until = _UNTIL.get()
        now = time.monotonic()
        if until and now >= until:
            raise TimeoutError("no reply from the Redis cluster within the retry deadline")
        delay = self.inner.compute(failures)
        return min(delay, until - now) if until else delay
