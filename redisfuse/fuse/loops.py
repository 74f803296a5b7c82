"""The event loops a mount can run on, and the one place that starts each of them.

- ``trio``: pyfuse3 on trio, its native mode; the backend runs on an asyncio
  loop inside trio (trio-asyncio), reached through ``bridge.py``. For users who
  run other trio code beside the mount.
- ``asyncio``: pyfuse3's request loop on asyncio (through our own stand-in for
  trio, ``pyfuse3_asyncio.py``); the backend is awaited directly.
- ``uvloop``: the same on uvloop's faster asyncio loop.

Everything else in the frontend (handlers, error boundary, kernel
invalidation, signals, background tasks, unmount) is written once against
anyio and runs unchanged on all three. trio-asyncio is imported only when the
trio loop is chosen: importing it breaks plain asyncio for the whole process.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from .crossing import Crossing

EVENT_LOOPS = ("trio", "asyncio", "uvloop")
DEFAULT_EVENT_LOOP = "uvloop"
"""Chosen by measurement (docs/performance.md): 1.2-2.3x trio on every workload that
waits for Redis, level with it (within the noise) on the rest, and ahead of
plain asyncio on most."""


def describe(loop: str) -> str:
    """The loop with the versions that matter, for the start-up log line."""
    packages = {"trio": ("trio", "trio-asyncio"), "asyncio": (), "uvloop": ("uvloop",)}[loop]
    versions = []
    for name in ("pyfuse3", *packages):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} ?")
    return f"{loop} ({', '.join(versions)})"


@contextlib.asynccontextmanager
async def open_crossing(loop: str) -> AsyncIterator[Crossing]:
    """The way from this loop's handlers to the backend, for as long as the mount lasts."""
    if loop == "trio":
        from . import bridge

        async with bridge.open_crossing() as trio_crossing:
            yield trio_crossing
    else:
        from . import direct

        async with direct.open_crossing(loop) as direct_crossing:
            yield direct_crossing


def run(loop: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run ``fn(*args)`` to completion on the chosen event loop (blocking)."""
    if loop not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {loop!r}; choose one of {', '.join(EVENT_LOOPS)}")
    if loop == "trio":
        anyio.run(fn, *args, backend="trio")
        return
    from . import pyfuse3_asyncio

    pyfuse3_asyncio.install()
    anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": loop == "uvloop"})
