"""Stands in for trio inside pyfuse3 when the mount runs on asyncio or uvloop.

pyfuse3's request loop is written against a handful of trio names, looked up
on its module attribute ``pyfuse3.trio``: ``lowlevel.wait_readable``,
``lowlevel.notify_closing``, ``lowlevel.current_trio_token``,
``lowlevel.current_task``, ``open_nursery``, ``Lock`` and
``ClosedResourceError``. ``pyfuse3.asyncio.enable()`` points that attribute at
pyfuse3's own asyncio adaptor; :func:`install` points it at this module
instead:

- pyfuse3 3.5's ``wait_readable`` calls ``loop.add_reader`` on the /dev/fuse fd
  for every wait and removes it, from a done-callback, when that wait ends:
  an ``epoll_ctl`` add and delete per request, and, since asyncio keeps one
  reader per fd, overlapping waits would replace each other's callback (a
  prototype of issue 9 hung that way; pyfuse3's own workers wait one at a time
  under a lock, and a smoke test of our mount on pyfuse3's adaptor did not
  hang). Here each fd has one reader and a FIFO of waiting futures; a
  readiness wakes the first waiter still waiting (epoll is level-triggered, so
  the next one wakes at once if more requests are queued). The reader stays
  registered between requests, and is removed only when readiness finds
  nobody waiting twice in a row (every worker busy: without it the loop would
  spin) or when the session ends. Keeping it registered has one trap, handled
  in ``_FdWaiters.woke``: /dev/fuse is a blocking fd, so a readiness report
  that is stale by the time it runs would block the whole loop in ``read``
  (our first version froze a mount that way until the next request came).
  Measured (4 writers creating, writing and reading 600 small files, twice
  each): asyncio 3.1-3.5 s with this adaptor, 3.3-3.4 s with pyfuse3's;
  uvloop 2.4 s against 3.1-3.5 s.
- pyfuse3's asyncio nursery ignores a failed worker (its exception is never
  retrieved, and the mount carries on with one worker less). This nursery
  cancels the other workers and raises the first error, as trio would.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import pyfuse3


class Lock(asyncio.Lock):
    """pyfuse3's read lock, which its idle workers queue on for every request.

    asyncio's Lock looks up the running loop each time a waiter queues, and on
    Python 3.11 and older every such lookup is a ``getpid`` system call: 10 % of
    a uvloop mount's CPU in a mkdir/rmdir profile. pyfuse3 makes the lock inside
    the loop that uses it, and never shares it with another, so the loop is
    looked up once.
    """

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self, "_loop", None)
        if loop is None:
            loop = cast(asyncio.AbstractEventLoop, super()._get_loop())  # type: ignore[misc]
        return loop


class ClosedResourceError(Exception):
    """The fd a waiter waited on is being closed (pyfuse3 then ends the worker)."""


class _FdWaiters:
    """One registered reader for an fd, waking the queued waiters one at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self.loop = loop
        self.fd = fd
        self.queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self.armed = False
        self.misses = 0
        self.stale = False
        """A waiter was woken and has not read yet: readiness now is about its request."""

    def wait(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.loop.create_future()
        self.queue.append(future)
        if not self.armed:
            self.loop.add_reader(self.fd, self._readable)
            self.armed = True
        return future

    def _readable(self) -> None:
        if self.stale:
            return
        while self.queue:
            future = self.queue.popleft()
            if not future.done():  # a cancelled waiter is skipped
                future.set_result(None)
                self.stale = True
                self.misses = 0
                return
        # Nobody waits twice in a row: requests queue while every worker is
        # busy. Stop watching (the loop would spin) until a worker waits again.
        self.misses += 1
        if self.misses >= 2:
            self.disarm()

    def woke(self) -> None:
        """The woken waiter runs and reads its request before it next yields.

        asyncio may already hold a readiness report for the fd, polled before
        that read and run after it in the same loop iteration; acting on it would
        wake a worker whose read then blocks the whole loop (the fd is blocking).
        Readiness is trusted again from the next iteration on.
        """
        self.loop.call_soon(self._fresh)

    def _fresh(self) -> None:
        self.stale = False

    def disarm(self) -> None:
        if self.armed:
            self.loop.remove_reader(self.fd)
            self.armed = False
        self.misses = 0

    def close(self) -> None:
        self.disarm()
        while self.queue:
            future = self.queue.popleft()
            if not future.done():
                future.set_exception(ClosedResourceError())


_waiters: dict[int, _FdWaiters] = {}


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` is readable; raise ClosedResourceError if it is being closed.

    The fd's waiters belong to the loop of the session that uses it (they are
    dropped when it ends), so the running loop is looked up only to make them
    (a ``getpid`` per lookup on Python 3.11, see :class:`Lock`).
    """
    waiters = _waiters.get(fd)
    if waiters is None or waiters.loop.is_closed():
        waiters = _waiters[fd] = _FdWaiters(asyncio.get_running_loop(), fd)
    future = waiters.wait()
    try:
        await future
    finally:
        if future.done() and not future.cancelled() and future.exception() is None:
            waiters.woke()


def notify_closing(fd: int) -> None:
    """Wake every waiter on ``fd`` with ClosedResourceError (pyfuse3.terminate)."""
    waiters = _waiters.pop(fd, None)
    if waiters is not None:
        waiters.close()


def _forget_all() -> None:
    """Stop watching every fd: the session loop is over and pyfuse3 will close the fd."""
    while _waiters:
        _waiters.popitem()[1].close()


def current_trio_token() -> str:
    """pyfuse3 keeps this as ``pyfuse3.trio_token``; nothing here uses it."""
    return "asyncio"


def current_task() -> asyncio.Task[Any] | None:
    """The running task; pyfuse3 reads its ``name`` (set by the nursery)."""
    return asyncio.current_task()


class _Nursery:
    """Runs pyfuse3's worker tasks; the first failure cancels the rest and is raised."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.error: BaseException | None = None

    async def __aenter__(self) -> _Nursery:
        return self

    def start_soon(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(fn(*args), name=name)
        task.name = name  # type: ignore[attr-defined]  # pyfuse3 logs current_task().name
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self.error is None:
            self.error = task.exception()
            for other in self.tasks:
                other.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            while self.tasks:
                await asyncio.wait(set(self.tasks))
        except BaseException:
            for task in self.tasks:
                task.cancel()
            if self.tasks:
                await asyncio.wait(set(self.tasks))
            raise
        finally:
            # pyfuse3.main() ends when its nursery does; pyfuse3.close() closes
            # the fd next, and a reader must not outlive it.
            _forget_all()
        if self.error is not None and exc is None:
            raise self.error


def open_nursery() -> _Nursery:
    return _Nursery()


lowlevel = sys.modules[__name__]
from_thread = sys.modules[__name__]


def install() -> None:
    """Make pyfuse3 run its request loop on the running asyncio (or uvloop) loop."""
    setattr(pyfuse3, "trio", sys.modules[__name__])  # noqa: B010  # not in pyfuse3's stubs


def uninstall() -> None:
    """Back to trio (tests that run both loops in one process)."""
    setattr(pyfuse3, "trio", sys.modules["trio"])  # noqa: B010
