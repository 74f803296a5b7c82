"""Random file operations through a mount whose write buffer is smaller than the file.

With ``--write-buffer 1`` (MiB) and files of up to 6 MiB, commits run behind the
writer all the time while reads, stats, truncates, syncs and mapped reads come
in between (issue 24: a commit behind the writer could lose bytes). Every
operation is checked against a model (exerciser.py, in the manner of fsx), and
the file is read on a second node at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import module_mount
from .exerciser import Exerciser
from .mounting import Mount
from .posix_helpers import read_on_second_node


@pytest.fixture(scope="module")
def small_buffer(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:  # type: ignore[no-untyped-def]
    with module_mount(redis_server.url, tmp_path_factory, ["--write-buffer", "1"]) as m:
        yield m


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_on_a_file_larger_than_the_write_buffer(
    small_buffer: Mount, seed: int
) -> None:
    path = small_buffer.path / f"fsx-{seed}-{secrets.token_hex(3)}"
    ex = Exerciser(Path(path), seed)
    try:
        ex.run(1500)
    finally:
        ex.close()
    assert read_on_second_node(small_buffer, path) == bytes(ex.model)
