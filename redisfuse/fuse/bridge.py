"""The trio event loop's crossing to the asyncio backend, through trio-asyncio.

The only module that calls ``trio_asyncio``, always as ``aio_as_trio(fn)(*args)``,
and imported only when the mount runs on trio: importing trio-asyncio changes
asyncio for the whole process (its loop policy and ``get_running_loop``), which
breaks a mount on plain asyncio or uvloop.
"""

from __future__ import annotations

import contextlib
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import trio_asyncio

T = TypeVar("T")


class TrioAsyncioCrossing:
    """Runs backend coroutines on trio-asyncio's asyncio loop from trio tasks."""

    name = "trio"

    def __repr__(self) -> str:
        return "<TrioAsyncioCrossing>"

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return cast(T, await trio_asyncio.aio_as_trio(fn)(*args))

    def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        return cast(AsyncIterator[T], trio_asyncio.aio_as_trio(stream))

    def is_stray_cancellation(self, exc: BaseException) -> bool:
        """asyncio's cancellation is always stray here: the handler's own is trio's."""
        return isinstance(exc, CancelledError)


@contextlib.asynccontextmanager
async def open_crossing() -> AsyncIterator[TrioAsyncioCrossing]:
    """Run an asyncio loop inside trio for the backend for as long as the mount lasts."""
    async with trio_asyncio.open_loop():
        yield TrioAsyncioCrossing()
