"""fsspec's own abstract test suites (``fsspec.tests.abstract``) on a volume.

Every test class the installed fsspec ships there runs here; the set is
checked against the module, so a newer fsspec's new class fails the test of
the list until it is added.
"""

from __future__ import annotations

import inspect
import posixpath
from collections.abc import Callable

import fsspec.tests.abstract as abstract
import pytest
from fsspec.tests.abstract import AbstractFixtures

from redisfuse.fsspec import RedisFuseFileSystem

RUN = {"AbstractCopyTests", "AbstractGetTests", "AbstractOpenTests", "AbstractPipeTests", "AbstractPutTests"}


class RedisFuseFixtures(AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, rfs: RedisFuseFileSystem) -> RedisFuseFileSystem:
        return rfs

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
