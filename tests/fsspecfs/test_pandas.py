"""pandas reads and writes ``redisfuse://`` URLs through fsspec with storage_options."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from redisfuse.fsspec import RedisFuseFileSystem

from ..conftest import RedisServer
from .conftest import assert_fsck_ok


@pytest.fixture
def closes_cached(redis_server: RedisServer, volume_name: str) -> Iterator[None]:
    """pandas gets its filesystem from fsspec's instance cache: close what it made."""
    yield
    for fs in list(RedisFuseFileSystem._cache.values()):
        fs.close()
    RedisFuseFileSystem.clear_instance_cache()
    assert_fsck_ok(redis_server, volume_name)


@pytest.mark.usefixtures("closes_cached")
def test_csv_round_trip(redis_server: RedisServer, volume_name: str) -> None:
    frame = pd.DataFrame({"n": range(50_000), "name": [f"row {i}" for i in range(50_000)]})
    url = f"redisfuse://{volume_name}/tables/rows.csv"
    options = {"redis_url": redis_server.url}
    frame.to_csv(url, index=False, storage_options=options)
    back = pd.read_csv(url, storage_options=options)
    pd.testing.assert_frame_equal(back, frame)
    # pandas reads through the buffered file object: with nrows it stops early.
    head = pd.read_csv(url, storage_options=options, nrows=10)
    pd.testing.assert_frame_equal(head, frame.head(10))
