"""Builds the ``redis.asyncio`` client from a URL or from host/port options.

Connection faults are configuration: socket timeouts and redis-py's jittered
exponential retry live here, and the first PING turns an unreachable server
into one clear error that names the address.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from ..errors import BackendUnavailable


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

    @property
    def address(self) -> str:
        """The address as a user would recognise it (never shows a password)."""
        if self.url:
            scheme, _, rest = self.url.partition("://")
            return f"{scheme}://{rest.rpartition('@')[2]}"
        return f"{self.host}:{self.port}/{self.db}"


def make_client(options: RedisOptions) -> Redis:
    """Create (but do not yet connect) a binary-safe client with retries."""
    # Backoff doubles from 50 ms to a 1 s cap, so the retries span about retry_deadline.
    retries = int(options.retry_deadline) + 5 if options.retry_deadline > 0 else 0
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)
    common = {
        "decode_responses": False,
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.connect_timeout,
        "retry": retry,
        "retry_on_error": [ConnectionError, TimeoutError],
        "health_check_interval": 30,
    }
    if options.url:
        return Redis.from_url(options.url, password=options.password, **common)  # type: ignore[arg-type]
    return Redis(
        host=options.host,
        port=options.port,
        db=options.db,
        password=options.password,
        **common,  # type: ignore[arg-type]
    )


async def connect(options: RedisOptions) -> Redis:
    """Return a client that has answered PING, or raise BackendUnavailable.

    The first PING does not wait out the retry deadline: a server that is not
    there at start-up is a configuration error to report at once.
    """
    try:
        client = make_client(replace(options, retry_deadline=0))
    except ValueError as exc:
        raise BackendUnavailable(f"invalid Redis URL {options.address!r}: {exc}") from exc
    try:
        await client.ping()
    except AuthenticationError as exc:
        await client.aclose()
        raise BackendUnavailable(f"Redis at {options.address} refused the password") from exc
    except ResponseError as exc:
        await client.aclose()
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
            raise BackendUnavailable(f"Redis at {options.address} needs a password") from exc
        raise BackendUnavailable(f"Redis at {options.address} answered: {exc}") from exc
    except (ConnectionError, TimeoutError, OSError) as exc:
        await client.aclose()
        raise BackendUnavailable(f"cannot reach Redis at {options.address}: {exc}") from exc
    await client.aclose()
    return make_client(options)
