"""Builds the ``redis.asyncio`` client from a URL or from host/port options.

Connection faults are configuration: the read timeout, the retry deadline
(deadline.py bounds every request by it) and redis-py's jittered exponential
backoff live here, and the first PING turns an unreachable server into one
clear error that names the address.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from ..errors import BackendUnavailable
from .cluster import is_cluster, is_cluster_url, make_cluster_client, set_deadline_retry
from .counting import CountingRedis
from .deadline import DeadlineRetry, Reachability, RetryStats
from .lane import Lanes
from .redis_errors import redis_error
from .transport import SENTINEL_SCHEMES, redact, scheme_of, sentinel_client, tls_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """Where the volume's Redis is and how patiently to talk to it."""

    url: str | None = None
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    password: str | None = None
    read_timeout: float = 5.0
    """A request with no reply for this long is sent again, as after a lost connection
    (deadline.py); the longest a silent Redis holds one attempt."""
    connect_timeout: float = 5.0
    """Longest wait for a TCP (and TLS) connection; never more than ``read_timeout``."""
    retry_deadline: float = 30.0
    """How long a request keeps retrying while Redis is unreachable or silent before it
    fails (EIO): a request waits at most this plus one ``read_timeout``."""
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


def retry_stats(client: Redis) -> RetryStats | None:
    """The retry counters of a client made by :func:`make_client`."""
    retry = client.get_retry()
    return retry.stats if isinstance(retry, DeadlineRetry) else None


def reachability_of(client: Redis) -> Reachability | None:
    """What the requests of a client made by :func:`make_client` saw of Redis (deadline.py)."""
    retry = client.get_retry()
    return retry.reach if isinstance(retry, DeadlineRetry) else None


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


MAX_ATTEMPTS = 1_000_000
"""The deadline bounds the retries, not a count (except for the first PING)."""


def read_timeout(options: RedisOptions) -> float:
    """The socket timeout of every request: ``read_timeout``, raised with ``replicas``
    because a WAIT for replicas holds its connection up to ``replica_timeout``."""
    return max(options.read_timeout, options.replica_timeout + 1 if options.replicas else 0)


def deadline_retry(options: RedisOptions, retries: int = MAX_ATTEMPTS) -> DeadlineRetry:
    """The retry of a client: every request retries for ``retry_deadline`` (deadline.py)."""
    reach = Reachability(options.address, options.retry_deadline, read_timeout(options))
    backoff = ExponentialWithJitterBackoff(base=options.retry_base, cap=1.0)
    return DeadlineRetry(backoff, retries, deadline=options.retry_deadline, reach=reach)


def make_client(options: RedisOptions, retries: int = MAX_ATTEMPTS) -> Redis:
    """Create (but do not yet connect) a binary-safe client with retries, counting its
    round trips (counting.py; a cluster client counts in cluster.py)."""
    retry = deadline_retry(options, retries)
    timeout = read_timeout(options)
    common: dict[str, Any] = {
        "decode_responses": False,
        # redis-py's own timer per read: what bounds an attempt on a silent server.
        "socket_timeout": timeout,
        "socket_connect_timeout": min(options.connect_timeout, timeout),
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
    client: CountingRedis
    if options.url:
        client = cast(CountingRedis, CountingRedis.from_url(options.url, **auth, **common, **tls))
    else:
        client = CountingRedis(
            host=options.host,
            port=options.port,
            db=options.db,
            ssl=bool(tls),
            **auth,
            **common,
            **tls,
        )
    if retries == MAX_ATTEMPTS:  # (not the first PING's client)
        client.lanes = lanes_for(client, options, retry)
    return client


def lanes_for(client: CountingRedis, options: RedisOptions, retry: DeadlineRetry) -> Lanes:
    """The lean path of a single server's client (lane.py), on connections made as the
    client's pool makes them, but tried once each: the lanes do their own retrying."""
    pool = client.connection_pool

    def connection() -> AbstractConnection:
        kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        connection: AbstractConnection = pool.connection_class(**kwargs)
        return connection

    return Lanes(
        connection,
        read_timeout=options.read_timeout,
        deadline=options.retry_deadline,
        reach=retry.reach,
        on_retry=retry.stats.note,
        backoff_base=options.retry_base,
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
        set_deadline_retry(client, deadline_retry(options))
        return client
    await client.aclose()
    return make_client(options)
