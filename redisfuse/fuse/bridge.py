"""The trio event loop's crossing to the asyncio backend, through trio-asyncio.

The only module that touches ``trio_asyncio``, and imported only when the
mount runs on trio: importing trio-asyncio changes asyncio for the whole
process (its loop policy and ``get_running_loop``), which breaks a mount on
plain asyncio or uvloop.

Each backend call runs as an asyncio task on trio-asyncio's loop, inside an
anyio cancel scope, and trio's cancellation of the caller cancels that scope.
trio-asyncio's own ``aio_as_trio`` is not used for calls: it turns trio's
cancellation into a single ``Task.cancel()``, and an asyncio cancellation
can be swallowed. Python 3.11's ``asyncio.wait_for``, which redis-py wraps
around every command it sends, returns its result instead of raising when
the cancellation arrives just as the command completed; a call that loops
until cancelled (the session's ``maintain()``) then never ends, and the
mount hung at unmount. anyio's scope is level-triggered, as trio's
cancellation is: it cancels again at every await until the call is over,
and honours the backend's shielded scopes, which a repeated
``Task.cancel()`` would not.
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import CancelledError
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import anyio
import trio
import trio_asyncio

T = TypeVar("T")

_CANCELLED: Any = object()
"""What a call's asyncio side returns when trio's cancellation ended it."""


class _Call:
    """One backend call: its asyncio side and the cancel scope that trio's cancellation reaches."""

    __slots__ = ("scope", "cancel_requested")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.cancel_requested = False

    async def run(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        """Await ``fn(*args)`` (asyncio side); ``_CANCELLED`` if cancelled before or during it."""
        if self.cancel_requested:
            return cast(T, _CANCELLED)  # cancelled before it started: never start it
        with anyio.CancelScope() as scope:
            self.scope = scope
            return await fn(*args)
        return cast(T, _CANCELLED)  # only reached when the scope caught its cancellation

    def cancel(self) -> None:
        """Cancel the call (asyncio side, run by the loop soon after trio's cancellation)."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()


class TrioAsyncioCrossing:
    """Runs backend coroutines on trio-asyncio's asyncio loop from trio tasks."""

    name = "trio"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def __repr__(self) -> str:
        return f"<TrioAsyncioCrossing {self.loop!r}>"

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Await ``fn(*args)`` on the asyncio loop; trio's cancellation cancels it for good."""
        request = _Call()
        coro = request.run(fn, args)
        try:
            task = self.loop.create_task(coro)
        except BaseException:
            coro.close()  # the loop is closed: no "never awaited" warning
            raise
        waiter = trio.lowlevel.current_task()
        task.add_done_callback(lambda _: trio.lowlevel.reschedule(waiter))
        raise_cancel: Callable[[], None] | None = None

        def abort(raise_cancel_: Callable[[], None]) -> trio.lowlevel.Abort:
            nonlocal raise_cancel
            raise_cancel = raise_cancel_
            self.loop.call_soon(request.cancel)
            return trio.lowlevel.Abort.FAILED  # the task's end reschedules us

        await trio.lowlevel.wait_task_rescheduled(abort)
        try:
            result = task.result()
        except CancelledError:
            if raise_cancel is not None:
                raise_cancel()  # the loop cancelled it while we were cancelled anyway
            raise
        if result is _CANCELLED:
            assert raise_cancel is not None
            raise_cancel()  # raises trio.Cancelled
        return result

    async def iterate(self, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Each step of ``stream`` is a :meth:`call`; closing this closes the stream."""
        try:
            while True:
                try:
                    item = await self.call(_anext, stream)
                except StopAsyncIteration:
                    return
                yield item
        finally:
            with trio.CancelScope(shield=True):
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await self.call(aclose)

    def is_stray_cancellation(self, exc: BaseException) -> bool:
        """asyncio's cancellation is always stray here: the handler's own is trio's."""
        return isinstance(exc, CancelledError)


async def _anext(stream: AsyncIterator[T]) -> T:
    return await stream.__anext__()


@contextlib.asynccontextmanager
async def open_crossing() -> AsyncIterator[TrioAsyncioCrossing]:
    """Run an asyncio loop inside trio for the backend for as long as the mount lasts."""
    async with trio_asyncio.open_loop() as loop:
        yield TrioAsyncioCrossing(loop)
