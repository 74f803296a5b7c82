"""Keeps one volume open, with its session heartbeat, for the life of a filesystem object.

fsspec creates filesystem objects synchronously and may use them from any
coroutine of one event loop (its own IO thread's, or the caller's with
``asynchronous=True``), so the volume cannot be an ``async with`` block in the
caller. One owner task per open volume holds it instead: it enters
``open_volume``, runs ``maintain()`` (heartbeat, reclaim, gc) and follows the
change events (which turn on the backend's event-coherent metadata cache),
as a mount does, in an anyio task group beside it, and leaves them all when
asked to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import anyio

from ..backend import Volume

log = logging.getLogger(__name__)

_CLOSING: set[asyncio.Task[None]] = set()
"""Owner tasks asked to close by request_close(): referenced until they finish."""

Opener = Callable[[], contextlib.AbstractAsyncContextManager[Volume]]


async def _follow_events(volume: Volume) -> None:
    """Listen to other nodes' changes: while this runs, the backend caches metadata."""
    while True:
        try:
            async for _ in volume.inodes.events():
                pass
        except Exception:
            # The stream reconnects by itself; anything else is a bug, which must
            # not close the volume under its users (the cache is off until then).
            log.exception("change event stream failed; restarting it")
            await anyio.sleep(1.0)


class VolumeKeeper:
    """Opens the volume on first use and keeps it open on that event loop until closed."""

    def __init__(self, opener: Opener, description: str) -> None:
        self._opener = opener
        self._description = description
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[Volume] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self.generation = 0
        """Counts the opens: what was opened in an earlier one went with its close."""

    def __repr__(self) -> str:
        ready = self._ready
        state = "closed"
        if ready is not None and not ready.done():
            state = "opening"
        elif ready is not None and not ready.cancelled() and ready.exception() is None:
            state = "open"
        return f"<VolumeKeeper {self._description} {state}>"

    @property
    def is_open(self) -> bool:
        """Whether an owner task holds (or is opening) the volume."""
        return self._task is not None and not self._task.done()

    def holds(self, generation: int) -> bool:
        """Whether what was opened in ``generation`` is still open (not closed with it)."""
        return self.is_open and generation == self.generation

    async def get(self) -> Volume:
        """The open volume; the first call (on this loop) opens it and starts the heartbeat."""
        running = asyncio.get_running_loop()
        if self._ready is not None and self._loop is not running:
            if self._loop is not None and not self._loop.is_closed() and self.is_open:
                raise RuntimeError(
                    f"{self._description} is open on another event loop; close it there first"
                )
            log.warning(
                "%s was left open on an event loop that is now closed; opening it again "
                "(the old session expires after its session timeout)",
                self._description,
            )
            self._forget()
        elif self._task is not None and self._task.done() and self._ready is not None:
            error = None if self._task.cancelled() else self._task.exception()
            log.warning("%s closed unexpectedly (%r); opening it again", self._description, error)
            self._forget()
        if self._ready is None:
            # No await between the check and these assignments: concurrent first
            # callers all wait for the one owner task.
            self._loop = running
            self.generation += 1
            self._stop = asyncio.Event()
            self._ready = running.create_future()
            self._task = running.create_task(self._own(self._ready, self._stop))
        return await asyncio.shield(self._ready)

    async def _own(self, ready: asyncio.Future[Volume], stop: asyncio.Event) -> None:
        """The owner task: open, keep the heartbeat going, close when ``stop`` is set."""
        try:
            async with self._opener() as volume, anyio.create_task_group() as tasks:
                tasks.start_soon(volume.inodes.maintain)
                tasks.start_soon(_follow_events, volume)
                ready.set_result(volume)
                await stop.wait()
                tasks.cancel_scope.cancel()
        except Exception as exc:
            if ready.done():
                raise  # a failure while closing: aclose() reports it
            # Opening failed (Redis unreachable, say): every waiter gets the error,
            # and the next use tries again.
            self._forget()
            ready.set_exception(exc)

    def _forget(self) -> None:
        self._loop = self._ready = self._task = self._stop = None

    def request_close(self) -> None:
        """Ask the owner task to close the volume, without waiting for it (same loop only)."""
        task, stop = self._task, self._stop
        if task is None or stop is None:
            return
        self._forget()
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)
        stop.set()

    async def aclose(self) -> None:
        """Flush and release what the volume holds, end its session, close its client."""
        task, stop, ready = self._task, self._stop, self._ready
        if task is None or stop is None or ready is None:
            return
        self._forget()
        stop.set()
        with anyio.CancelScope(shield=True):
            await asyncio.wait([task])
        if not ready.done():
            ready.cancel()
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
