"""POSIX file data through a real mount: open flags, read/write, sparse and huge offsets,
truncate, fsync/flush, shared mmap, and a file larger than the block cache.

One behaviour per test in its own directory of the module's mount. Where a
test must know that data reached Redis (not just the kernel's page cache or the
mount's write buffer), it reads the file through a second node: a backend
``Volume`` in the test process. Shortcuts: the large-file test writes 100 MiB
of random data (incompressible, so the codec cannot shrink it) and drops the
kernel's page cache for the file with posix_fadvise before reading it back.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import pytest

from .mounting import Mount
from .posix_helpers import errno_name, read_on_second_node

BLOCK = 64 * 1024
GIB = 1 << 30


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages, so the next read asks the mount."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- open flags --------------------------------------------------------------------


def test_open_excl_creates_a_new_file(work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    assert os.listdir(work) == ["f"]


def test_open_excl_on_existing_name_is_eexist(work: Path) -> None:
    (work / "f").write_bytes(b"keep")
    with pytest.raises(OSError) as exc:
        os.open(work / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    assert errno_name(exc) == "EEXIST"
    assert (work / "f").read_bytes() == b"keep"


def test_open_missing_without_creat_is_enoent(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.open(work / "f", os.O_RDONLY)
    assert errno_name(exc) == "ENOENT"


def test_open_trunc_empties_the_file(work: Path) -> None:
    (work / "f").write_bytes(b"x" * 200_000)
    fd = os.open(work / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.fstat(fd).st_size == 0
    finally:
        os.close(fd)
    assert os.stat(work / "f").st_size == 0
    assert (work / "f").read_bytes() == b""


def test_open_trunc_then_write_leaves_no_old_bytes(work: Path) -> None:
    (work / "f").write_bytes(b"o" * 100_000)
    with open(work / "f", "wb") as f:
        f.write(b"new")
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == b"new"


def test_open_append_writes_at_the_end(work: Path) -> None:
    (work / "f").write_bytes(b"abc")
    fd = os.open(work / "f", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"def")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"ghi")
    finally:
        os.close(fd)
    assert (work / "f").read_bytes() == b"abcdefghi"


def test_two_append_handles_interleave_without_overwriting(work: Path) -> None:
    (work / "f").write_bytes(b"")
    a = os.open(work / "f", os.O_WRONLY | os.O_APPEND)
    b = os.open(work / "f", os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(5):
            os.write(a, b"A%d" % i)
            os.write(b, b"B%d" % i)
    finally:
        os.close(a)
        os.close(b)
    assert (work / "f").read_bytes() == b"A0B0A1B1A2B2A3B3A4B4"


def test_write_to_a_read_only_handle_is_ebadf(work: Path) -> None:
    (work / "f").write_bytes(b"")
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert errno_name(exc) == "EBADF"


def test_open_directory_for_writing_is_eisdir(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.open(work, os.O_WRONLY)
    assert errno_name(exc) == "EISDIR"


# -- read and write ----------------------------------------------------------------


def test_write_read_across_block_boundaries(work: Path) -> None:
    data = os.urandom(3 * BLOCK + 123)
    fd = os.open(work / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.pwrite(fd, data, BLOCK - 7) == len(data)
        assert os.fstat(fd).st_size == BLOCK - 7 + len(data)
        assert os.pread(fd, len(data), BLOCK - 7) == data
        assert os.pread(fd, BLOCK - 7, 0) == bytes(BLOCK - 7)
    finally:
        os.close(fd)
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == bytes(BLOCK - 7) + data


def test_overwrite_in_the_middle_keeps_the_rest(work: Path) -> None:
    data = bytearray(os.urandom(2 * BLOCK))
    (work / "f").write_bytes(data)
    fd = os.open(work / "f", os.O_WRONLY)
    try:
        os.pwrite(fd, b"MIDDLE", BLOCK - 3)
    finally:
        os.close(fd)
    data[BLOCK - 3 : BLOCK + 3] = b"MIDDLE"
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == bytes(data)


def test_read_at_or_past_the_end_is_empty(work: Path) -> None:
    (work / "f").write_bytes(b"12345")
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 3) == b"45"
        assert os.pread(fd, 10, 5) == b""
        assert os.pread(fd, 10, 1 << 40) == b""
    finally:
        os.close(fd)


def test_write_past_2_gib(work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"across-2GiB", 2 * GIB - 5)
        os.pwrite(fd, b"past-4GiB", 4 * GIB + 1)
    finally:
        os.close(fd)
    assert os.stat(work / "f").st_size == 4 * GIB + 1 + len(b"past-4GiB")
    drop_page_cache(work / "f")
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 11, 2 * GIB - 5) == b"across-2GiB"
        assert os.pread(fd, 9, 4 * GIB + 1) == b"past-4GiB"
        assert os.pread(fd, 16, 3 * GIB) == bytes(16)
    finally:
        os.close(fd)


def test_sparse_file_at_10_to_the_15(work: Path) -> None:
    offset = 10**15
    fd = os.open(work / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.lseek(fd, offset, os.SEEK_SET) == offset
        assert os.write(fd, b"z") == 1
    finally:
        os.close(fd)
    st = os.stat(work / "f")
    assert st.st_size == offset + 1
    assert st.st_blocks * 512 < 1 << 20, "a sparse file must not allocate its holes"
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == bytes(4096)
        assert os.pread(fd, 4096, offset // 2) == bytes(4096)
        assert os.pread(fd, 4096, offset - 4095) == bytes(4095) + b"z"
    finally:
        os.close(fd)


def test_write_beyond_the_size_limit_is_efbig(work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        with pytest.raises(OSError) as exc:
            os.pwrite(fd, b"x", 1 << 62)
    finally:
        os.close(fd)
    assert errno_name(exc) in ("EFBIG", "EINVAL")


# -- truncate --------------------------------------------------------------------


def test_truncate_down(work: Path) -> None:
    data = os.urandom(3 * BLOCK)
    (work / "f").write_bytes(data)
    os.truncate(work / "f", BLOCK + 10)
    assert os.stat(work / "f").st_size == BLOCK + 10
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == data[: BLOCK + 10]


def test_truncate_up_reads_zeros(work: Path) -> None:
    (work / "f").write_bytes(b"abc")
    os.truncate(work / "f", 3 * BLOCK)
    assert os.stat(work / "f").st_size == 3 * BLOCK
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == b"abc" + bytes(3 * BLOCK - 3)


def test_truncate_down_then_up_does_not_resurrect_old_bytes(work: Path) -> None:
    (work / "f").write_bytes(b"x" * (2 * BLOCK))
    os.truncate(work / "f", 100)
    os.truncate(work / "f", 2 * BLOCK)
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == b"x" * 100 + bytes(2 * BLOCK - 100)


def test_ftruncate_drops_unflushed_writes_past_the_new_end(mount: Mount, work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"y" * (BLOCK + 500))
        os.ftruncate(fd, 10)
        assert os.fstat(fd).st_size == 10
        os.pwrite(fd, b"!", 20)
    finally:
        os.close(fd)
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == b"y" * 10 + bytes(10) + b"!"
    assert read_on_second_node(mount, work / "f") == b"y" * 10 + bytes(10) + b"!"


def test_ftruncate_on_a_read_only_handle_is_rejected(work: Path) -> None:
    (work / "f").write_bytes(b"abc")
    fd = os.open(work / "f", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
    assert errno_name(exc) in ("EBADF", "EINVAL")
    assert (work / "f").read_bytes() == b"abc"


def test_truncate_of_a_directory_is_eisdir(work: Path) -> None:
    with pytest.raises(OSError) as exc:
        os.truncate(work, 0)
    assert errno_name(exc) == "EISDIR"


# -- fsync, flush, close ---------------------------------------------------------------


def test_fsync_makes_writes_visible_to_another_node(mount: Mount, work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"durable")
        os.fsync(fd)
        assert read_on_second_node(mount, work / "f") == b"durable"
    finally:
        os.close(fd)


def test_fdatasync_makes_writes_visible_to_another_node(mount: Mount, work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"data only")
        os.fdatasync(fd)
        assert read_on_second_node(mount, work / "f") == b"data only"
    finally:
        os.close(fd)


def test_close_of_a_duplicate_flushes(mount: Mount, work: Path) -> None:
    fd = os.open(work / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"flushed by close")
        os.close(os.dup(fd))  # close() of any descriptor sends FLUSH for the open file
        assert read_on_second_node(mount, work / "f") == b"flushed by close"
    finally:
        os.close(fd)


def test_close_makes_writes_visible_to_another_node(mount: Mount, work: Path) -> None:
    data = os.urandom(5 * BLOCK + 1)
    (work / "f").write_bytes(data)
    assert read_on_second_node(mount, work / "f") == data


# -- mmap ------------------------------------------------------------------------


def test_shared_writable_mmap_reaches_the_file(mount: Mount, work: Path) -> None:
    size = 2 * BLOCK + 100
    (work / "f").write_bytes(bytes(size))
    fd = os.open(work / "f", os.O_RDWR)
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as mm:
            mm[0:5] = b"start"
            mm[BLOCK - 2 : BLOCK + 2] = b"edge"
            mm[size - 3 : size] = b"end"
            mm.flush()
    finally:
        os.close(fd)
    expected = bytearray(size)
    expected[0:5] = b"start"
    expected[BLOCK - 2 : BLOCK + 2] = b"edge"
    expected[size - 3 : size] = b"end"
    drop_page_cache(work / "f")
    assert (work / "f").read_bytes() == bytes(expected)
    assert read_on_second_node(mount, work / "f") == bytes(expected)


def test_shared_mmap_sees_writes_made_through_write(work: Path) -> None:
    (work / "f").write_bytes(bytes(BLOCK))
    fd = os.open(work / "f", os.O_RDWR)
    try:
        with mmap.mmap(fd, BLOCK, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            os.pwrite(fd, b"written", 100)
            assert mm[100:107] == b"written"
    finally:
        os.close(fd)


# -- larger than the block cache ---------------------------------------------------------


def test_file_larger_than_the_block_cache(work: Path) -> None:
    """100 MiB through a 64 MiB block cache: every byte must come back."""
    chunk = 1 << 20
    written = hashlib.sha256()
    seed = os.urandom(chunk)
    fd = os.open(work / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        for i in range(100):
            piece = i.to_bytes(4, "little") + seed[4:]  # every MiB differs, cheaply
            written.update(piece)
            assert os.write(fd, piece) == chunk
    finally:
        os.close(fd)
    try:
        assert os.stat(work / "big").st_size == 100 * chunk
        drop_page_cache(work / "big")
        read_back = hashlib.sha256()
        with open(work / "big", "rb", buffering=0) as f:
            while piece := f.read(chunk):
                read_back.update(piece)
        assert read_back.hexdigest() == written.hexdigest()
    finally:
        os.unlink(work / "big")  # give the 100 MiB back to the session's redis-server
