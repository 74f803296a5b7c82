"""The lean request path (lane.py): pipelining, error replies, and what a lost or silent
connection does to the requests on it.

Each test that breaks a server (kills or freezes it) owns a private
redis-server (AofRedis, thawed and stopped in teardown whatever happens); the
others use the session's server. The client is what ``connect.make_client``
builds for a single server, as a volume uses it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from redisfuse.backend.connect import RedisOptions, make_client, retry_stats
from redisfuse.backend.counting import CountingRedis
from redisfuse.backend.scripts import Scripts
from tests.aof_redis import AofRedis
from tests.faultproxy import FaultProxy, Faults

SLOW_SCRIPT = (
    "local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]; repeat "
    "local n = redis.call('TIME') until n[1] * 1e6 + n[2] > s + 100000; return 'slow'"
)
"""A script that keeps Redis busy for 0.1 s."""


def client_for(url: str, **options: float) -> CountingRedis:
    client = make_client(RedisOptions(url=url, **options))  # type: ignore[arg-type]
    assert isinstance(client, CountingRedis) and client.lanes is not None
    return client


async def reads_processed(raw: Redis) -> int:
    return int((await raw.info("stats"))["total_reads_processed"])


async def test_requests_of_one_loop_turn_share_a_write(redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    client = client_for(redis_server.url)
    raw = Redis.from_url(redis_server.url)
    try:
        key = f"{volume_name}:h"
        await client.hset(key, mapping={f"f{i}": i for i in range(50)})
        before = await reads_processed(raw)
        got = await asyncio.gather(*(client.hget(key, f"f{i}") for i in range(50)))
        after = await reads_processed(raw)
        assert got == [str(i).encode() for i in range(50)]
        # One write of 50 requests (INFO's own read is the other one).
        assert after - before <= 3, f"{after - before} reads for 50 concurrent requests"
    finally:
        await client.aclose()
        await raw.aclose()


async def test_error_replies_stay_in_their_place(redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    client = client_for(redis_server.url)
    try:
        key = f"{volume_name}:s"
        await client.set(key, b"v")
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        pipe.hget(key, "f")  # WRONGTYPE
        pipe.exists(key)
        first, second, third = await pipe.execute(raise_on_error=False)
        assert first == b"v" and isinstance(second, ResponseError) and third == 1
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.hget(key, "f")
        pipe = client.pipeline(transaction=False)
        pipe.hget(key, "f")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await pipe.execute()
        assert await client.get(key) == b"v"  # the lane is still in step
    finally:
        await client.aclose()


async def test_a_script_missing_after_a_flush_is_loaded_again(redis_server) -> None:  # type: ignore[no-untyped-def]
    client = client_for(redis_server.url)
    raw = Redis.from_url(redis_server.url)
    try:
        scripts = Scripts()
        await scripts.load(client)
        await raw.script_flush()
        # read_map of an inode that does not exist: {ENOENT}, answered after the reload.
        keys = ["rf:{x}:i:1", "rf:{x}:m:1"]
        result = await scripts.call(client, "read_map", keys, [0], check_=False)
        assert int(result[0]) == 2
    finally:
        await client.aclose()
        await raw.aclose()


async def test_a_caller_that_gives_up_leaves_the_replies_in_step(  # type: ignore[no-untyped-def]
    redis_server, volume_name: str
) -> None:
    client = client_for(redis_server.url)
    try:
        key = f"{volume_name}:k"
        await client.set(key, b"after")
        task = asyncio.ensure_future(client.eval(SLOW_SCRIPT, 0))
        await asyncio.sleep(0.02)  # written; Redis is busy with it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.get(key) == b"after"  # not the slow script's reply
    finally:
        await client.aclose()


async def test_a_request_whose_reply_was_lost_is_sent_again(  # type: ignore[no-untyped-def]
    redis_server, volume_name: str
) -> None:
    """The connection broke after Redis ran the request and before its reply came (a
    proxy drops it): the request is sent again on a new connection, and counted."""
    with FaultProxy(redis_server.host, redis_server.port, Faults(drop_reply=1.0)) as proxy:
        client = client_for(proxy.url, retry_base=0.02)
        try:
            key = f"{volume_name}:k"
            request = asyncio.ensure_future(client.incr(key))
            for _ in range(500):
                if proxy.dropped:
                    break
                await asyncio.sleep(0.01)
            proxy.faults = Faults()
            assert await request >= 1  # (INCR ran once or more: it has no request id)
            stats = retry_stats(client)
            assert stats is not None and stats.total >= 1
        finally:
            await client.aclose()


async def test_a_silent_server_fails_a_request_by_its_deadline_plus_a_read_timeout(
    aof: AofRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="redisfuse")
    client = client_for(aof.url, read_timeout=0.5, retry_deadline=1.0)
    try:
        await client.set("k", b"v")
        aof.freeze()
        started = time.monotonic()
        with pytest.raises((TimeoutError, ConnectionError)):
            await client.get("k")
        waited = time.monotonic() - started
        assert 1.0 <= waited < 1.0 + 0.5 + 1.0, f"failed after {waited:.2f} s"
        aof.thaw()
        assert await client.get("k") == b"v"
    finally:
        aof.thaw()
        await client.aclose()
    lines = [r.getMessage() for r in caplog.records if "answering" in r.getMessage()]
    assert len(lines) == 2, lines  # one "not answering", one "answering again"


async def test_a_refused_connection_fails_requests_by_the_deadline_and_recovers(
    aof: AofRedis,
) -> None:
    client = client_for(aof.url, read_timeout=0.5, retry_deadline=1.0)
    try:
        await client.set("k", b"v")
        aof.kill()
        started = time.monotonic()
        with pytest.raises((ConnectionError, TimeoutError)):
            await client.get("k")
        assert time.monotonic() - started < 1.0 + 0.5 + 1.0
        aof.start()
        assert await client.get("k") == b"v"  # the append-only file kept it
    finally:
        await client.aclose()
