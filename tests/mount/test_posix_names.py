"""POSIX names through a real mount: lookup, create, remove, links, rename, readdir, statfs.

One behaviour per test, each in its own directory of the module's mount, all
through ``os.*``. Shortcuts: renameat2(2) has no ``os`` wrapper, so it is
called through ctypes; the process umask is pinned to 022 for the module so
that expected modes do not depend on the caller's environment.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mounting import Mount, wait_for
from .posix_helpers import RENAME_EXCHANGE, RENAME_NOREPLACE, errno_name, populate, renameat2


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


# -- lookup and getattr -----------------------------------------------------------


def test_lookup_missing_name_is_enoent(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.stat(work / "absent")
    assert errno_name(exc) == "ENOENT"


def test_lookup_below_a_file_is_enotdir(work: Path) -> None:
    (work / "f").write_bytes(b"x")
    with pytest.raises(OSError) as exc:
        os.stat(work / "f" / "x")
    assert errno_name(exc) == "ENOTDIR"


def test_getattr_of_new_file(work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o640)
    try:
        os.write(fd, b"12345")
        via_fd = os.fstat(fd)
    finally:
        os.close(fd)
    st = os.stat(work / "f")
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_nlink, st.st_uid, st.st_gid, st.st_size) == (1, os.getuid(), os.getgid(), 5)
    assert st.st_ino == via_fd.st_ino == os.lstat(work / "f").st_ino
    assert [e.inode() for e in os.scandir(work)] == [st.st_ino]


def test_inode_numbers_are_distinct(work: Path) -> None:
    for i in range(20):
        (work / f"f{i}").write_bytes(b"")
    inos = {os.stat(work / f"f{i}").st_ino for i in range(20)}
    assert len(inos) == 20
    assert os.stat(work).st_ino not in inos


def test_dot_and_dotdot_resolve(work: Path) -> None:
    (work / "sub").mkdir()
    assert os.stat(work / "sub" / ".").st_ino == os.stat(work / "sub").st_ino
    assert os.stat(work / "sub" / "..").st_ino == os.stat(work).st_ino


# -- mknod -------------------------------------------------------------------------


def test_mkfifo_creates_a_fifo(work: Path) -> None:
    os.mkfifo(work / "pipe", 0o640)
    st = os.lstat(work / "pipe")
    assert stat.S_ISFIFO(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_size == 0


def test_fifo_on_the_mount_passes_data(work: Path) -> None:
    os.mkfifo(work / "pipe")
    reader = os.open(work / "pipe", os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer = os.open(work / "pipe", os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(writer, b"through the pipe")
        finally:
            os.close(writer)
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)


def test_mknod_char_device_as_root(work: Path) -> None:
    dev = os.makedev(1, 3)
    os.mknod(work / "null", stat.S_IFCHR | 0o600, dev)
    st = os.lstat(work / "null")
    assert stat.S_ISCHR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_rdev == dev


def test_mknod_regular_file(work: Path) -> None:
    os.mknod(work / "plain", stat.S_IFREG | 0o644)
    st = os.lstat(work / "plain")
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == 0
    assert (work / "plain").read_bytes() == b""


def test_mknod_socket(work: Path) -> None:
    os.mknod(work / "sock", stat.S_IFSOCK | 0o600)
    assert stat.S_ISSOCK(os.lstat(work / "sock").st_mode)


def test_mknod_existing_name_is_eexist(work: Path) -> None:
    os.mkfifo(work / "pipe")
    with pytest.raises(OSError) as exc:
        os.mkfifo(work / "pipe")
    assert errno_name(exc) == "EEXIST"


# -- mkdir, rmdir, unlink ------------------------------------------------------------


def test_mkdir_creates_an_empty_directory(work: Path) -> None:
    os.mkdir(work / "d", 0o750)
    st = os.stat(work / "d")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_nlink == 2
    assert os.listdir(work / "d") == []


def test_mkdir_existing_name_is_eexist(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.mkdir(work / "f")
    assert errno_name(exc) == "EEXIST"


def test_mkdir_below_a_file_is_enotdir(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.mkdir(work / "f" / "d")
    assert errno_name(exc) == "ENOTDIR"


def test_rmdir_removes_an_empty_directory(work: Path) -> None:
    os.mkdir(work / "d")
    os.rmdir(work / "d")
    assert os.listdir(work) == []
    with pytest.raises(OSError) as exc:
        os.stat(work / "d")
    assert errno_name(exc) == "ENOENT"


def test_rmdir_non_empty_is_enotempty(work: Path) -> None:
    os.mkdir(work / "d")
    (work / "d" / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rmdir(work / "d")
    assert errno_name(exc) == "ENOTEMPTY"
    assert os.listdir(work / "d") == ["f"]


def test_rmdir_of_a_file_is_enotdir(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rmdir(work / "f")
    assert errno_name(exc) == "ENOTDIR"


def test_unlink_removes_the_name(work: Path) -> None:
    (work / "f").write_bytes(b"data")
    os.unlink(work / "f")
    assert os.listdir(work) == []
    with pytest.raises(OSError) as exc:
        os.stat(work / "f")
    assert errno_name(exc) == "ENOENT"


def test_unlink_missing_name_is_enoent(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.unlink(work / "absent")
    assert errno_name(exc) == "ENOENT"


def test_unlink_of_a_directory_is_eisdir(work: Path) -> None:
    os.mkdir(work / "d")
    with pytest.raises(OSError) as exc:
        os.unlink(work / "d")
    assert errno_name(exc) == "EISDIR"


def test_unlinked_open_file_stays_readable(work: Path) -> None:
    (work / "f").write_bytes(b"still here")
    fd = os.open(work / "f", os.O_RDWR)
    try:
        os.unlink(work / "f")
        assert os.listdir(work) == []
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"!", 10)
        assert os.pread(fd, 100, 0) == b"still here!"
    finally:
        os.close(fd)


# -- symlinks --------------------------------------------------------------------


def test_symlink_and_readlink(work: Path) -> None:
    (work / "target").write_bytes(b"pointed at")
    os.symlink("target", work / "link")
    st = os.lstat(work / "link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    assert os.readlink(work / "link") == "target"
    assert (work / "link").read_bytes() == b"pointed at"
    assert os.stat(work / "link").st_ino == os.stat(work / "target").st_ino


def test_dangling_symlink(work: Path) -> None:
    os.symlink("nowhere", work / "link")
    assert os.readlink(work / "link") == "nowhere"
    with pytest.raises(OSError) as exc:
        os.stat(work / "link")
    assert errno_name(exc) == "ENOENT"


def test_symlink_with_long_absolute_target(work: Path) -> None:
    target = "/" + "/".join(["d" * 200] * 20)
    os.symlink(target, work / "link")
    assert os.readlink(work / "link") == target


def test_readlink_of_a_file_is_einval(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.readlink(work / "f")
    assert errno_name(exc) == "EINVAL"


# -- hard links ------------------------------------------------------------------


def test_hard_link_shares_the_inode_and_counts(work: Path) -> None:
    (work / "a").write_bytes(b"shared")
    os.link(work / "a", work / "b")
    sa, sb = os.stat(work / "a"), os.stat(work / "b")
    assert sa.st_ino == sb.st_ino
    assert sa.st_nlink == sb.st_nlink == 2
    with open(work / "b", "ab") as f:
        f.write(b" data")
    assert (work / "a").read_bytes() == b"shared data"


def test_unlink_of_one_hard_link_keeps_the_other(work: Path) -> None:
    (work / "a").write_bytes(b"kept")
    os.link(work / "a", work / "b")
    os.link(work / "a", work / "c")
    assert os.stat(work / "a").st_nlink == 3
    os.unlink(work / "a")
    assert os.stat(work / "b").st_nlink == 2
    os.unlink(work / "b")
    assert os.stat(work / "c").st_nlink == 1
    assert (work / "c").read_bytes() == b"kept"


def test_hard_link_to_a_directory_is_eperm(work: Path) -> None:
    os.mkdir(work / "d")
    with pytest.raises(OSError) as exc:
        os.link(work / "d", work / "e")
    assert errno_name(exc) == "EPERM"


def test_hard_link_onto_existing_name_is_eexist(work: Path) -> None:
    (work / "a").write_bytes(b"")
    (work / "b").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.link(work / "a", work / "b")
    assert errno_name(exc) == "EEXIST"


def test_hard_link_to_a_symlink_links_the_symlink(work: Path) -> None:
    os.symlink("somewhere", work / "s")
    os.link(work / "s", work / "s2", follow_symlinks=False)
    assert os.readlink(work / "s2") == "somewhere"
    assert os.lstat(work / "s").st_nlink == 2


# -- rename ----------------------------------------------------------------------


def test_rename_moves_the_name(work: Path) -> None:
    (work / "a").write_bytes(b"moved")
    ino = os.stat(work / "a").st_ino
    os.rename(work / "a", work / "b")
    assert os.listdir(work) == ["b"]
    assert os.stat(work / "b").st_ino == ino
    assert (work / "b").read_bytes() == b"moved"


def test_rename_into_another_directory(work: Path) -> None:
    os.mkdir(work / "d1")
    os.mkdir(work / "d2")
    (work / "d1" / "f").write_bytes(b"x")
    os.rename(work / "d1" / "f", work / "d2" / "g")
    assert os.listdir(work / "d1") == []
    assert os.listdir(work / "d2") == ["g"]


def test_rename_replaces_a_file(work: Path) -> None:
    (work / "a").write_bytes(b"new")
    (work / "b").write_bytes(b"old")
    ino = os.stat(work / "a").st_ino
    os.rename(work / "a", work / "b")
    assert os.listdir(work) == ["b"]
    assert os.stat(work / "b").st_ino == ino
    assert (work / "b").read_bytes() == b"new"


def test_rename_replacing_a_hard_link_keeps_the_other_name(work: Path) -> None:
    (work / "a").write_bytes(b"new")
    (work / "b").write_bytes(b"old")
    os.link(work / "b", work / "c")
    os.rename(work / "a", work / "b")
    assert os.stat(work / "c").st_nlink == 1
    assert (work / "c").read_bytes() == b"old"


def test_file_replaced_by_rename_stays_readable_while_open(work: Path) -> None:
    (work / "a").write_bytes(b"new")
    (work / "b").write_bytes(b"old, still open")
    fd = os.open(work / "b", os.O_RDONLY)
    try:
        os.rename(work / "a", work / "b")
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"old, still open"
    finally:
        os.close(fd)
    assert (work / "b").read_bytes() == b"new"


def test_moved_directory_has_its_new_parent_as_dotdot(work: Path) -> None:
    os.makedirs(work / "p1" / "child")
    os.mkdir(work / "p2")
    os.rename(work / "p1" / "child", work / "p2" / "child")
    assert os.stat(work / "p2" / "child" / "..").st_ino == os.stat(work / "p2").st_ino


def test_rename_replaces_an_empty_directory(work: Path) -> None:
    os.mkdir(work / "a")
    (work / "a" / "inside").write_bytes(b"")
    os.mkdir(work / "b")
    os.rename(work / "a", work / "b")
    assert os.listdir(work) == ["b"]
    assert os.listdir(work / "b") == ["inside"]


def test_rename_over_a_non_empty_directory_is_enotempty(work: Path) -> None:
    os.mkdir(work / "a")
    os.mkdir(work / "b")
    (work / "b" / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rename(work / "a", work / "b")
    assert errno_name(exc) in ("ENOTEMPTY", "EEXIST")
    assert sorted(os.listdir(work)) == ["a", "b"]


def test_rename_file_over_directory_is_eisdir(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.mkdir(work / "d")
    with pytest.raises(OSError) as exc:
        os.rename(work / "f", work / "d")
    assert errno_name(exc) == "EISDIR"


def test_rename_directory_over_file_is_enotdir(work: Path) -> None:
    os.mkdir(work / "d")
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rename(work / "d", work / "f")
    assert errno_name(exc) == "ENOTDIR"


def test_rename_directory_into_itself_is_einval(work: Path) -> None:
    os.makedirs(work / "d" / "sub")
    with pytest.raises(OSError) as exc:
        os.rename(work / "d", work / "d" / "sub" / "x")
    assert errno_name(exc) == "EINVAL"
    assert os.listdir(work / "d") == ["sub"]


def test_rename_between_hard_links_of_one_inode_does_nothing(work: Path) -> None:
    (work / "a").write_bytes(b"")
    os.link(work / "a", work / "b")
    os.rename(work / "a", work / "b")
    assert sorted(os.listdir(work)) == ["a", "b"]


def test_rename_noreplace_onto_existing_is_eexist(work: Path) -> None:
    (work / "a").write_bytes(b"a")
    (work / "b").write_bytes(b"b")
    with pytest.raises(OSError) as exc:
        renameat2(work / "a", work / "b", RENAME_NOREPLACE)
    assert errno_name(exc) == "EEXIST"
    assert (work / "b").read_bytes() == b"b"


def test_rename_noreplace_onto_free_name_renames(work: Path) -> None:
    (work / "a").write_bytes(b"a")
    renameat2(work / "a", work / "b", RENAME_NOREPLACE)
    assert os.listdir(work) == ["b"]


def test_rename_exchange_swaps_two_names(work: Path) -> None:
    (work / "a").write_bytes(b"content of a")
    os.mkdir(work / "b")
    ino_a, ino_b = os.stat(work / "a").st_ino, os.stat(work / "b").st_ino
    renameat2(work / "a", work / "b", RENAME_EXCHANGE)
    assert os.stat(work / "a").st_ino == ino_b
    assert os.stat(work / "b").st_ino == ino_a
    assert stat.S_ISDIR(os.stat(work / "a").st_mode)
    assert (work / "b").read_bytes() == b"content of a"


def test_rename_exchange_of_directories_across_parents(work: Path) -> None:
    os.makedirs(work / "p1" / "x")
    os.makedirs(work / "p2" / "y" / "deep")
    renameat2(work / "p1" / "x", work / "p2" / "y", RENAME_EXCHANGE)
    assert os.listdir(work / "p1" / "x") == ["deep"]
    assert os.listdir(work / "p2" / "y") == []
    assert os.stat(work / "p1" / "x" / "..").st_ino == os.stat(work / "p1").st_ino
    assert os.stat(work / "p2" / "y" / "..").st_ino == os.stat(work / "p2").st_ino


def test_rename_exchange_with_missing_target_is_enoent(work: Path) -> None:
    (work / "a").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        renameat2(work / "a", work / "b", RENAME_EXCHANGE)
    assert errno_name(exc) == "ENOENT"
    assert os.listdir(work) == ["a"]


# -- name length -------------------------------------------------------------------


def test_name_of_255_bytes_works(work: Path) -> None:
    name = "n" * 255
    (work / name).write_bytes(b"ok")
    assert os.listdir(work) == [name]
    assert (work / name).read_bytes() == b"ok"


def test_create_with_256_byte_name_is_enametoolong(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.open(work / ("n" * 256), os.O_CREAT | os.O_WRONLY, 0o644)
    assert errno_name(exc) == "ENAMETOOLONG"


def test_mkdir_with_256_byte_name_is_enametoolong(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.mkdir(work / ("d" * 256))
    assert errno_name(exc) == "ENAMETOOLONG"


def test_lookup_of_256_byte_name_is_enametoolong(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.stat(work / ("n" * 256))
    assert errno_name(exc) == "ENAMETOOLONG"


def test_rename_to_256_byte_name_is_enametoolong(work: Path) -> None:
    (work / "a").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.rename(work / "a", work / ("n" * 256))
    assert errno_name(exc) == "ENAMETOOLONG"


# -- readdir ---------------------------------------------------------------------


def test_readdir_lists_1000_entries_once_each(mount: Mount, work: Path) -> None:
    names = {f"entry-{i:04d}" for i in range(1000)}
    populate(mount, work, names)
    listed = os.listdir(work)
    assert len(listed) == len(set(listed)) == 1000
    assert set(listed) == names


def test_readdir_reports_types_and_inodes(work: Path) -> None:
    (work / "file").write_bytes(b"")
    os.mkdir(work / "dir")
    os.symlink("file", work / "link")
    os.mkfifo(work / "fifo")
    kinds = set()
    for entry in os.scandir(work):
        kinds.add(entry.name)
        assert entry.inode() == os.lstat(entry.path).st_ino
        assert entry.is_dir(follow_symlinks=False) == (entry.name == "dir")
        assert entry.is_symlink() == (entry.name == "link")
        assert entry.is_file(follow_symlinks=False) == (entry.name == "file")
    assert kinds == {"file", "dir", "link", "fifo"}


def test_readdir_is_complete_while_entries_come_and_go(mount: Mount, work: Path) -> None:
    """Names present throughout a listing appear exactly once, whatever else changes."""
    stable = {f"stable-{i:04d}" for i in range(1000)}
    populate(mount, work, stable)
    stop = threading.Event()
    churned = 0

    def churn() -> None:
        nonlocal churned
        i = 0
        while not stop.is_set():
            os.mknod(work / f"churn-{i:05d}", stat.S_IFREG | 0o644)
            if i >= 3:
                os.unlink(work / f"churn-{i - 3:05d}")
            i += 1
            churned = i

    worker = threading.Thread(target=churn)
    worker.start()
    try:
        wait_for(lambda: churned >= 5)
        for _ in range(5):
            start = churned
            listed = [e.name for e in os.scandir(work)]
            assert len(listed) == len(set(listed)), "a name was listed twice"
            missing = stable - set(listed)
            assert not missing, f"{len(missing)} stable names were skipped"
            wait_for(lambda start=start: churned > start + 2)  # changes between listings too
    finally:
        stop.set()
        worker.join()


def test_readdir_while_removing_each_listed_entry(mount: Mount, work: Path) -> None:
    """The rm -rf pattern: unlinking entries as they are listed must not skip any."""
    populate(mount, work, (f"e-{i:04d}" for i in range(300)))
    removed = 0
    with os.scandir(work) as it:
        for entry in it:
            os.unlink(entry.path)
            removed += 1
    assert removed == 300
    assert os.listdir(work) == []


# -- statfs ----------------------------------------------------------------------


def test_statfs_reports_name_max_255(mount: Mount) -> None:
    assert os.statvfs(mount.path).f_namemax == 255


def test_statfs_counts_a_created_and_a_removed_file(work: Path) -> None:
    before = os.statvfs(work)
    os.mknod(work / "f", stat.S_IFREG | 0o644)
    created = os.statvfs(work)
    assert created.f_files == before.f_files
    assert created.f_ffree == before.f_ffree - 1
    os.unlink(work / "f")
    assert os.statvfs(work).f_ffree == before.f_ffree


def test_statfs_counts_written_bytes(work: Path) -> None:
    before = os.statvfs(work)
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, os.urandom(1 << 20))
        os.fsync(fd)
    finally:
        os.close(fd)
    after = os.statvfs(work)
    used_before = (before.f_blocks - before.f_bfree) * before.f_frsize
    used_after = (after.f_blocks - after.f_bfree) * after.f_frsize
    assert used_after - used_before >= 1 << 20
    assert after.f_bavail <= after.f_bfree <= after.f_blocks
