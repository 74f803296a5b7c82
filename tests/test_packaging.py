"""Packaging invariants and the test harness itself."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import redis.asyncio

if TYPE_CHECKING:
    from conftest import RedisServer


def test_backend_imports_neither_trio_nor_pyfuse3() -> None:
    """The backend installs and imports without the `fuse` extra (STYLE rule 1)."""
    code = "import json, sys\nimport redisfuse.backend\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded = set(json.loads(out))
    forbidden = {"trio", "pyfuse3", "trio_asyncio"} & loaded
    assert not forbidden, f"importing redisfuse.backend loaded {sorted(forbidden)}"


@pytest.mark.asyncio
async def test_redis_server_fixture_answers_over_tcp(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_redis_server_fixture_answers_over_unix_socket(redis_server: RedisServer) -> None:
    client = redis.asyncio.Redis(unix_socket_path=str(redis_server.unix_socket))
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_volume_name_fixture_is_t_prefixed(volume_name: str) -> None:
    assert volume_name.startswith("t-")
    assert len(volume_name) > len("t-")
