"""fsspec fixtures: a ``redisfuse://`` filesystem on a fresh volume, fsck'd after the test.

Shortcuts: the filesystems are made with ``skip_instance_cache`` so that no
test meets another's instance; each is closed in teardown, before fsck.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from redisfuse.backend.fsck import fsck
from redisfuse.fsspec import RedisFuseFileSystem

from ..conftest import RedisServer

MakeFs = Callable[..., RedisFuseFileSystem]


async def _fsck(url: str, volume: str) -> str | None:
    client = Redis.from_url(url)
    try:
        report = await fsck(client, volume)
    finally:
        await client.aclose()
    return None if report.ok else str(report)


def assert_fsck_ok(server: RedisServer, volume: str) -> None:
    findings = asyncio.run(_fsck(server.url, volume))
    assert findings is None, f"fsck after test:\n{findings}"


@pytest.fixture
def make_fs(redis_server: RedisServer, volume_name: str) -> Iterator[MakeFs]:
    """Makes filesystems on the test's volume (options as keyword arguments)."""
    made: list[RedisFuseFileSystem] = []

    def make(**options: Any) -> RedisFuseFileSystem:
        options.setdefault("volume", volume_name)
        options.setdefault("redis_url", redis_server.url)
        fs = RedisFuseFileSystem(skip_instance_cache=True, **options)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        if not fs.asynchronous:
            fs.close()
    assert_fsck_ok(redis_server, volume_name)


@pytest.fixture
def rfs(make_fs: MakeFs) -> RedisFuseFileSystem:
    """A synchronous filesystem on the test's fresh volume."""
    return make_fs()
