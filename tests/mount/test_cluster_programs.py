"""Real programs on a mount of a volume on the 3-master Redis Cluster.

The tests are those of test_programs.py (tar, cp -a), collected here a
second time with this module's ``mount`` on the session's test cluster;
nothing is copied. The others (git among them: 5-12 s more per event loop)
stay single-server only, to keep CI short.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster_redis import RedisClusterInfo

from .conftest import module_mount
from .mounting import Mount
from .test_programs import (  # noqa: F401 (fixtures and tests collected here too)
    source_tarball,
    test_cp_a_round_trip,
    test_tar_extract_matches_local,
)


@pytest.fixture(scope="module")
def mount(
    redis_cluster: RedisClusterInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """A mount of a fresh volume on the cluster, shared by this module's tests."""
    with module_mount(redis_cluster.url, tmp_path_factory) as m:
        yield m
