"""The ``redisfuse://`` filesystem's operations, byte ranges and errors, used synchronously."""

from __future__ import annotations

import asyncio
import datetime
import errno
import json
import os
import random
import subprocess
import sys

import fsspec
import pytest

from redisfuse.backend import open_volume
from redisfuse.fsspec import RedisFuseFileSystem

from ..conftest import RedisServer
from .conftest import MakeFs, assert_fsck_ok

BLOCK = 64 * 1024


def test_protocol_is_registered_by_the_entry_point() -> None:
    assert fsspec.get_filesystem_class("redisfuse") is RedisFuseFileSystem


def test_fsspec_frontend_needs_neither_fuse_nor_trio() -> None:
    """Like the backend, it installs without the ``fuse`` extra (STYLE rule 1)."""
    code = "import json, sys\nimport redisfuse.fsspec\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert not {"trio", "pyfuse3", "trio_asyncio", "redisfuse.fuse"} & set(json.loads(out))


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("redisfuse://vol/a/b.csv", "/a/b.csv"),
        ("redisfuse://vol", "/"),
        ("redisfuse:///a//b/", "/a/b"),
        ("/a/b", "/a/b"),
        ("a/b", "/a/b"),
        ("/", "/"),
    ],
)
def test_paths_are_absolute_within_the_volume(url: str, path: str) -> None:
    assert RedisFuseFileSystem._strip_protocol(url) == path


def test_url_names_the_volume(redis_server: RedisServer, volume_name: str) -> None:
    url = f"redisfuse://{volume_name}/dir/x.bin"
    with fsspec.open(url, "wb", redis_url=redis_server.url) as f:
        f.write(b"through fsspec.open")
    fs, path = fsspec.core.url_to_fs(url, redis_url=redis_server.url)
    try:
        assert isinstance(fs, RedisFuseFileSystem)
        assert (fs.volume, path) == (volume_name, "/dir/x.bin")
        assert fs.unstrip_protocol(path) == url
        with fsspec.open(url, "rb", redis_url=redis_server.url) as f:
            assert f.read() == b"through fsspec.open"
    finally:
        fs.close()
        RedisFuseFileSystem.clear_instance_cache()
    assert_fsck_ok(redis_server, volume_name)


def test_info_and_ls(rfs: RedisFuseFileSystem) -> None:
    rfs.pipe_file("/d/f", b"12345")
    rfs.mkdir("/d/sub")
    info = rfs.info("/d/f")
    assert (info["name"], info["size"], info["type"], info["islink"]) == ("/d/f", 5, "file", False)
    assert rfs.info("/d")["type"] == "directory"
    assert rfs.ls("/d", detail=False) == ["/d/f", "/d/sub"]
    assert [(e["name"], e["type"]) for e in rfs.ls("/d")] == [
        ("/d/f", "file"),
        ("/d/sub", "directory"),
    ]
    assert rfs.ls("/d/f", detail=False) == ["/d/f"]
    assert rfs.exists("/d/f") and rfs.isfile("/d/f") and not rfs.isdir("/d/f")
    assert rfs.isdir("/d/sub") and not rfs.isfile("/d/sub")
    assert not rfs.exists("/d/nope") and not rfs.exists("/d/f/below-a-file")
    modified = rfs.modified("/d/f")
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - modified).total_seconds()) < 60


def test_checksum_and_ukey_change_with_the_contents(rfs: RedisFuseFileSystem) -> None:
    rfs.pipe_file("/f", b"one")
    before = (rfs.checksum("/f"), rfs.ukey("/f"))
    assert (rfs.checksum("/f"), rfs.ukey("/f")) == before
    rfs.pipe_file("/f", b"two")  # same size
    after = (rfs.checksum("/f"), rfs.ukey("/f"))
    assert after[0] != before[0] and after[1] != before[1]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),
        (10, 20),
        (BLOCK - 3, BLOCK + 3),  # across a block boundary
        (0, 3 * BLOCK + 17),
        (-100, None),
        (5, -5),
        (-BLOCK - 1, -1),
        (2 * BLOCK, None),
        (400_000, 500_000),  # past the end
        (20, 10),
    ],
)
def test_cat_file_ranges(rfs: RedisFuseFileSystem, start: int | None, end: int | None) -> None:
    data = os.urandom(5 * BLOCK + 123)
    rfs.pipe_file("/r", data)
    assert rfs.cat_file("/r", start=start, end=end) == data[start:end]


