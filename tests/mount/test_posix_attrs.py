"""POSIX attributes through a real mount: chmod, chown, times, link counts, xattrs.

One behaviour per test in its own directory of the module's mount. Time rules
are checked against the wall clock: an operation done between ``t0`` and
``t1`` must leave the times it changes inside that window, and the times it
must not change exactly as they were (set to a fixed old value first). ``t0``
is read from CLOCK_REALTIME_COARSE, the clock the kernel stamps "now" with
(UTIME_NOW arrives from the kernel as a time, up to a tick behind the fine clock).
Shortcuts: UTIME_OMIT needs utimensat(2) through ctypes (``os.utime`` cannot
express it); the process umask is pinned to 022 for the module.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .posix_helpers import UTIME_NOW, UTIME_OMIT, errno_name, utimensat

CLOCK_REALTIME_COARSE = 5
"""Linux's clock id; the ``time`` module has no name for it."""

OLD_NS = 1_000_000_000_123_456_789
"""A fixed time in 2001, with nanoseconds, that no operation of the test produces."""


@pytest.fixture(autouse=True)
def _umask() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def age(path: Path) -> os.stat_result:
    """Set atime and mtime of ``path`` to OLD_NS and return its stat."""
    os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    return os.lstat(path)


def during(action: Callable[[], object]) -> tuple[int, int]:
    """Run ``action``; return the wall-clock window (ns) around it."""
    t0 = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
    action()
    return t0, time.time_ns()


# -- chmod and chown -----------------------------------------------------------------


def test_chmod_sets_the_permission_bits(work: Path) -> None:
    (work / "f").write_bytes(b"")
    for mode in (0o600, 0o4755, 0o2750, 0o1777, 0o000):
        os.chmod(work / "f", mode)
        st = os.stat(work / "f")
        assert stat.S_IMODE(st.st_mode) == mode
        assert stat.S_ISREG(st.st_mode)


def test_chmod_of_a_directory_keeps_it_a_directory(work: Path) -> None:
    os.mkdir(work / "d")
    os.chmod(work / "d", 0o700)
    st = os.stat(work / "d")
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700


