"""fsspec's own abstract test suites (``fsspec.tests.abstract``) on a volume.

Every test class the installed fsspec ships there runs here; the set is
checked against the module, so a newer fsspec's new class fails the test of
the list until it is added.
"""

from __future__ import annotations

import inspect
import posixpath
import secrets
from collections.abc import Callable, Iterator

import fsspec.tests.abstract as abstract
import pytest
from fsspec.tests.abstract import AbstractFixtures

from redisfuse.fsspec import RedisFuseFileSystem

from ..conftest import RedisServer
from .conftest import assert_fsck_ok

RUN = {
    "AbstractCopyTests",
    "AbstractGetTests",
    "AbstractOpenTests",
    "AbstractPipeTests",
    "AbstractPutTests",
}


class RedisFuseFixtures(AbstractFixtures):  # type: ignore[misc]
    """One volume per class, as fsspec's memory tests share one store per class (a
    volume costs a session, and the volume open is most of a small test's time).
    The scenarios remove themselves; what a test leaves is removed after it."""

    @pytest.fixture(scope="class")
    @classmethod
    def fs(cls, redis_server: RedisServer) -> Iterator[RedisFuseFileSystem]:
        volume = f"t-{secrets.token_hex(6)}"
        fs = RedisFuseFileSystem(
            volume=volume, redis_url=redis_server.url, skip_instance_cache=True
        )
        yield fs
        fs.close()
        assert_fsck_ok(redis_server, volume)

    @pytest.fixture(autouse=True)
    def _cleared(self, fs: RedisFuseFileSystem) -> Iterator[None]:
        yield
        left = fs.ls("/", detail=False)
        if left:
            fs.rm(left, recursive=True)

    @pytest.fixture
    def fs_path(self) -> str:
        return "/"

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return posixpath.join


class TestCopy(abstract.AbstractCopyTests, RedisFuseFixtures):  # type: ignore[misc]
    pass


class TestGet(abstract.AbstractGetTests, RedisFuseFixtures):  # type: ignore[misc]
    pass


class TestPut(abstract.AbstractPutTests, RedisFuseFixtures):  # type: ignore[misc]
    pass


class TestOpen(abstract.AbstractOpenTests, RedisFuseFixtures):  # type: ignore[misc]
    pass


class TestPipe(abstract.AbstractPipeTests, RedisFuseFixtures):  # type: ignore[misc]
    pass


def test_every_abstract_class_runs() -> None:
    shipped = {
        name
        for name, obj in inspect.getmembers(abstract, inspect.isclass)
        if name.startswith("Abstract") and name.endswith("Tests")
    }
    assert shipped == RUN
