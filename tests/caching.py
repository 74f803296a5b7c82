"""Turning a backend volume's metadata cache on in a test, as a mount does.

The cache is on only while the volume's event stream runs (Inodes.events), so a
test of what the cache saves runs the stream in a task for its duration, and
stops it with :func:`stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

from redisfuse.backend import Volume


@contextlib.asynccontextmanager
async def caching(v: Volume) -> AsyncIterator[None]:
    """Run ``v``'s event stream, which turns its metadata cache on (as a mount does)."""
    started = asyncio.Event()

    async def listen() -> None:
        events = cast(AsyncGenerator[Any, None], v.inodes.events())
        async with contextlib.aclosing(events) as stream:
            async for _ in stream:
                started.set()  # the first event is Resync: the cache is on from here

    task = asyncio.create_task(listen())
    try:
        await started.wait()
        yield
    finally:
        await stop(task)


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again if it runs on.

    Python 3.10 can lose a cancellation inside a Redis command, with no trace
    the backend could act on (redisfuse/backend/cancellation.py); an anyio or
    trio cancel scope, which the mount uses, also delivers its cancellation again.
    """
    task.cancel()
    while not (await asyncio.wait({task}, timeout=1.0))[0]:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
