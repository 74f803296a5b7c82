"""Turning a backend volume's metadata cache on in a test, as a mount does.

The cache is on only while the volume's event stream runs (Inodes.events), so a
test of what the cache saves runs the stream in a task for its duration.
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
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
