"""Builds the ``redis.asyncio`` client from a URL or from host/port options.

Connection faults are configuration: socket timeouts and redis-py's jittered
exponential retry live here, and the first PING turns an unreachable server
into one clear error that names the address.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from ..errors import BackendUnavailable
from .cluster import is_cluster, is_cluster_url, make_cluster_client, set_deadline_retry
from .counting import CountingRedis
from .redis_errors import redis_error
from .transport import SENTINEL_SCHEMES, redact, scheme_of, sentinel_client, tls_kwargs

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Where the volume's Redis is and how patiently to talk to it."""

    url: str | None = None
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = None
    socket_timeout: float = 10.0
    connect_timeout: float = 5.0
    retry_deadline: float = 30.0
    """How long an operation keeps retrying while Redis is unreachable before failing (EIO)."""
    retry_base: float = 0.05
    """First backoff between retries (doubling, jittered, capped at 1 s)."""
    username: str | None = None
    """ACL user (a URL's own user wins); see ``redisfuse acl``."""
    tls_ca: str | None = None
    """CA file to verify the server with (``rediss://``; default: the system's CAs)."""
    tls_cert: str | None = None
    """Client certificate, for servers run with ``tls-auth-clients yes``."""
    tls_key: str | None = None
    """The client certificate's private key."""
    replicas: int = 0
    """fsync and close wait until a commit reached this many replicas (Redis WAIT)."""
    replica_timeout: float = 10.0
    """How long that wait may take before fsync/close fail with EIO."""

    @property
    def address(self) -> str:
        """The address as a user would recognise it (never shows a password)."""
        if self.url:
            return redact(self.url)
        return f"{self.host}:{self.port}/{self.db}"


@dataclass(slots=True)
class RetryStats:
    """How often this client retried a command, by the error that made it retry."""

    total: int = 0
    causes: Counter[str] = field(default_factory=Counter)

    def __repr__(self) -> str:
        return f"<RetryStats {self.total} {dict(self.causes)}>"


class CountingRetry(Retry):
    """redis-py's retry, counting each retry and its cause and logging it at DEBUG.

    redis-py resends the same command (or the whole pipeline) after a broken
    connection, also when Redis had run it and only the reply was lost; the
    mutating scripts make that safe (lib.lua's once()).
    """

    def __init__(self, backoff: ExponentialWithJitterBackoff, retries: int) -> None:
        super().__init__(backoff, retries)
        self.stats = RetryStats()

    def __deepcopy__(self, memo: dict[int, Any]) -> CountingRetry:
        """redis-py gives each connection a deep copy: they must share one tally."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        for name, value in vars(self).items():
            setattr(clone, name, value if name == "stats" else copy.deepcopy(value, memo))
        return clone

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        async def counted(error: Exception, *count: int) -> Any:
            self.stats.total += 1
            self.stats.causes[type(error).__name__] += 1
            log.debug("Redis command retried after %s: %s", type(error).__name__, error)
            return await fail(error, *count)

        return await super().call_with_retry(do, counted, is_retryable, with_failure_count)


def retry_stats(client: Redis) -> RetryStats | None:
    """The retry counters of a client made by :func:`make_client`."""
    retry = client.get_retry()
    return retry.stats if isinstance(retry, CountingRetry) else None


def _no_client_setinfo() -> dict[str, Any]:
    """redis-py's arguments that stop it sending CLIENT SETINFO on every connection.

    A user confined by ``redisfuse acl`` cannot be allowed it (``client|setinfo``
    is unknown to Redis 7.0's ACL, and all of CLIENT is too much); newer redis-py
    spells "off" ``driver_info=None`` and warns about the older spelling.
    """
    if importlib.util.find_spec("redis.driver_info") is not None:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


NO_CLIENT_SETINFO = _no_client_setinfo()

FIRST_PING_RETRIES = 2
"""A first PING whose connection broke is sent again this often (not the whole deadline)."""


def counting_retry(options: RedisOptions, retries: int | None = None) -> CountingRetry:
    """The retry of a client: by default, for about ``retry_deadline``."""
    # Backoff doubles from 50 ms to a 1 s cap, so the retries span about retry_deadline.
    if retries is None:
        retries = int(options.retry_deadline) + 5 if options.retry_deadline > 0 else 0
    return CountingRetry(ExponentialWithJitterBackoff(base=options.retry_base, cap=1.0), retries)


def make_client(options: RedisOptions, retries: int | None = None) -> Redis:
    """Create (but do not yet connect) a binary-safe client with retries, counting its
    round trips (counting.py; a cluster client counts in cluster.py)."""
    retry = counting_retry(options, retries)
    common: dict[str, Any] = {
        "decode_responses": False,
        # A WAIT for replicas blocks its connection up to replica_timeout.
        "socket_timeout": max(
            options.socket_timeout, options.replica_timeout + 1 if options.replicas else 0
        ),
        "socket_connect_timeout": options.connect_timeout,
        "retry": retry,
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
        **NO_CLIENT_SETINFO,
    }
    if scheme_of(options.url) in SENTINEL_SCHEMES:
        return sentinel_client(options, common)
    tls = tls_kwargs(options)
    auth: dict[str, Any] = {"username": options.username, "password": options.password}
    if is_cluster_url(options.url):
        assert options.url is not None
        given = {k: v for k, v in auth.items() if v is not None}
        return make_cluster_client(
            options.url, retry, options.retry_deadline, {**common, **given, **tls}
        )
    if options.url:
        return CountingRedis.from_url(options.url, **auth, **common, **tls)
    return CountingRedis(
        host=options.host, port=options.port, db=options.db, ssl=bool(tls), **auth, **common, **tls
    )


def _reset_without_client_certificate(exc: BaseException, options: RedisOptions) -> bool:
    """Whether a first PING over TLS, sent without a client certificate, met a reset."""
    url = options.url or ""
    if not url.startswith("rediss") or options.tls_cert or "ssl_certfile" in url:
        return False
    return "reset by peer" in str(exc) or isinstance(exc.__cause__, ConnectionResetError)


async def connect(options: RedisOptions) -> Redis:
    """Return a client that has answered PING, or raise the FSError redis_error() gives.

    The first PING does not wait out the retry deadline: a server that is not
    there at start-up is a configuration error to report at once (after two
    quick retries, for a connection that broke on the way).
    """
    try:
        client = make_client(options, retries=FIRST_PING_RETRIES)
    except ValueError as exc:
        raise BackendUnavailable(f"invalid Redis URL {options.address!r}: {exc}") from exc
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        error = redis_error(exc, options.address)
        if _reset_without_client_certificate(exc, options):
            # TLS 1.3 finishes the client's side of the handshake before the server
            # checks for a certificate: a refusal then arrives as a reset, not an alert.
            error = BackendUnavailable(
                f"{error.strerror} (a TLS server that requires a client certificate "
                "resets the connection: pass --redis-tls-cert and --redis-tls-key)"
            )
        raise error from exc
    if is_cluster(client):
        # Setting up a cluster client (slot map, command table) costs about 0.1 s
        # of CPU: keep this one, now with the retries of the whole deadline.
        set_deadline_retry(client, counting_retry(options))
        return client
    await client.aclose()
    return make_client(options)
