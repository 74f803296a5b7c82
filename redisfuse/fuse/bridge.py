"""The one crossing from trio (pyfuse3) to asyncio (the backend), and the error boundary.

Every backend call of the frontend goes through :meth:`Bridge.call`, the only
user of ``trio_asyncio.aio_as_trio``. Backend errors become ``FUSEError`` with
their errno, asyncio cancellation becomes EINTR, and anything unexpected
becomes EIO after one log line with its traceback: pyfuse3 ends the whole mount
on any exception other than ``FUSEError``, so none may escape a handler.
"""

from __future__ import annotations

import errno
import functools
import logging
import time
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, cast

import pyfuse3
import trio
import trio_asyncio

from ..errors import FSError

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


def _summary(value: object) -> str:
    if isinstance(value, (bytes, bytearray)) and len(value) > 64:
        return f"<{len(value)} bytes>"
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


class Bridge:
    """Runs backend coroutines from trio handlers and maps their errors to errnos."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"<Bridge calls={self.calls} errors={self.errors}>"

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the asyncio loop; raise only FUSEError or trio.Cancelled."""
        self.calls += 1
        try:
            return cast(T, await trio_asyncio.aio_as_trio(fn)(*args))
        except FSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except CancelledError:
            raise pyfuse3.FUSEError(errno.EINTR) from None
        except (pyfuse3.FUSEError, trio.Cancelled):
            raise
        except Exception:
            self.errors += 1
            log.exception("unexpected error in %s%s", getattr(fn, "__name__", fn), _summary(args))
            raise pyfuse3.FUSEError(errno.EIO) from None

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

    async def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate an asyncio async iterator (the backend's events) from trio."""
        async for item in trio_asyncio.aio_as_trio(stream):
            yield item


def handler(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Wrap a pyfuse3 handler: trace it at DEBUG and let nothing but FUSEError out."""
    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        start = time.perf_counter()
        debug = log.isEnabledFor(logging.DEBUG)
        try:
            result = await fn(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            if debug:
                log.debug(
                    "%s%s -> %s (%.3f ms)",
                    name,
                    _summary(args[1:]),
                    errno.errorcode.get(exc.errno, exc.errno),
                    (time.perf_counter() - start) * 1e3,
                )
            raise
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("unexpected error in handler %s%s", name, _summary(args[1:]))
            raise pyfuse3.FUSEError(errno.EIO) from None
        if debug:
            log.debug(
                "%s%s -> %s (%.3f ms)",
                name,
                _summary(args[1:]),
                _summary(result),
                (time.perf_counter() - start) * 1e3,
            )
        return result

    return wrapper