def test_file_object_seek_and_read(rfs: RedisFuseFileSystem) -> None:
    data = os.urandom(3 * BLOCK + 5)
    rfs.pipe_file("/r", data)
    with rfs.open("/r", "rb", block_size=BLOCK) as f:
        assert f.size == len(data)
        f.seek(BLOCK - 2)
        assert f.read(4) == data[BLOCK - 2 : BLOCK + 2]
        f.seek(-5, 2)
        assert f.read() == data[-5:]
        assert f.read() == b""
    assert rfs.cat_ranges(["/r", "/r"], [0, 100], [10, 2 * BLOCK]) == [
        data[0:10],
        data[100 : 2 * BLOCK],
    ]


def test_write_modes(rfs: RedisFuseFileSystem) -> None:
    with rfs.open("/w", "wb", block_size=BLOCK) as f:
        for i in range(5):  # several buffers' worth: each goes out as it fills
            f.write(bytes([i]) * 50_000)
    assert rfs.cat_file("/w") == b"".join(bytes([i]) * 50_000 for i in range(5))
    with rfs.open("/w", "ab") as f:
        assert f.tell() == 250_000
        f.write(b"tail")
    assert rfs.size("/w") == 250_004 and rfs.cat_file("/w", -4) == b"tail"
    with rfs.open("/w", "wb") as f:
        f.write(b"new")
    assert rfs.cat_file("/w") == b"new"
    with rfs.open("/x", "xb") as f:
        f.write(b"exclusive")
    with pytest.raises(FileExistsError):
        rfs.open("/x", "xb")
    with rfs.open("/t.txt", "w", encoding="utf-8") as t:
        t.write("text mode\n")
    assert rfs.read_text("/t.txt", encoding="utf-8") == "text mode\n"


