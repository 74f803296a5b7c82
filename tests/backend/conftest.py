"""Backend fixtures: a fresh volume per test on the session's redis-server.

Every test that uses ``vol`` ends with fsck: a finding fails the test. Coroutine
tests run on plain asyncio (pytest-asyncio in auto mode: the suite has no
trio-driven async tests; trio is reached through trio.run in plain tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import Volume, open_volume
from redisfuse.backend.fsck import fsck


@pytest_asyncio.fixture
async def raw(redis_server) -> AsyncIterator[Redis]:  # type: ignore[no-untyped-def]
    """A plain client on the test server, for looking at (or damaging) keys directly."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def vol(redis_server, volume_name: str, raw: Redis) -> AsyncIterator[Volume]:  # type: ignore[no-untyped-def]
    """A freshly formatted volume; fsck must find it consistent after the test."""
    async with open_volume(redis_server.url, volume=volume_name) as volume:
        yield volume
    report = await fsck(raw, volume_name)
    assert report.ok, f"fsck after test:\n{report}"


@pytest_asyncio.fixture
async def vol2(redis_server, volume_name: str, vol: Volume) -> AsyncIterator[Volume]:  # type: ignore[no-untyped-def]
    """A second, independent client (another "node") on the same volume as ``vol``."""
    async with open_volume(redis_server.url, volume=volume_name) as volume:
        yield volume
