"""Maps Redis failures to filesystem errors; knows nothing of volumes or FUSE.

One function, :func:`redis_error`, decides what every Redis error means to a
user: a full Redis is ENOSPC, a read-only replica EROFS, a command denied by
the ACL EACCES, a command missing (renamed or disabled) and anything else the
server refuses EIO, and an unreachable server EIO after the retries. The
messages name the address (never a password) and say what to do.
"""

from __future__ import annotations

import errno
import logging
import ssl
import time

from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
)

from ..errors import BackendUnavailable, FSError, NoSpace, ReadOnly

log = logging.getLogger(__name__)


def redis_error(exc: BaseException, address: str) -> FSError:
    """The filesystem error a Redis failure means, with a one-line message."""
    if isinstance(exc, FSError):
        return exc
    if isinstance(exc, OutOfMemoryError):
        return NoSpace(
            f"Redis at {address} is out of memory (maxmemory reached): "
            "delete files, run 'redisfuse gc', or raise maxmemory"
        )
    if isinstance(exc, ReadOnlyError):
        return ReadOnly(f"Redis at {address} is a read-only replica: use its master")
    if isinstance(exc, NoPermissionError):
        return FSError(errno.EACCES, f"Redis at {address} denied a command RedisFUSE needs: {exc}")
    if _starts(exc, "NOAUTH", "Authentication required", "HELLO must be called"):
        return BackendUnavailable(f"Redis at {address} needs a password")
    if isinstance(exc, AuthenticationError) or _starts(exc, "WRONGPASS", "invalid username"):
        return BackendUnavailable(f"Redis at {address} refused the password")
    if isinstance(exc, MasterNotFoundError):
        return BackendUnavailable(
            f"no sentinel of {address} named a reachable master: are the sentinels up, "
            "is the master name right, and is the master (or a promoted replica) up?"
        )
    tls = _tls_cause(exc)
    if tls is not None:
        return BackendUnavailable(f"TLS with Redis at {address} failed: {tls}")
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
        return BackendUnavailable(f"Redis at {address} is unreachable: {exc}")
    if _starts(exc, "unknown command", "ERR unknown command"):
        return BackendUnavailable(
            f"Redis at {address} lacks a command RedisFUSE needs (renamed or disabled?): {exc}"
        )
    if isinstance(exc, (ResponseError, RedisError)):
        return BackendUnavailable(f"Redis at {address} failed: {exc}")
    return BackendUnavailable(f"Redis at {address}: {exc}")


def _tls_cause(exc: BaseException) -> str | None:
    """What failed in a TLS handshake behind ``exc``, said so a user knows which file to fix."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    if isinstance(seen, ssl.SSLCertVerificationError):
        return (
            f"the server's certificate is not trusted ({seen.verify_message}): "
            "check --redis-tls-ca (the CA that signed the server's certificate)"
        )
    reason = getattr(seen, "reason", None) or str(seen)
    if "CERTIFICATE_REQUIRED" in str(reason):
        return "the server requires a client certificate: pass --redis-tls-cert and --redis-tls-key"
    return f"{reason}: check the --redis-tls-* files"


def _starts(exc: BaseException, *prefixes: str) -> bool:
    text = str(exc)
    return any(text.startswith(p) for p in prefixes)


class RateLimitedLog:
    """Logs a repeated warning at most once per ``period`` seconds, counting the rest.

    A writer filling a full Redis hits ENOSPC on every request; the log says so
    once, then how often it recurred, instead of a line per request.
    """

    def __init__(self, period: float) -> None:
        self.period = period
        self._last = -period
        self._skipped = 0

    def note(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.period:
            self._skipped += 1
            return
        if self._skipped:
            log.warning("%s (%d more times since the last report)", message, self._skipped)
        else:
            log.warning("%s", message)
        self._last = now
        self._skipped = 0
