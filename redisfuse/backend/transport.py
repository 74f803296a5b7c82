"""How the client reaches Redis: TLS settings, Sentinel discovery, and URL redaction.

connect.py decides *that* a client is built (timeouts, retries, first PING);
this module decides *how* it reaches the server for each URL scheme, one
function per scheme, and owns the one function that takes secrets out of a
URL before it is shown anywhere (logs, errors, ``redisfuse status``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from .counting import CountingRedis

if TYPE_CHECKING:
    from .connect import RedisOptions

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
"""``redis+sentinel://H:P[,H:P...]/MASTER[/DB]``; the ``rediss+`` form uses TLS throughout."""

_SECRET_QUERY = re.compile(r"((?:^|[?&;])[^=&;]*password[^=&;]*=)[^&;#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` without its password: the user-info's and any ``*password*=`` query value.

    The one place a URL is made fit to show; every log line and error message
    that names the server goes through it (via ``RedisOptions.address``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_QUERY.sub(r"\1***", url)
    netloc_end = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if found != -1:
            netloc_end = min(netloc_end, found)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hosts}" if user else f"***@{hosts}"
    tail = _SECRET_QUERY.sub(r"\1***", tail)
    return f"{scheme}://{netloc}{tail}"


def scheme_of(url: str | None) -> str:
    """The lower-case scheme of ``url`` ('' for host/port options)."""
    return url.partition("://")[0].lower() if url else ""


def uses_tls(options: RedisOptions) -> bool:
    """TLS is on for ``rediss://`` URLs, and for host/port options naming TLS files."""
    scheme = scheme_of(options.url)
    if scheme:
        return scheme.startswith("rediss")
    return any((options.tls_ca, options.tls_cert, options.tls_key))


def tls_kwargs(options: RedisOptions) -> dict[str, Any]:
    """redis-py SSL arguments from the options' CA, certificate and key files.

    Query parameters of a ``rediss://`` URL (``ssl_ca_certs=`` ...) are read by
    redis-py itself and win over these. A plain ``redis://`` URL with TLS files
    is a contradiction, refused so that a user never believes a clear-text
    connection is encrypted.
    """
    wanted = {
        "ssl_ca_certs": options.tls_ca,
        "ssl_certfile": options.tls_cert,
        "ssl_keyfile": options.tls_key,
    }
    given = {k: v for k, v in wanted.items() if v}
    if not uses_tls(options):
        if given:
            raise ValueError("TLS files were given but the URL is not rediss:// (nor rediss+...)")
        return {}
    if bool(options.tls_cert) != bool(options.tls_key):
        raise ValueError("a TLS client certificate needs its key, and a key its certificate")
    return given


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None
    query: dict[str, str]


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Split ``redis+sentinel://[USER[:PASS]@]H:P[,H:P...]/MASTER[/DB][?sentinel_password=S]``."""
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"sentinel address {item!r} is not HOST:PORT")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("the path must be /MASTER or /MASTER/DB")
    return SentinelTarget(
        sentinels=sentinels,
        master=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None,
        password=unquote(password) or None,
        query=dict(parse_qsl(parts.query)),
    )


class _FollowMaster(SentinelManagedConnection):
    """A Sentinel connection that asks the sentinels again whenever it reconnects.

    redis-py (8.x) reconnects a dropped connection through
    ``connect_check_health``, which skips the sentinel lookup of ``connect``
    and dials the old master's address again until the retries run out.
    """

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(
            check_health=check_health, retry_socket_connect=retry_socket_connect
        )


class _FollowMasterTLS(_FollowMaster, SentinelManagedSSLConnection):
    """The same over TLS."""


class _SentinelRedis(CountingRedis):
    """A master client that also closes its clients of the sentinels when it closes
    (and counts its round trips, as every client of the backend does: counting.py)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def sentinel_client(options: RedisOptions, common: dict[str, Any]) -> Redis:
    """A client for the master the sentinels name, re-asking them after a failover.

    The data nodes get the URL's (or the options') user and password; the
    sentinels get none unless ``sentinel_password=`` (and ``sentinel_username=``)
    is in the query, as Sentinel's own ACL is usually separate. Timeouts and
    TLS apply to both. A connection error during a failover is retried like
    any other (deadline.DeadlineRetry), and each retry asks the sentinels again.
    """
    assert options.url is not None
    target = parse_sentinel_url(options.url)
    tls = tls_kwargs(options)
    secure = uses_tls(options)
    sentinel_auth = {
        k: v for k, v in target.query.items() if k in ("sentinel_username", "sentinel_password")
    }
    sentinel_kwargs: dict[str, Any] = {
        # One quick try per sentinel: the master client's own retry paces the asking.
        "retry": Retry(NoBackoff(), 0),
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        **({"ssl": True, **tls} if secure else {}),
        **{k.removeprefix("sentinel_"): v for k, v in sentinel_auth.items()},
    }
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=sentinel_kwargs)
    client: Redis = sentinel.master_for(
        target.master,
        redis_class=_SentinelRedis,
        db=target.db,
        username=target.username or options.username,
        password=target.password or options.password,
        connection_class=_FollowMasterTLS if secure else _FollowMaster,
        **common,
        **tls,
    )
    return client
