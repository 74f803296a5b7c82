"""A mount on a Redis with a small maxmemory, as a user fills it.

The writer gets ENOSPC (not EIO), the file reads back whole up to what reached
Redis, fsck is clean, deleting and ``redisfuse gc`` make room for the same
again, df shows maxmemory, and refused start-ups are one line. Each test owns
its redis-server (noeviction, like a user's); mounts are real and cleaned up.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import secrets
from pathlib import Path

import pytest
import redis

from redisfuse.backend import open_volume
from redisfuse.fuse.errors import EXIT_REDIS

from .mounting import start_mount, stop_mount, wait_for
from .test_remount import assert_refused, cli

MIB = 1 << 20
MAXMEMORY = 32 * MIB


@pytest.fixture
def small_redis(redis_factory):  # type: ignore[no-untyped-def]
    return redis_factory("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction")


def _write_until_full(path: Path, data: bytes) -> int:
    """Write ``data`` by MiB until a write or the close fails; return bytes written.

    Fails the test unless that failure is ENOSPC.
    """
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with pytest.raises(OSError) as caught:
        try:
            while written < len(data):
                written += os.write(fd, data[written : written + MIB])
        finally:
            os.close(fd)
    assert caught.value.errno == errno.ENOSPC, caught.value
    return written


async def _read_elsewhere(url: str, volume: str, path: str) -> tuple[int, bytes]:
    """Size and contents of ``path`` as a library client (another node) reads them."""
    async with open_volume(url, volume=volume) as vol:
        return (await vol.stat(path)).size, await vol.read_file(path)


def test_a_writer_filling_redis_gets_enospc_and_loses_nothing_committed(
    small_redis,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    volume = f"full-{secrets.token_hex(4)}"
    m = start_mount(tmp_path / "mnt", small_redis.url, volume, tmp_path / "mount.log")
    try:
        st = os.statvfs(m.path)
        assert abs(st.f_blocks * st.f_frsize - MAXMEMORY) <= MAXMEMORY // 10
        assert st.f_bfree < st.f_blocks

        data = random.Random(0).randbytes(3 * MAXMEMORY)
        written = _write_until_full(m / "big.bin", data)
        # What reached Redis, as another node sees it, is a prefix of what was written.
        size, stored = asyncio.run(_read_elsewhere(small_redis.url, volume, "/big.bin"))
        assert MAXMEMORY // 4 < size <= written
        assert stored == data[:size]
        seen = (m / "big.bin").read_bytes()  # no EIO on the writer's node either
        assert len(seen) >= size and seen == data[: len(seen)]

        def df_shows_full() -> bool:  # Redis' memory figures are cached for a second
            st = os.statvfs(m.path)
            return st.f_bfree * st.f_frsize < MAXMEMORY // 10

        wait_for(df_shows_full, timeout=5)

        fsck = cli("fsck", "--redis-url", small_redis.url, "--volume", volume)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        assert "volume is consistent" in fsck.stdout

        (m / "big.bin").unlink()
        gc = cli("gc", "--redis-url", small_redis.url, "--volume", volume, "--grace", "0")
        assert gc.returncode == 0, gc.stdout + gc.stderr
        (m / "again.bin").write_bytes(data[:size])
        assert (m / "again.bin").read_bytes() == data[:size]
        assert "ENOSPC" not in m.log() and "Traceback" not in m.log()
        assert "out of memory" in m.log()
    finally:
        code = stop_mount(m)
    assert code == 0, m.log()


def test_mounting_a_new_volume_on_a_full_redis_is_one_line(
    small_redis,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    client = redis.Redis.from_url(small_redis.url)
    try:
        # Fill Redis with other data, then put maxmemory below what it uses.
        for i in range(MAXMEMORY // MIB):
            try:
                client.set(f"other:{i}", os.urandom(MIB))
            except redis.exceptions.OutOfMemoryError:
                break
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used // 2)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        done = cli("mount", mnt, "--redis-url", small_redis.url, "--volume", "fresh")
        assert_refused(done, EXIT_REDIS, "out of memory")
        assert not os.path.ismount(mnt)
    finally:
        client.close()