def test_missing_parents_are_made_unless_auto_mkdir_is_off(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.pipe_file("/a/b/c/file", b"x")
    assert fs.isdir("/a/b/c")
    strict = make_fs(auto_mkdir=False)
    with pytest.raises(FileNotFoundError):
        strict.pipe_file("/p/q/file", b"x")
    with pytest.raises(FileNotFoundError):
        strict.open("/p/q/file", "wb")
    assert not fs.exists("/p")


def test_mkdir_makedirs_rmdir_rm(rfs: RedisFuseFileSystem) -> None:
    rfs.mkdir("/m/n")  # create_parents by default
    with pytest.raises(FileExistsError):
        rfs.mkdir("/m/n")
    with pytest.raises(FileNotFoundError):
        rfs.mkdir("/x/y", create_parents=False)
    rfs.makedirs("/m/n", exist_ok=True)
    with pytest.raises(FileExistsError):
        rfs.makedirs("/m/n")
    rfs.pipe({"/m/n/f1": b"1", "/m/n/deep/f2": b"2", "/m/g": b"3"})
    with pytest.raises(OSError) as info:
        rfs.rmdir("/m/n")
    assert info.value.errno == errno.ENOTEMPTY
    rfs.rm("/m/g")
    rfs.rm("/m", recursive=True)
    assert rfs.ls("/", detail=False) == []
    with pytest.raises(FileNotFoundError):
        rfs.rm("/m")


def test_mv_renames_in_place(rfs: RedisFuseFileSystem) -> None:
    rfs.pipe_file("/src/f", b"data")
    ino = rfs.info("/src/f")["ino"]
    rfs.mv("/src/f", "/dst/g")  # a rename (same inode), parents made
    assert rfs.info("/dst/g")["ino"] == ino and not rfs.exists("/src/f")
    rfs.mkdir("/into")
    rfs.mv("/dst/g", "/into")  # into an existing directory, like mv(1)
    assert rfs.cat_file("/into/g") == b"data"
    rfs.pipe_file("/other", b"replaced")
    rfs.mv("/other", "/into/g")  # replaces a file
    assert rfs.cat_file("/into/g") == b"replaced"
    dir_ino = rfs.info("/into")["ino"]
    rfs.mv("/into", "/moved", recursive=True)
    assert rfs.info("/moved")["ino"] == dir_ino and rfs.cat_file("/moved/g") == b"replaced"
    rfs.pipe({"/glob/a.txt": b"a", "/glob/b.txt": b"b"})
    rfs.mv("/glob/*.txt", "/globbed/")  # fsspec's copy and delete
    assert sorted(rfs.ls("/globbed", detail=False)) == ["/globbed/a.txt", "/globbed/b.txt"]
    assert rfs.ls("/glob") == []
    with pytest.raises(FileNotFoundError):
        rfs.mv("/nope", "/elsewhere")


def test_errors_are_the_builtin_classes(make_fs: MakeFs) -> None:
    fs = make_fs()
    fs.pipe_file("/file", b"x")
    fs.mkdir("/dir")
    with pytest.raises(FileNotFoundError):
        fs.cat_file("/missing")
    with pytest.raises(FileNotFoundError):
        fs.info("/missing")
    with pytest.raises(FileNotFoundError):
        fs.ls("/missing")
    with pytest.raises(FileNotFoundError):
        fs.open("/missing", "rb")
    with pytest.raises(FileExistsError):
        fs.pipe_file("/file", b"y", mode="create")
    with pytest.raises(IsADirectoryError):
        fs.cat_file("/dir")
    with pytest.raises(IsADirectoryError):
        fs.open("/dir", "wb")
    with pytest.raises(NotADirectoryError):
        fs.info("/file/below")
    with pytest.raises(NotADirectoryError):
        fs.pipe_file("/file/below", b"y")
    reader = make_fs(read_only=True)
    assert reader.cat_file("/file") == b"x"
    with pytest.raises(PermissionError) as info:
        reader.pipe_file("/new", b"y")
    assert info.value.errno == errno.EROFS
    with pytest.raises(PermissionError):
        reader.rm("/file")


def test_symlinks_made_by_another_client(
    rfs: RedisFuseFileSystem, redis_server: RedisServer, volume_name: str
) -> None:
    rfs.pipe_file("/target", b"pointed at")

    async def link() -> None:
        async with open_volume(redis_server.url, volume=volume_name) as vol:
            await vol.symlink("/target", "/link")
            await vol.symlink("/nowhere", "/dangling")

    asyncio.run(link())
    info = rfs.info("/link")  # follows, and says so
    assert (info["type"], info["size"], info["islink"]) == ("file", 10, True)
    assert rfs.cat_file("/link") == b"pointed at"
    assert rfs.info("/dangling")["type"] == "other"
    listed = {e["name"]: (e["type"], e["islink"]) for e in rfs.ls("/")}
    assert listed["/link"] == ("other", True) and listed["/target"] == ("file", False)
    rfs.rm(["/link", "/dangling"])
    assert rfs.ls("/", detail=False) == ["/target"]


def test_a_file_written_behind_its_writer_reads_and_stats_right(make_fs: MakeFs) -> None:
    """Issue 24 through fsspec: a write buffer smaller than the file commits behind
    the writer; after every chunk the size and the bytes so far are right, on this
    filesystem and, once closed, on another one (another node)."""
    fs = make_fs(write_buffer_bytes=128 * 1024)
    data = random.Random(7).randbytes(1_000_000)
    with fs.open("/f", "wb", block_size=100_000) as f:
        for start in range(0, len(data), 100_000):
            f.write(data[start : start + 100_000])  # a full block: uploaded at once
            done = start + 100_000
            assert fs.info("/f")["size"] == done
            assert fs.cat_file("/f", 0, done) == data[:done]
    assert make_fs().cat_file("/f") == data
