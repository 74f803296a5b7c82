"""Two mounts of one volume (two "machines"): what one does, the other sees.

Guarantees under test (README "Many machines"): close-to-open consistency even
over a stale page cache, namespace and attribute changes visible within the
event latency, exactly one winner for racing O_EXCL creates, mkdirs and
renames, writes to different blocks from both nodes survive, O_APPEND from both
nodes never overwrites.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mounting import Mount, wait_for
from .racing import mount_pair, race

VISIBLE_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def pair(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mount, Mount]]:  # type: ignore[no-untyped-def]
    """Two mounts ("node A" and "node B") of one fresh volume."""
    with mount_pair(redis_server.url, tmp_path_factory.mktemp("pair")) as nodes:
        yield nodes


@pytest.fixture
def dirs(pair: tuple[Mount, Mount], request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """The same fresh directory, as seen through node A and through node B."""
    a, b = pair
    name = f"{request.node.name[:50]}-{secrets.token_hex(3)}"
    (a.path / name).mkdir()
    wait_for(lambda: (b.path / name).is_dir(), VISIBLE_WITHIN_S)
    return a.path / name, b.path / name


def test_closed_file_is_read_whole_and_current_over_a_stale_cache(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "f").write_bytes(b"old" * 1000)
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)
    assert (b / "f").read_bytes() == b"old" * 1000  # B now has the old pages cached
    new = os.urandom(200_000)
    (a / "f").write_bytes(new)  # closed on A
    assert (b / "f").read_bytes() == new


def test_same_size_rewrite_is_not_served_from_cache(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "f").write_bytes(b"x" * 5000)
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)
    assert (b / "f").read_bytes() == b"x" * 5000
    (a / "f").write_bytes(b"y" * 5000)
    assert (b / "f").read_bytes() == b"y" * 5000


def test_create_rename_unlink_are_seen(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    assert not (b / "n").exists()  # B may now cache "no such name"
    (a / "n").write_bytes(b"1")
    wait_for(lambda: (b / "n").exists(), VISIBLE_WITHIN_S)
    os.rename(a / "n", a / "m")
    wait_for(lambda: not (b / "n").exists() and (b / "m").exists(), VISIBLE_WITHIN_S)
    os.unlink(a / "m")
    wait_for(lambda: not (b / "m").exists(), VISIBLE_WITHIN_S)
    assert os.listdir(b) == []


def test_attribute_changes_are_seen(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "f").write_bytes(b"0123456789")
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)
    assert os.stat(b / "f").st_size == 10  # cached on B
    os.chmod(a / "f", 0o600)
    wait_for(lambda: os.stat(b / "f").st_mode & 0o777 == 0o600, VISIBLE_WITHIN_S)
    os.chown(a / "f", 1234, 5678)
    wait_for(
        lambda: (os.stat(b / "f").st_uid, os.stat(b / "f").st_gid) == (1234, 5678), VISIBLE_WITHIN_S
    )
    os.utime(a / "f", ns=(10**18, 2 * 10**18))
    wait_for(lambda: os.stat(b / "f").st_mtime_ns == 2 * 10**18, VISIBLE_WITHIN_S)
    os.truncate(a / "f", 3)
    wait_for(lambda: os.stat(b / "f").st_size == 3, VISIBLE_WITHIN_S)
    assert (b / "f").read_bytes() == b"012"
    os.link(a / "f", a / "g")
    wait_for(lambda: os.stat(b / "f").st_nlink == 2 and (b / "g").exists(), VISIBLE_WITHIN_S)


def test_exclusive_create_has_one_winner(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    for i in range(20):
        name = f"x{i}"
        results = race(lambda n=name: os.open(a / n, flags), lambda n=name: os.open(b / n, flags))
        fds = [r for r in results if isinstance(r, int)]
        errs = [r for r in results if isinstance(r, OSError)]
        assert len(fds) == 1 and len(errs) == 1, results
        assert errs[0].errno == errno.EEXIST
        os.close(fds[0])
    assert len(os.listdir(a)) == 20


def test_mkdir_has_one_winner(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    for i in range(20):
        name = f"d{i}"
        results = race(lambda n=name: os.mkdir(a / n), lambda n=name: os.mkdir(b / n))
        errs = [r for r in results if isinstance(r, OSError)]
        assert len(errs) == 1 and errs[0].errno == errno.EEXIST, results


def test_racing_renames_onto_one_name_leave_one_file(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    for i in range(10):
        (a / f"s{i}a").write_bytes(b"from a")
        (a / f"s{i}b").write_bytes(b"from b")
        src_b, target = b / f"s{i}b", f"t{i}"
        wait_for(src_b.exists, VISIBLE_WITHIN_S)
        results = race(
            lambda s=a / f"s{i}a", t=a / target: os.rename(s, t),
            lambda s=src_b, t=b / target: os.rename(s, t),
        )
        assert results == [None, None]
        assert (a / f"t{i}").read_bytes() in (b"from a", b"from b")
    assert sorted(os.listdir(a)) == sorted(f"t{i}" for i in range(10))


def test_writes_to_different_blocks_from_two_nodes_both_survive(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    block = 64 * 1024
    (a / "f").write_bytes(bytes(4 * block))
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)

    def write(path: Path, offset: int, fill: bytes) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(fill * 1000)  # partial blocks: 1000 bytes inside a block

    for round_ in range(5):
        race(lambda: write(a / "f", 10, b"A"), lambda: write(b / "f", block + 10, b"B"))
        data = (a / "f").read_bytes()
        assert data[10:1010] == b"A" * 1000, round_
        assert data[block + 10 : block + 1010] == b"B" * 1000, round_
        (a / "f").write_bytes(bytes(4 * block))


def test_writes_inside_one_block_from_two_nodes_both_survive(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "f").write_bytes(bytes(8192))
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)

    def write(path: Path, offset: int, fill: bytes) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(fill * 100)

    for _ in range(5):
        race(lambda: write(a / "f", 0, b"A"), lambda: write(b / "f", 4096, b"B"))
        data = (b / "f").read_bytes()
        assert data[:100] == b"A" * 100 and data[4096:4196] == b"B" * 100


def test_appends_from_two_nodes_never_overwrite(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "log").write_bytes(b"")
    wait_for(lambda: (b / "log").exists(), VISIBLE_WITHIN_S)

    def append(path: Path, tag: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for i in range(100):
                os.write(fd, f"{tag}-{i:03d}\n".encode())
        finally:
            os.close(fd)

    race(lambda: append(a / "log", "A"), lambda: append(b / "log", "B"))
    lines = (a / "log").read_bytes().decode().splitlines()
    assert sorted(lines) == sorted(
        [f"A-{i:03d}" for i in range(100)] + [f"B-{i:03d}" for i in range(100)]
    )


def test_unlinked_while_open_on_other_node_stays_readable(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    payload = os.urandom(300_000)
    (a / "f").write_bytes(payload)
    wait_for(lambda: (b / "f").exists(), VISIBLE_WITHIN_S)
    before = os.statvfs(a)
    with open(b / "f", "rb") as held:
        os.unlink(a / "f")
        wait_for(lambda: not (b / "f").exists(), VISIBLE_WITHIN_S)
        assert held.read() == payload
        assert os.statvfs(a).f_ffree == before.f_ffree  # still allocated
    wait_for(lambda: os.statvfs(a).f_ffree == before.f_ffree + 1, VISIBLE_WITHIN_S)


def test_new_name_is_seen_in_a_directory_the_other_node_listed(dirs: tuple[Path, Path]) -> None:
    a, b = dirs
    (a / "old").write_bytes(b"")
    wait_for(lambda: os.listdir(b) == ["old"], VISIBLE_WITHIN_S)  # B now knows the whole listing
    assert not (b / "new").exists()
    (a / "new").write_bytes(b"n")
    wait_for(lambda: (b / "new").exists(), VISIBLE_WITHIN_S)
    assert sorted(os.listdir(b)) == ["new", "old"]


def test_names_created_here_in_a_new_directory_are_found_here(dirs: tuple[Path, Path]) -> None:
    a, _ = dirs
    (a / "d").mkdir()  # A knows "d" is empty: lookups of new names cost no round trip
    for i in range(20):
        (a / "d" / f"f{i}").write_bytes(b"x")
    assert sorted(os.listdir(a / "d")) == sorted(f"f{i}" for i in range(20))
    os.rename(a / "d" / "f0", a / "d" / "g0")
    assert (a / "d" / "g0").exists() and not (a / "d" / "f0").exists()
