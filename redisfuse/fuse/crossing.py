"""What differs between event loops: how a handler reaches the backend's coroutines.

The backend is asyncio code. On asyncio and uvloop the frontend awaits it
directly (``direct.py``); on trio it crosses through trio-asyncio
(``bridge.py``). Everything else in the frontend is the same on every loop.
This module imports nothing of FUSE, so the command line can name the loops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Crossing(Protocol):
    """How the frontend's event loop reaches the backend's asyncio coroutines."""

    name: str
    """The event loop's name, as given to ``--event-loop``."""

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` where the backend runs; its exceptions pass through."""
        ...

    def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Iterate a backend async iterator (the change events) from the frontend."""
        ...

    def is_stray_cancellation(self, exc: BaseException) -> bool:
        """Whether ``exc`` cancelled only the backend call, not the handler itself.

        Such a cancellation must become EINTR; the handler's own cancellation
        (unmount) must propagate.
        """
        ...
