"""A cancellation that a Redis command lost, delivered at the next turn of a loop.

Before Python 3.12, ``asyncio.wait_for`` returns normally when its task is
cancelled just as the awaited operation completes (CPython gh-86296), and
redis-py wraps every write to Redis in it (``Connection.send_packed_command``).
A task cancelled while it sends a command then carries on as if nothing had
happened: ``Task.cancel()`` returned True, yet no ``CancelledError`` ever
comes. For one operation that only means it finishes. For a loop that runs
until cancelled (``Inodes.events()``, ``Inodes.maintain()``) it means running
for ever, and its owner's ``await task`` never returns: the cluster slot-move
test hung at teardown that way, its listener cancelled while it sent the
SPUBLISH that announces its new subscription.

Python 3.11 still counts the request (``Task.cancelling()`` stays above 0 until
someone calls ``uncancel()``, as asyncio's and anyio's timeouts do for their
own), so those loops call :func:`raise_if_cancelled` at every turn. Python 3.10
keeps no trace of a lost cancellation. An owner that cancels through an anyio
or trio cancel scope (the mount, fsspec's keeper) is safe on every version: a
scope delivers its cancellation again and again until the task has left it.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was cancelled and the error never came."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return  # not on an asyncio loop (trio): a trio cancellation is never lost
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling() > 0:
        raise asyncio.CancelledError("cancelled while a Redis command was sent")
