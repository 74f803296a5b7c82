"""Backend fixtures: a fresh volume per test on the session's redis-server.

Every test that uses ``vol`` ends with fsck: a finding fails the test. Coroutine
tests run on plain asyncio (pytest-asyncio in auto mode: the suite has no
trio-driven async tests; trio is reached through trio.run in plain tests).

A module whose ``ALSO_ON_CLUSTER`` is True (or a set of test names) runs those
tests twice: on the single server (``[single]``) and on the session's 3-master
Redis Cluster (``[cluster]``); ``vol``, ``vol2`` and ``raw`` follow, so the test
code is shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import Volume, open_volume
from redisfuse.backend.connect import RedisOptions, make_client
from redisfuse.backend.fsck import fsck


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" not in metafunc.fixturenames:
        return
    wanted = getattr(metafunc.module, "ALSO_ON_CLUSTER", False)
    if wanted is True or metafunc.function.__name__ in (wanted or ()):
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True)


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL the test's volumes use: the single server, or (``[cluster]``) the cluster."""
    if getattr(request, "param", "single") == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest_asyncio.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    """A client on the test server (or cluster), for looking at (or damaging) keys directly."""
    client = make_client(RedisOptions(url=redis_url))
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def vol(redis_url: str, volume_name: str, raw: Redis) -> AsyncIterator[Volume]:
    """A freshly formatted volume; fsck must find it consistent after the test."""
    async with open_volume(redis_url, volume=volume_name) as volume:
        yield volume
    report = await fsck(raw, volume_name)
    assert report.ok, f"fsck after test:\n{report}"


@pytest_asyncio.fixture
async def vol2(redis_url: str, volume_name: str, vol: Volume) -> AsyncIterator[Volume]:
    """A second, independent client (another "node") on the same volume as ``vol``."""
    async with open_volume(redis_url, volume=volume_name) as volume:
        yield volume
