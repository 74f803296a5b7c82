"""The volume behind a filesystem object: opened once, kept alive, closed without leaks,
on fsspec's IO thread (sync use) and on the caller's event loop (``asynchronous=True``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import anyio
import pytest
from redis.asyncio import Redis

from redisfuse.backend import open_volume

from ..conftest import RedisServer
from .conftest import MakeFs, assert_fsck_ok


async def _clients(url: str) -> int:
    """Connections to the server other than the one asking."""
    client = Redis.from_url(url)
    try:
        return int((await client.info("clients"))["connected_clients"]) - 1
    finally:
        await client.aclose()


async def _sessions(url: str, volume: str) -> list[str]:
    """The mountpoints recorded by the volume's live sessions, other than the asker's."""
    async with open_volume(url, volume=volume, read_only=True) as vol:
        own = vol.inodes.ctx.session
        return [s.mountpoint for s in await vol.inodes.sessions.list() if s.sid != own]


def test_sync_close_ends_the_session_and_the_connections(
    make_fs: MakeFs, redis_server: RedisServer, volume_name: str
) -> None:
    baseline = asyncio.run(_clients(redis_server.url))
    fs = make_fs()
    fs.pipe_file("/f", b"data")
    reader = fs.open("/f", "rb")  # left open: close releases it
    assert asyncio.run(_sessions(redis_server.url, volume_name)) == [f"fsspec:{os.getpid()}"]
    assert asyncio.run(_clients(redis_server.url)) > baseline
    fs.close()
    assert asyncio.run(_sessions(redis_server.url, volume_name)) == []
    assert asyncio.run(_clients(redis_server.url)) == baseline
    assert "closed" in repr(fs)
    with pytest.raises(OSError, match="closed with this file open"):
        reader.read()
    reader.close()
    assert fs.cat_file("/f") == b"data"  # the next use opens the volume again


def test_two_filesystems_are_two_nodes(make_fs: MakeFs) -> None:
    a, b = make_fs(), make_fs()
    a.pipe_file("/shared", b"from a")
    assert b.cat_file("/shared") == b"from a"
    with b.open("/shared", "ab") as f:
        f.write(b", then b")
    assert a.cat_file("/shared") == b"from a, then b"


def test_heartbeat_keeps_an_idle_session_alive(
    make_fs: MakeFs, redis_server: RedisServer, volume_name: str
) -> None:
    """Past its session timeout an idle holder stays alive: another node that unlinks
    the file it reads, and looks for dead sessions meanwhile, reclaims nothing."""
    data = os.urandom(200_000)
    holder = make_fs(session_timeout=1.0)
    holder.pipe_file("/held", data)
    f = holder.open("/held", "rb")

    async def other_node() -> None:
        async with open_volume(redis_server.url, volume=volume_name, session_timeout=1.0) as vol:
            await vol.remove("/held")
            with anyio.move_on_after(3.0):  # about 15 rounds of reclaiming dead sessions
                await vol.inodes.maintain()

    asyncio.run(other_node())
    assert f.read() == data
    f.close()


def test_exit_without_close_ends_the_session(redis_server: RedisServer, volume_name: str) -> None:
    script = textwrap.dedent(
        f"""
        import fsspec
        with fsspec.open("redisfuse://{volume_name}/f", "wb", redis_url="{redis_server.url}") as f:
            f.write(b"written before exit")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert asyncio.run(_sessions(redis_server.url, volume_name)) == []
    assert_fsck_ok(redis_server, volume_name)


async def test_asynchronous_use_on_the_running_loop(
    make_fs: MakeFs, redis_server: RedisServer
) -> None:
    baseline = await _clients(redis_server.url)
    tasks_before = asyncio.all_tasks()
    fs = make_fs(asynchronous=True)
    async with fs:
        await fs._pipe_file("/a/f", b"async")
        assert await fs._cat_file("/a/f", start=1) == b"sync"
        assert await fs._ls("/a", detail=False) == ["/a/f"]
        f = await fs.open_async("/a/g", "wb")
        async with f:
            await f.write(b"x" * 100_000)
        async with await fs.open_async("/a/g", "rb") as f:
            assert await f.read(10) == b"x" * 10
            assert len(await f.read()) == 100_000 - 10
        await fs._cp_file("/a/g", "/b")
        assert (await fs._info("/b"))["size"] == 100_000
        with pytest.raises(FileNotFoundError):
            await fs._cat_file("/missing")
        await fs._rm("/a", recursive=True)
        assert await fs._ls("/", detail=False) == ["/b"]
        assert asyncio.all_tasks() - tasks_before - {asyncio.current_task()}  # the owner
    assert asyncio.all_tasks() - tasks_before == set()
    assert await _clients(redis_server.url) == baseline


async def test_asynchronous_filesystem_refuses_a_second_loop(make_fs: MakeFs) -> None:
    fs = make_fs(asynchronous=True)
    await fs._pipe_file("/f", b"x")

    def other_loop() -> None:
        asyncio.run(fs._cat_file("/f"))

    try:
        with pytest.raises(RuntimeError, match="another event loop"):
            await asyncio.to_thread(other_loop)
    finally:
        await fs.aclose()


def test_redis_unreachable_is_a_clear_error(make_fs: MakeFs) -> None:
    fs = make_fs(redis_url="redis://127.0.0.1:1/0", volume="unreachable")
    with pytest.raises(OSError, match="127.0.0.1:1"):
        fs.ls("/")


def test_an_evicting_redis_is_refused_in_one_line(make_fs: MakeFs, redis_factory) -> None:  # type: ignore[no-untyped-def]
    """An allkeys-* maxmemory-policy could delete the volume's keys: the open is refused."""
    server = redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    fs = make_fs(redis_url=server.url, volume="evicting")
    with pytest.raises(OSError, match="maxmemory-policy allkeys-lru") as caught:
        fs.ls("/")
    assert "CONFIG SET maxmemory-policy noeviction" in str(caught.value)
    assert "\n" not in str(caught.value)
