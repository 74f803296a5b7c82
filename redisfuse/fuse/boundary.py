"""The error boundary between pyfuse3 handlers and the backend, the same on every event loop.

Every backend call of the frontend goes through :meth:`Boundary.call`, which
hands it to the event loop's crossing (a direct await on asyncio and uvloop,
trio-asyncio on trio) and maps what comes back: backend errors become
``FUSEError`` with their errno, a cancellation that is not the handler's own
becomes EINTR, and anything unexpected becomes EIO after one log line with its
traceback. pyfuse3 ends the whole mount on any exception other than
``FUSEError``, so none may escape a handler; :func:`handler` guards the code
of the handlers themselves the same way, traces every request at DEBUG and
counts it, with its latency and errno, in ``opstats.REQUESTS`` (the metrics).
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from ..errors import FSError
from .crossing import Crossing
from .opstats import REQUESTS

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


def summary(value: object) -> str:
    """A short repr for log lines (data buffers as their length)."""
    if isinstance(value, (bytes, bytearray)) and len(value) > 64:
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class Boundary:
    """Runs backend coroutines from handlers and maps their errors to errnos."""

    def __init__(self, crossing: Crossing) -> None:
        self.crossing = crossing
        self.calls = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"<Boundary {self.crossing.name} calls={self.calls} errors={self.errors}>"

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` in the backend; raise only FUSEError or our own cancellation."""
        self.calls += 1
        try:
            return await self.crossing.call(fn, *args)
        except FSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except pyfuse3.FUSEError:
            raise
        except Exception:
            self.errors += 1
            log.exception("unexpected error in %s%s", getattr(fn, "__name__", fn), summary(args))
            raise pyfuse3.FUSEError(errno.EIO) from None
        except BaseException as exc:
            if self.crossing.is_stray_cancellation(exc):
                raise pyfuse3.FUSEError(errno.EINTR) from None
            raise

    async def on_inode(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Like :meth:`call` for a request on an inode the kernel named by number.

        If that inode is gone (removed by another node), answer ESTALE instead of
        ENOENT: the kernel then drops its stale dentry, looks the name up again and
        retries the system call, instead of failing it.
        """
        try:
            return await self.call(fn, *args)
        except pyfuse3.FUSEError as exc:
            if exc.errno == errno.ENOENT:
                raise pyfuse3.FUSEError(errno.ESTALE) from None
            raise

    def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate a backend async iterator (the change events) from the frontend."""
        return self.crossing.iterate(stream)


def handler(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a pyfuse3 handler: count it, trace it at DEBUG and let nothing but FUSEError out.

    Cancellation (trio's ``Cancelled``, asyncio's ``CancelledError``) is a
    BaseException and passes through untouched (counted as EINTR).
    """
    name = fn.__name__
    stats = REQUESTS.op(name)
    clock = time.perf_counter

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = clock()
        try:
            result = await fn(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            elapsed = clock() - start
            stats.done(elapsed)
            stats.failed(exc.errno)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s%s -> %s (%.3f ms)",
                    name,
                    summary(args[1:]),
                    errno.errorcode.get(exc.errno, exc.errno),
                    elapsed * 1e3,
                )
            raise
        except Exception:
            stats.done(clock() - start)
            stats.failed(errno.EIO)
            log.exception("unexpected error in handler %s%s", name, summary(args[1:]))
            raise pyfuse3.FUSEError(errno.EIO) from None
        except BaseException:
            stats.done(clock() - start)
            stats.failed(errno.EINTR)
            raise
        elapsed = clock() - start
        stats.done(elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s%s -> %s (%.3f ms)", name, summary(args[1:]), summary(result), elapsed * 1e3
            )
        return result

    return wrapper
