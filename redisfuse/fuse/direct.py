"""The asyncio (and uvloop) event loop's crossing to the backend: a direct await.

pyfuse3's request loop and the backend share one asyncio loop, so a backend
call is awaited in the handler's own task with no bridge between them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DirectCrossing:
    """Awaits backend coroutines in the calling task."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<DirectCrossing {self.name}>"

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await fn(*args)

    def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        return stream

    def is_stray_cancellation(self, exc: BaseException) -> bool:
        """A CancelledError while nobody cancels this task came from inside the backend.

        ``Task.cancelling()`` (Python 3.11+) tells the two apart; on 3.10 every
        CancelledError is taken as the task's own, so a cancellation is never
        swallowed.
        """
        if not isinstance(exc, asyncio.CancelledError):
            return False
        task = asyncio.current_task()
        cancelling = getattr(task, "cancelling", None)
        return cancelling is not None and cancelling() == 0


@contextlib.asynccontextmanager
async def open_crossing(name: str) -> AsyncIterator[DirectCrossing]:
    """Nothing to set up: the backend runs on the loop that serves FUSE."""
    yield DirectCrossing(name)
