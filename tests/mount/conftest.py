"""Mount fixtures: one real mount per test module, a fresh subdirectory per test.

Every test here is marked ``fuse`` and skips with the reason where FUSE is
missing. The mount is always unmounted at the end, also when a test fails or
the mount process died.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from .mounting import Mount, fuse_missing_reason, start_mount, stop_mount

_REASON = fuse_missing_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/mount" in str(item.path):
            item.add_marker(pytest.mark.fuse)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module")
def mount(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:  # type: ignore[no-untyped-def]
    """A mount of a fresh volume, shared by the tests of one module."""
    with module_mount(redis_server.url, tmp_path_factory) as m:
        yield m


@contextlib.contextmanager
def module_mount(
    url: str, tmp_path_factory: pytest.TempPathFactory, extra_args: Sequence[str] = ()
) -> Iterator[Mount]:
    """Mount a fresh volume on the Redis at ``url`` (with ``extra_args`` for the mount
    command); unmount (failing on a bad exit) after."""
    base = tmp_path_factory.mktemp("mount")
    volume = f"m-{secrets.token_hex(6)}"
    m = start_mount(base / "mnt", url, volume, base / "mount.log", list(extra_args))
    try:
        yield m
    finally:
        code = stop_mount(m)
        if code not in (0, None):
            pytest.fail(f"mount exited with {code}:\n{m.log()}", pytrace=False)


@pytest.fixture
def work(mount: Mount, request: pytest.FixtureRequest) -> Path:
    """A fresh directory inside the module's mount for one test."""
    path = mount.path / f"{request.node.name[:60]}-{secrets.token_hex(3)}"
    path.mkdir()
    return path
