"""A Redis that stops answering: every request fails at its deadline, and the log says so once.

Each test that freezes Redis owns its redis-server (AofRedis: SIGSTOP and
SIGCONT, thawed again in teardown whatever happens), never the session's.
Deadlines and read timeouts are short so the tests stay fast; the bound a
request must meet is the retry deadline plus one read timeout, plus SLACK_S
for a busy 2-core machine. Shortcuts: the "other node" is a second Volume in
this process, a session that really died is a sessions entry written by
hand, and an id allocator is emptied by hand to make the next create reserve.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from redisfuse.backend import FSError, RedisOptions, Volume, open_volume
from redisfuse.backend.connect import make_client
from redisfuse.backend.events import Event, Resync, Stalled
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import ROOT_INO, Keys
from tests.aof_redis import AofRedis
from tests.faultproxy import FaultProxy, Faults

T = TypeVar("T")

DEADLINE_S = 1.5
READ_TIMEOUT_S = 0.5
SLACK_S = 1.0
BOUND_S = DEADLINE_S + READ_TIMEOUT_S + SLACK_S
"""The longest a request may take to fail while Redis does not answer."""


def options(url: str, **more: Any) -> RedisOptions:
    return RedisOptions(
        url=url, retry_deadline=DEADLINE_S, read_timeout=READ_TIMEOUT_S, retry_base=0.02, **more
    )


@pytest_asyncio.fixture
async def checked(aof: AofRedis, volume_name: str) -> AsyncIterator[str]:
    """The test's volume name; fsck must find the volume consistent afterwards."""
    yield volume_name
    client = make_client(RedisOptions(url=aof.url))
    try:
        report = await fsck(client, volume_name)
    finally:
        await client.aclose()
    assert report.ok, f"fsck after test:\n{report}"


async def timed(call: Awaitable[T]) -> tuple[T | BaseException, float]:
    """The result (or the error) of ``call`` and how long it took; never more than 30 s."""
    start = time.monotonic()
    try:
        result: T | BaseException = await asyncio.wait_for(call, 30)
    except (FSError, asyncio.TimeoutError) as exc:
        result = exc
    return result, time.monotonic() - start


def logged(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and text in r.getMessage()]


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every WARNING and above (the expected ones are asserted one by one)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


