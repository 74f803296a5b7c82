"""The change-event stream's end: it stops when its owner cancels it, whatever it was doing.

Shortcut: the cancellation that a Redis command loses is lost by
``asyncio.wait_for`` itself, the call redis-py wraps around every write
(``Connection.send_packed_command``), with the cancel landing just after the
write completed; timing a real command into that window would be a race.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from redisfuse.backend import Volume
from redisfuse.backend.events import Event


async def _lose_a_cancellation() -> None:
    """Cancel the running task as its write completes inside ``asyncio.wait_for``.

    Before Python 3.12 wait_for then returns normally (CPython gh-86296): the
    cancellation was accepted and never raised, as when an owner cancels a task
    while redis-py sends a command.
    """
    task = asyncio.current_task()
    assert task is not None

    async def write() -> None:
        asyncio.get_running_loop().call_soon(task.cancel)  # lands once the write is done

    await asyncio.wait_for(write(), 10)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Python 3.10 keeps no trace of a lost cancellation"
)
async def test_the_stream_ends_when_a_redis_command_lost_its_cancellation(
    vol: Volume, vol2: Volume
) -> None:
    """The owner cancelled the stream while it sent a command (as after each Resync:
    the announcement, the peers), and the command lost the cancellation. The stream
    must end all the same: it ran on for ever, and the slot-move test on a cluster
    hung at teardown waiting for it."""
    heard_after: list[Event] = []
    lost = asyncio.Event()

    async def listen() -> None:
        async for event in vol.inodes.events():
            if lost.is_set():
                heard_after.append(event)
            else:  # the first event, Resync: subscribed, announced
                lost.set()
                await _lose_a_cancellation()

    task = asyncio.create_task(listen())
    try:
        await lost.wait()
        await vol2.mkdir("/d")  # a stream still running hears this
        while not task.done():
            assert not heard_after, f"the stream ran on after its cancellation: {heard_after}"
            await asyncio.sleep(0.01)
        assert task.cancelled(), task.exception()
    finally:
        task.cancel()  # (it now waits for a message: this cancellation arrives)
        await asyncio.gather(task, return_exceptions=True)