def test_chown_as_root(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.chown(work / "f", 1234, 5678)
    st = os.stat(work / "f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_chown_with_minus_one_keeps_that_id(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.chown(work / "f", 1234, 5678)
    os.chown(work / "f", -1, 42)
    st = os.stat(work / "f")
    assert (st.st_uid, st.st_gid) == (1234, 42)
    os.chown(work / "f", 7, -1)
    st = os.stat(work / "f")
    assert (st.st_uid, st.st_gid) == (7, 42)


def test_lchown_changes_the_symlink_not_its_target(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.symlink("f", work / "link")
    os.chown(work / "link", 99, 98, follow_symlinks=False)
    assert (os.lstat(work / "link").st_uid, os.lstat(work / "link").st_gid) == (99, 98)
    assert os.stat(work / "f").st_uid == os.getuid()


# -- explicit times ------------------------------------------------------------------


def test_utime_sets_nanosecond_times(work: Path) -> None:
    (work / "f").write_bytes(b"")
    atime, mtime = 1_234_567_890_123_456_789, 1_500_000_000_987_654_321
    os.utime(work / "f", ns=(atime, mtime))
    st = os.stat(work / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)


def test_utime_before_1970(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.utime(work / "f", ns=(-1_000_000_000, -86_400_000_000_000))
    st = os.stat(work / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (-1_000_000_000, -86_400_000_000_000)


def test_utime_now_sets_both_times_to_now(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    t0, t1 = during(lambda: os.utime(work / "f", None))
    st = os.stat(work / "f")
    assert t0 <= st.st_atime_ns <= t1
    assert t0 <= st.st_mtime_ns <= t1


def test_utimensat_omit_atime_changes_only_mtime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    utimensat(work / "f", (0, UTIME_OMIT), (2_000_000_000, 5))
    st = os.stat(work / "f")
    assert st.st_atime_ns == OLD_NS
    assert st.st_mtime_ns == 2_000_000_000 * 10**9 + 5


def test_utimensat_omit_mtime_with_now_atime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    t0, t1 = during(lambda: utimensat(work / "f", (0, UTIME_NOW), (0, UTIME_OMIT)))
    st = os.stat(work / "f")
    assert t0 <= st.st_atime_ns <= t1
    assert st.st_mtime_ns == OLD_NS


def test_utime_sets_ctime_to_now(work: Path) -> None:
    (work / "f").write_bytes(b"")
    t0, t1 = during(lambda: os.utime(work / "f", ns=(OLD_NS, OLD_NS)))
    assert t0 <= os.stat(work / "f").st_ctime_ns <= t1


# -- which operations move mtime and ctime ----------------------------------------------


def test_create_updates_parent_mtime_and_ctime(work: Path) -> None:
    before = age(work)
    t0, t1 = during(lambda: (work / "f").write_bytes(b""))
    st = os.stat(work)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_atime_ns == before.st_atime_ns


def test_mkdir_updates_parent_mtime_and_ctime(work: Path) -> None:
    age(work)
    t0, t1 = during(lambda: os.mkdir(work / "d"))
    st = os.stat(work)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_unlink_updates_parent_mtime_and_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work)
    t0, t1 = during(lambda: os.unlink(work / "f"))
    st = os.stat(work)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_rmdir_updates_parent_mtime_and_ctime(work: Path) -> None:
    os.mkdir(work / "d")
    age(work)
    t0, t1 = during(lambda: os.rmdir(work / "d"))
    st = os.stat(work)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_unlink_of_a_hard_link_updates_the_file_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.link(work / "f", work / "g")
    before = age(work / "g")
    t0, t1 = during(lambda: os.unlink(work / "f"))
    st = os.stat(work / "g")
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_mtime_ns == before.st_mtime_ns


def test_link_updates_parent_times_and_file_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work)
    before = age(work / "f")
    t0, t1 = during(lambda: os.link(work / "f", work / "g"))
    parent, file = os.stat(work), os.stat(work / "f")
    assert t0 <= parent.st_mtime_ns <= t1
    assert t0 <= parent.st_ctime_ns <= t1
    assert t0 <= file.st_ctime_ns <= t1
    assert file.st_mtime_ns == before.st_mtime_ns


def test_rename_updates_both_parents_mtime_and_ctime(work: Path) -> None:
    os.mkdir(work / "src")
    os.mkdir(work / "dst")
    (work / "src" / "f").write_bytes(b"")
    age(work / "src")
    age(work / "dst")
    t0, t1 = during(lambda: os.rename(work / "src" / "f", work / "dst" / "f"))
    for parent in ("src", "dst"):
        st = os.stat(work / parent)
        assert t0 <= st.st_mtime_ns <= t1, parent
        assert t0 <= st.st_ctime_ns <= t1, parent


def test_rename_within_a_directory_updates_its_mtime_and_ctime(work: Path) -> None:
    (work / "a").write_bytes(b"")
    age(work)
    t0, t1 = during(lambda: os.rename(work / "a", work / "b"))
    st = os.stat(work)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_write_updates_mtime_and_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")

    def write() -> None:
        with open(work / "f", "r+b") as f:
            f.write(b"changed")

    t0, t1 = during(write)
    st = os.stat(work / "f")
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_atime_ns == OLD_NS


def test_write_updates_mtime_seen_by_fstat_before_close(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    fd = os.open(work / "f", os.O_WRONLY)
    try:
        t0 = time.clock_gettime_ns(CLOCK_REALTIME_COARSE)
        os.write(fd, b"changed")
        st = os.fstat(fd)
        t1 = time.time_ns()
    finally:
        os.close(fd)
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_mtime_written_before_close_is_kept_at_close(work: Path) -> None:
    """What cp -p and rsync do: write, set the times on the open file, then close."""
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"copied")
        os.utime(fd, ns=(OLD_NS, OLD_NS))
    finally:
        os.close(fd)
    st = os.stat(work / "f")
    assert (st.st_atime_ns, st.st_mtime_ns) == (OLD_NS, OLD_NS)
    assert st.st_size == 6


def test_mtime_after_close_is_the_last_write_time(work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"x")
        seen = os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)
    assert os.stat(work / "f").st_mtime_ns == seen


def test_truncate_updates_mtime_and_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"0123456789")
    age(work / "f")
    t0, t1 = during(lambda: os.truncate(work / "f", 3))
    st = os.stat(work / "f")
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_ftruncate_updates_mtime_and_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"0123456789")
    age(work / "f")
    fd = os.open(work / "f", os.O_WRONLY)
    try:
        t0, t1 = during(lambda: os.ftruncate(fd, 20))
    finally:
        os.close(fd)
    st = os.stat(work / "f")
    assert t0 <= st.st_mtime_ns <= t1
    assert t0 <= st.st_ctime_ns <= t1


def test_chmod_updates_ctime_only(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    t0, t1 = during(lambda: os.chmod(work / "f", 0o600))
    st = os.stat(work / "f")
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_mtime_ns == OLD_NS
    assert st.st_atime_ns == OLD_NS


def test_chown_updates_ctime_only(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    t0, t1 = during(lambda: os.chown(work / "f", 1, 1))
    st = os.stat(work / "f")
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_mtime_ns == OLD_NS


def test_read_does_not_change_mtime_or_ctime(work: Path) -> None:
    (work / "f").write_bytes(b"content")
    before = age(work / "f")
    assert (work / "f").read_bytes() == b"content"
    st = os.stat(work / "f")
    assert st.st_mtime_ns == before.st_mtime_ns
    assert st.st_ctime_ns == before.st_ctime_ns


def test_rename_updates_the_moved_inode_ctime(work: Path) -> None:
    (work / "a").write_bytes(b"")
    before = age(work / "a")
    t0, t1 = during(lambda: os.rename(work / "a", work / "b"))
    st = os.stat(work / "b")
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_mtime_ns == before.st_mtime_ns


# -- directory link counts -----------------------------------------------------------


def test_directory_nlink_counts_subdirectories(work: Path) -> None:
    assert os.stat(work).st_nlink == 2
    for name in ("a", "b", "c"):
        os.mkdir(work / name)
    (work / "file").write_bytes(b"")
    os.symlink("a", work / "link")
    assert os.stat(work).st_nlink == 5
    os.rmdir(work / "b")
    assert os.stat(work).st_nlink == 4


def test_moving_a_directory_moves_its_link(work: Path) -> None:
    os.mkdir(work / "p1")
    os.mkdir(work / "p2")
    os.mkdir(work / "p1" / "child")
    assert (os.stat(work / "p1").st_nlink, os.stat(work / "p2").st_nlink) == (3, 2)
    os.rename(work / "p1" / "child", work / "p2" / "child")
    assert (os.stat(work / "p1").st_nlink, os.stat(work / "p2").st_nlink) == (2, 3)


def test_replacing_an_empty_directory_drops_its_link(work: Path) -> None:
    os.mkdir(work / "a")
    os.mkdir(work / "b")
    assert os.stat(work).st_nlink == 4
    os.rename(work / "a", work / "b")
    assert os.stat(work).st_nlink == 3


# -- extended attributes -------------------------------------------------------------


def test_xattr_set_get_list_remove(work: Path) -> None:
    f = work / "f"
    f.write_bytes(b"")
    os.setxattr(f, "user.colour", b"blue")
    os.setxattr(f, "user.empty", b"")
    assert os.getxattr(f, "user.colour") == b"blue"
    assert os.getxattr(f, "user.empty") == b""
    assert sorted(os.listxattr(f)) == ["user.colour", "user.empty"]
    os.removexattr(f, "user.colour")
    assert os.listxattr(f) == ["user.empty"]


def test_xattr_overwrite_replaces_the_value(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "user.k", b"first, longer value")
    os.setxattr(work / "f", "user.k", b"second")
    assert os.getxattr(work / "f", "user.k") == b"second"


def test_xattr_binary_value_of_64_kib(work: Path) -> None:
    value = os.urandom(64 * 1024)
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "user.big", value)
    assert os.getxattr(work / "f", "user.big") == value


def test_xattr_security_namespace(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "security.label", b"s0")
    assert os.getxattr(work / "f", "security.label") == b"s0"
    assert "security.label" in os.listxattr(work / "f")
    os.removexattr(work / "f", "security.label")
    assert "security.label" not in os.listxattr(work / "f")


def test_xattr_trusted_namespace_as_root(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "trusted.t", b"root only")
    assert os.getxattr(work / "f", "trusted.t") == b"root only"


def test_xattr_on_a_directory(work: Path) -> None:
    os.setxattr(work, "user.dir", b"yes")
    assert os.getxattr(work, "user.dir") == b"yes"


def test_getxattr_missing_is_enodata(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.getxattr(work / "f", "user.absent")
    assert errno_name(exc) == "ENODATA"


def test_removexattr_missing_is_enodata(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.removexattr(work / "f", "user.absent")
    assert errno_name(exc) == "ENODATA"


def test_xattr_create_flag_on_existing_is_eexist(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "user.k", b"old")
    with pytest.raises(OSError) as exc:
        os.setxattr(work / "f", "user.k", b"new", os.XATTR_CREATE)
    assert errno_name(exc) == "EEXIST"
    assert os.getxattr(work / "f", "user.k") == b"old"


def test_xattr_create_flag_on_missing_creates(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "user.k", b"new", os.XATTR_CREATE)
    assert os.getxattr(work / "f", "user.k") == b"new"


def test_xattr_replace_flag_on_missing_is_enodata(work: Path) -> None:
    (work / "f").write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.setxattr(work / "f", "user.k", b"new", os.XATTR_REPLACE)
    assert errno_name(exc) == "ENODATA"
    assert os.listxattr(work / "f") == []


def test_xattr_replace_flag_on_existing_replaces(work: Path) -> None:
    (work / "f").write_bytes(b"")
    os.setxattr(work / "f", "user.k", b"old")
    os.setxattr(work / "f", "user.k", b"new", os.XATTR_REPLACE)
    assert os.getxattr(work / "f", "user.k") == b"new"


def test_setxattr_updates_ctime_only(work: Path) -> None:
    (work / "f").write_bytes(b"")
    age(work / "f")
    t0, t1 = during(lambda: os.setxattr(work / "f", "user.k", b"v"))
    st = os.stat(work / "f")
    assert t0 <= st.st_ctime_ns <= t1
    assert st.st_mtime_ns == OLD_NS