class Listener:
    """Runs a volume's event stream (which turns its cache on), keeping what it yields."""

    def __init__(self, vol: Volume) -> None:
        self.vol = vol
        self.events: list[tuple[float, Event]] = []
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self.task = asyncio.create_task(self._run())
        await self.wait_for(lambda: self.count(Resync) >= 1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        from tests.caching import stop

        assert self.task is not None
        await stop(self.task)

    async def _run(self) -> None:
        async for event in self.vol.inodes.events():
            self.events.append((time.monotonic(), event))

    def count(self, kind: type[Any]) -> int:
        return sum(type(e) is kind for _, e in self.events)

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.task is not None
            if self.task.done():
                self.task.result()
            assert time.monotonic() < deadline, f"not seen within {timeout} s: {self.events}"
            await asyncio.sleep(0.01)


async def test_a_frozen_redis_fails_each_request_at_the_deadline_and_says_so_once(
    aof: AofRedis, checked: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="redisfuse")
    async with open_volume(volume=checked, options=options(aof.url)) as vol:
        await vol.write_file("/kept", b"acknowledged before the freeze")
        async with Listener(vol) as listener:
            aof.freeze()
            first = await asyncio.gather(
                timed(vol.write_file("/new", b"x")),
                timed(vol.stat("/kept")),
                timed(vol.listdir("/")),
            )
            later = await timed(vol.mkdir("/d"))  # the outage is known: one attempt
            stats = vol.inodes.stats()
            await listener.wait_for(lambda: listener.count(Stalled) == 1)
            aof.thaw()
            assert await vol.read_file("/kept") == b"acknowledged before the freeze"
            await listener.wait_for(lambda: listener.count(Resync) == 2)
            after = vol.inodes.stats()
        for result, took in [*first, later]:
            assert isinstance(result, FSError) and result.errno == errno.EIO, result
            assert took <= BOUND_S, f"a request took {took:.1f} s to fail"
        assert later[1] <= READ_TIMEOUT_S + SLACK_S
        assert [type(e) for _, e in listener.events] == [Resync, Stalled, Resync]
    assert not stats.redis_up and stats.redis_outages == 1 and stats.redis_down_seconds > 0
    assert stats.redis_timeouts >= 1 and stats.redis_gave_up >= 4
    assert after.redis_up and after.redis_outage_seconds >= DEADLINE_S
    assert after.events_stalled == 1
    assert len(logged(caplog, logging.WARNING, "not answering for")) == 1
    assert len(logged(caplog, logging.INFO, "answering again after")) == 1
    assert len(logged(caplog, logging.WARNING, "change events: nothing heard")) == 1
    assert len(logged(caplog, logging.INFO, "change events: subscribed again")) == 1
    assert len(problems(caplog)) == 2, problems(caplog)


async def test_creates_queued_behind_an_id_reservation_fail_with_it(
    aof: AofRedis, checked: str
) -> None:
    """Three creates need new inode ids; the first reserves a range (INCRBY) and the
    others wait for it. When it fails, they fail with it instead of each trying again."""
    async with open_volume(volume=checked, options=options(aof.url)) as vol:
        ids = vol.inodes.ctx.inode_ids
        ids._next = ids._end  # the range is used up: the next id costs an INCRBY
        ended: list[tuple[float, int | None]] = []

        async def mkdir(i: int) -> None:
            try:
                await vol.inodes.mkdir(ROOT_INO, b"d%d" % i, 0o755, 0, 0)
            except FSError as exc:
                ended.append((time.monotonic(), exc.errno))

        aof.freeze()
        try:
            await asyncio.wait_for(asyncio.gather(*(mkdir(i) for i in range(3))), 30)
        finally:
            aof.thaw()
        assert [e for _, e in ended] == [errno.EIO] * 3
        spread = max(t for t, _ in ended) - min(t for t, _ in ended)
        assert spread < READ_TIMEOUT_S / 2, f"the last failed {spread:.2f} s after the first"
        await vol.inodes.mkdir(ROOT_INO, b"after", 0o755, 0, 0)


@pytest.mark.parametrize("fault", ["refused", "reset"])
async def test_a_refused_or_reset_connection_fails_at_the_deadline(
    aof: AofRedis, volume_name: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="redisfuse")
    with FaultProxy("127.0.0.1", aof.port) as proxy:
        url = proxy.url if fault == "reset" else aof.url
        async with open_volume(volume=volume_name, options=options(url)) as vol:
            await vol.write_file("/kept", b"k")
            if fault == "refused":
                aof.kill()
            else:
                proxy.faults = Faults(cut=1.0)  # every request: connection closed
            result, took = await timed(vol.stat("/kept"))
            assert isinstance(result, FSError) and result.errno == errno.EIO, result
            assert DEADLINE_S - 0.1 <= took <= DEADLINE_S + SLACK_S
            if fault == "refused":
                aof.start()
            else:
                proxy.faults = Faults()
            assert (await vol.stat("/kept")).size == 1
    assert len(logged(caplog, logging.WARNING, "unreachable for")) == 1, problems(caplog)
    assert len(logged(caplog, logging.INFO, "answering again after")) == 1
    print(f"{fault}: EIO after {took:.2f} s (deadline {DEADLINE_S} s)")  # noqa: T201


async def test_housekeeping_and_fencing_across_a_freeze_longer_than_the_session_timeout(
    aof: AofRedis, checked: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Both nodes' leases run out while Redis is frozen. Meanwhile a write is refused at
    once (the lease is gone); afterwards neither node declares the other dead for
    failing to heartbeat through a frozen Redis (the open file stays usable), while
    a session that really died is still reclaimed."""
    timeout = 1.0
    keys = Keys(checked)
    async with (
        open_volume(volume=checked, options=options(aof.url), session_timeout=timeout) as a,
        open_volume(volume=checked, options=options(aof.url), session_timeout=2.0) as b,
    ):
        # b heartbeats once a second, so a is back first and finds b's lease expired.
        tasks = [
            asyncio.create_task(a.inodes.maintain()),
            asyncio.create_task(b.inodes.maintain(1.0)),
        ]
        try:
            f = await b.open("/held", "wb")
            await f.write(b"before")
            await f.flush()
            raw = make_client(RedisOptions(url=aof.url))
            now_ms = int(time.time() * 1000)
            await raw.zadd(keys.sessions, {"999999": now_ms - 1})  # died long ago
            await raw.hset(keys.session(999999), "timeout", 1000)
            await raw.aclose()
            sessions = (a.inodes.ctx.session, b.inodes.ctx.session)
            aof.freeze()
            try:
                await asyncio.sleep(2.0 + DEADLINE_S + READ_TIMEOUT_S)
                result, took = await timed(a.inodes.mkdir(ROOT_INO, b"during", 0o755, 0, 0))
            finally:
                aof.thaw()
            assert isinstance(result, FSError) and result.errno == errno.EIO, result
            assert "lease expired" in str(result) and took < 0.1, (result, took)
            deadline = time.monotonic() + 10
            while not (a.inodes.sessions.lease_valid and b.inodes.sessions.lease_valid):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await f.write(b" and after")
            await f.close()
            assert await a.read_file("/held") == b"before and after"
            client = a.inodes.ctx.client
            while await client.zscore(keys.sessions, "999999") is not None:
                assert time.monotonic() < deadline, "the dead session was never reclaimed"
                await asyncio.sleep(0.05)
            assert (a.inodes.ctx.session, b.inodes.ctx.session) == sessions
            assert a.inodes.stats().session_renewals == b.inodes.stats().session_renewals == 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    assert not logged(caplog, logging.ERROR, "declared dead")
    assert not logged(caplog, logging.WARNING, "housekeeping failed")


async def test_a_subscription_that_goes_silent_is_replaced(
    redis_server,
    volume_name: str,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    """A proxy stops forwarding the event connection (as a NAT that forgot the flow):
    the stream notices within the silence limit, drops the cache (Stalled),
    subscribes again and hears the other node's changes at once."""
    caplog.set_level(logging.INFO, logger="redisfuse")
    silence = 1.0
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        opts = RedisOptions(url=proxy.url, read_timeout=silence)
        async with (
            open_volume(volume=volume_name, options=opts) as vol,
            open_volume(redis_server.url, volume=volume_name) as other,
        ):
            async with Listener(vol) as listener:
                await other.write_file("/one", b"1")
                await listener.wait_for(lambda: len(listener.events) > 1)
                assert proxy.blackhole_subscribers() == 1
                cut = time.monotonic()
                await listener.wait_for(lambda: listener.count(Resync) == 2)
                noticed = next(t for t, e in listener.events if type(e) is Stalled) - cut
                assert noticed <= silence + SLACK_S
                assert vol.inodes.ctx.cache.enabled
                before = len(listener.events)
                sent = time.monotonic()
                await other.write_file("/two", b"2")
                await listener.wait_for(lambda: len(listener.events) > before)
                heard = listener.events[before][0] - sent
            assert heard < 0.5, f"the other node's change took {heard:.3f} s"
    assert len(logged(caplog, logging.WARNING, "change events: nothing heard")) == 1
    assert len(logged(caplog, logging.INFO, "change events: subscribed again")) == 1
    assert len(problems(caplog)) == 1, problems(caplog)
    print(f"silence noticed after {noticed:.2f} s; next change heard in {heard * 1e3:.1f} ms")  # noqa: T201
