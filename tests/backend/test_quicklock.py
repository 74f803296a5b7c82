"""QuickLock: the per-file lock of the write path (context.py), on plain asyncio."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from redisfuse.backend.context import QuickLock


async def test_waiters_get_the_lock_in_turn() -> None:
    lock = QuickLock()
    order: list[int] = []

    async def take(i: int) -> None:
        async with lock:
            order.append(i)
            await asyncio.sleep(0.01)

    async with lock:
        tasks = [asyncio.create_task(take(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert order == []
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert not lock.locked()


async def test_a_free_lock_is_taken_without_a_loop_turn() -> None:
    lock = QuickLock()
    ran: list[str] = []
    other = asyncio.create_task(asyncio.sleep(0))
    other.add_done_callback(lambda _: ran.append("other"))
    async with lock:
        assert lock.locked()
    assert ran == []  # no checkpoint: the other task never ran meanwhile
    await other


@pytest.mark.parametrize("handed", [False, True])
async def test_a_cancelled_waiter_never_keeps_the_lock(handed: bool) -> None:
    """Cancelled while waiting: it leaves the queue. Cancelled just after the lock
    was handed to it: it hands the lock on. Either way the next waiter gets it."""
    lock = QuickLock()
    got: list[str] = []

    async def waiter(name: str) -> None:
        async with lock:
            got.append(name)

    await lock.__aenter__()
    first = asyncio.create_task(waiter("first"))
    second = asyncio.create_task(waiter("second"))
    await asyncio.sleep(0.01)
    if handed:
        await lock.__aexit__(None, None, None)  # hands it to "first", not yet running
        first.cancel()
    else:
        first.cancel()
        await asyncio.sleep(0)
        await lock.__aexit__(None, None, None)
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert got == ["second"]
    assert not lock.locked()


async def test_cancellation_by_an_anyio_scope() -> None:
    lock = QuickLock()
    async with lock:
        with anyio.move_on_after(0.02) as scope:
            async with lock:
                pytest.fail("took a held lock")
        assert scope.cancelled_caught
    async with lock:  # free again, nobody left queued
        pass
