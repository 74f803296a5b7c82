"""Large files stream by chunks: memory stays far below the file size, and a byte range
reads only the blocks it covers (measured on the Redis server's own byte counters).

Shortcuts: memory is measured with tracemalloc (Python allocations of every
thread, fsspec's IO thread included), not RSS; the block cache (64 MiB by
default, bounded) is set to 2 MiB and the write buffer to 1 MiB so that what
is measured is the streaming. (Measured by hand: with the default 4 MiB write
buffer, put_file peaks at 23 MiB for a 24 MiB and for a 64 MiB file alike; the
backend's commit holds a few copies of the buffer.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from redisfuse.fsspec import RedisFuseFileSystem

from ..conftest import RedisServer
from .conftest import MakeFs

MIB = 1 << 20
SIZE = 24 * MIB
CACHE = 2 * MIB
PEAK_LIMIT = SIZE // 2
"""Streaming holds a few chunks and copies of the backend's write buffer, never the file."""


def _peak(fn: Callable[..., Any], *args: Any) -> int:
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


async def _net_output(url: str) -> int:
    client = Redis.from_url(url)
    try:
        return int((await client.info("stats"))["total_net_output_bytes"])
    finally:
        await client.aclose()


@pytest.fixture
def big_local(tmp_path: Path) -> Iterator[Path]:
    """A local file of SIZE random (incompressible) bytes, written a MiB at a time."""
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for _ in range(SIZE // MIB):
            f.write(os.urandom(MIB))
    yield path


@pytest.fixture
def rfs(make_fs: MakeFs) -> RedisFuseFileSystem:
    return make_fs(cache_bytes=CACHE, write_buffer_bytes=MIB)


def test_put_get_cp_stream(
    rfs: RedisFuseFileSystem, big_local: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    rfs.ls("/")  # open the volume before measuring
    peaks = {
        "put": _peak(rfs.put_file, str(big_local), "/big.bin"),
        "cp": _peak(rfs.cp_file, "/big.bin", "/copy.bin"),
        "get": _peak(rfs.get_file, "/copy.bin", str(tmp_path / "back.bin")),
    }
    assert _sha(tmp_path / "back.bin") == _sha(big_local)
    assert rfs.size("/copy.bin") == SIZE
    for op, peak in peaks.items():
        assert peak < PEAK_LIMIT, f"{op} held {peak / MIB:.1f} MiB for a {SIZE / MIB:.0f} MiB file"

    # A 100-byte range in the middle costs about one block from Redis, not the file.
    before = asyncio.run(_net_output(redis_server.url))
    middle = rfs.cat_file("/big.bin", start=SIZE // 2, end=SIZE // 2 + 100)
    sent = asyncio.run(_net_output(redis_server.url)) - before
    with big_local.open("rb") as f:
        f.seek(SIZE // 2)
        assert middle == f.read(100)
    assert sent < 3 * 64 * 1024, f"Redis sent {sent} bytes for a 100-byte range"


def test_file_object_reads_a_chunk_at_a_time(rfs: RedisFuseFileSystem, big_local: Path) -> None:
    rfs.put_file(str(big_local), "/big.bin")
    digest = hashlib.sha256()

    def read_all() -> None:
        with rfs.open("/big.bin", "rb") as f:
            while chunk := f.read(256 * 1024):
                digest.update(chunk)

    peak = _peak(read_all)
    assert digest.hexdigest() == _sha(big_local)
    assert peak < PEAK_LIMIT
