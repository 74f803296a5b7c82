"""Every command that opens a volume refuses a Redis that may evict its keys, in one line.

An ``allkeys-*`` maxmemory-policy lets Redis delete any key when memory runs
short, the volume's among them: ``status``, ``fsck``, ``gc``, ``dump``, ``load``
and ``flock`` exit with code 4 and one line naming the policy and the fix, and
create nothing (no format). ``mount`` has its test in tests/mount (it needs
FUSE). Each case owns its redis-server; the dump to load comes from the
session's server.
"""

from __future__ import annotations

import io
import secrets
from pathlib import Path

import anyio
import pytest
from redis.asyncio import Redis

from redisfuse.backend import open_volume
from redisfuse.backend.dump import dump_volume
from redisfuse.backend.streams import AsyncWriter
from redisfuse.fuse.errors import EXIT_FORMAT, EXIT_REDIS

from .test_dump_load import cli, one_line_error


async def _dump_file(url: str, path: Path) -> None:
    buf = io.BytesIO()
    async with open_volume(url, volume=f"c-{secrets.token_hex(4)}") as vol:
        await vol.write_file("/a", b"a")
        await dump_volume(vol.inodes.ctx, AsyncWriter(buf))
    await anyio.Path(path).write_bytes(buf.getvalue())


def _arguments(command: str, url: str, volume: str, tmp_path: Path) -> list[str]:
    redis = ["--redis-url", url]
    if command == "dump":
        return ["dump", volume, str(tmp_path / "out.dump"), *redis]
    if command == "load":
        return ["load", str(tmp_path / "in.dump"), volume, *redis]
    if command == "flock":
        return ["flock", *redis, "--volume", volume, "nightly", "--", "true"]
    return [command, *redis, "--volume", volume]


@pytest.mark.parametrize("command", ["status", "fsck", "gc", "dump", "load", "flock"])
async def test_an_evicting_redis_is_refused_by_every_command(  # type: ignore[no-untyped-def]
    redis_server, redis_factory, tmp_path: Path, command: str
) -> None:
    await _dump_file(redis_server.url, tmp_path / "in.dump")
    server = redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lfu")
    volume = f"c-{secrets.token_hex(4)}"
    done = cli(*_arguments(command, server.url, volume, tmp_path))
    assert done.returncode == EXIT_REDIS, done.stderr.decode()
    line = one_line_error(done)
    assert f"Redis at {server.url} has maxmemory-policy allkeys-lfu" in line
    assert "CONFIG SET maxmemory-policy noeviction" in line
    raw = Redis.from_url(server.url)
    try:
        assert await raw.dbsize() == 0  # nothing formatted, no session registered
        # noeviction (and the volatile-* policies, as the volume's keys have no TTL)
        # are accepted: the same command then works.
        await raw.config_set("maxmemory-policy", "volatile-lru")
        if command not in ("load", "flock"):
            async with open_volume(server.url, volume=volume):
                pass  # only load (and flock, for a lock's sake) format a volume
        again = cli(*_arguments(command, server.url, volume, tmp_path))
        assert again.returncode == 0, again.stderr.decode()
    finally:
        await raw.aclose()


@pytest.mark.parametrize("command", ["status", "fsck", "gc", "dump"])
async def test_the_tools_do_not_format_a_volume_that_is_not_there(  # type: ignore[no-untyped-def]
    redis_server, tmp_path: Path, command: str
) -> None:
    """A mistyped volume name (or a volume that vanished) is reported, in one line
    with exit code 6, instead of being formatted as a new empty volume."""
    volume = f"c-{secrets.token_hex(4)}"
    done = cli(*_arguments(command, redis_server.url, volume, tmp_path))
    assert done.returncode == EXIT_FORMAT, done.stderr.decode()
    assert f"volume {volume!r} does not exist" in one_line_error(done)
    raw = Redis.from_url(redis_server.url)
    try:
        assert not [k async for k in raw.scan_iter(match=f"rf:{{{volume}}}:*")]
    finally:
        await raw.aclose()
