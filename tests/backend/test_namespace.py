"""Namespace operations of the inode API and their errnos (plain asyncio, real Redis)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from redisfuse.backend import (
    NOW,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INO,
    FSError,
    SetAttr,
    Volume,
)

ALSO_ON_CLUSTER = {
    "test_create_lookup_getattr",
    "test_create_existing_name_is_eexist",
    "test_mkdir_updates_nlink_and_parent_times",
    "test_symlink_and_readlink",
    "test_hard_links_share_the_inode",
    "test_unlink_and_rmdir_errnos",
    "test_rename_plain_and_across_directories",
    "test_rename_replaces_file_and_frees_it",
    "test_rename_exchange_directories_across_parents",
    "test_readdir_offsets_are_stable_across_changes",
    "test_setattr_mode_owner_times",
    "test_statfs_counts_inodes",
    "test_path_lock_excludes_other_clients",
}
"""The core cases, also run on the test cluster (conftest.py)."""

UID, GID = os.getuid(), os.getgid()


async def _errno_of(coro: object) -> int:
    with pytest.raises(FSError) as info:
        await coro  # type: ignore[misc]
    return info.value.errno or 0


async def test_create_lookup_getattr(vol: Volume) -> None:
    fs = vol.inodes
    fh, attr = await fs.create(ROOT_INO, b"f", 0o640, os.O_WRONLY, UID, GID)
    await fs.release(fh)
    assert stat.S_ISREG(attr.mode) and stat.S_IMODE(attr.mode) == 0o640
    found = await fs.lookup(ROOT_INO, b"f")
    assert found.ino == attr.ino and found.nlink == 1 and found.size == 0
    assert (await fs.getattr(attr.ino)).uid == UID


async def test_create_existing_name_is_eexist(vol: Volume) -> None:
    fs = vol.inodes
    fh, _ = await fs.create(ROOT_INO, b"f", 0o644, os.O_WRONLY, UID, GID)
    await fs.release(fh)
    assert await _errno_of(fs.create(ROOT_INO, b"f", 0o644, os.O_WRONLY, UID, GID)) == errno.EEXIST
    assert await _errno_of(fs.mkdir(ROOT_INO, b"f", 0o755, UID, GID)) == errno.EEXIST


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"", errno.EINVAL),
        (b"a/b", errno.EINVAL),
        (b"a\0b", errno.EINVAL),
        (b"x" * 256, errno.ENAMETOOLONG),
        (b".", errno.EEXIST),
        (b"..", errno.EEXIST),
    ],
)
async def test_bad_names_are_refused_and_change_nothing(
    vol: Volume, name: bytes, expected: int
) -> None:
    before = await vol.statfs()
    assert await _errno_of(vol.inodes.mkdir(ROOT_INO, name, 0o755, UID, GID)) == expected
    assert await vol.statfs() == before
    assert await vol.listdir("/") == []


async def test_name_of_255_bytes_is_fine(vol: Volume) -> None:
    await vol.mkdir("/" + "n" * 255)
    assert await vol.listdir("/") == ["n" * 255]


async def test_lookup_missing_and_in_non_directory(vol: Volume) -> None:
    await vol.write_file("/file", b"x")
    ino = (await vol.stat("/file")).ino
    assert await _errno_of(vol.inodes.lookup(ROOT_INO, b"nope")) == errno.ENOENT
    assert await _errno_of(vol.inodes.lookup(ino, b"x")) == errno.ENOTDIR


async def test_lookup_dot_and_dotdot(vol: Volume) -> None:
    d = await vol.mkdir("/d")
    assert (await vol.inodes.lookup(d.ino, b".")).ino == d.ino
    assert (await vol.inodes.lookup(d.ino, b"..")).ino == ROOT_INO


async def test_mkdir_updates_nlink_and_parent_times(vol: Volume) -> None:
    root = await vol.stat("/")
    d = await vol.mkdir("/d", 0o750)
    assert d.nlink == 2 and stat.S_ISDIR(d.mode)
    after = await vol.stat("/")
    assert after.nlink == root.nlink + 1
    assert after.mtime_ns >= root.mtime_ns and after.ctime_ns >= root.ctime_ns
    assert after.version > root.version


async def test_setgid_directory_passes_group_on(vol: Volume) -> None:
    d = await vol.mkdir("/g")
    await vol.inodes.setattr(d.ino, SetAttr(mode=0o2775, gid=4242))
    sub = await vol.inodes.mkdir(d.ino, b"sub", 0o755, UID, GID)
    fh, f = await vol.inodes.create(d.ino, b"f", 0o644, os.O_WRONLY, UID, GID)
    await vol.inodes.release(fh)
    assert sub.gid == 4242 and sub.mode & stat.S_ISGID
    assert f.gid == 4242 and not f.mode & stat.S_ISGID


@pytest.mark.parametrize(
    ("kind", "rdev"),
    [
        (stat.S_IFIFO, 0),
        (stat.S_IFSOCK, 0),
        (stat.S_IFCHR, os.makedev(1, 3)),
        (stat.S_IFBLK, os.makedev(8, 1)),
    ],
)
async def test_mknod_kinds(vol: Volume, kind: int, rdev: int) -> None:
    attr = await vol.inodes.mknod(ROOT_INO, b"node", kind | 0o600, UID, GID, rdev)
    again = await vol.stat("/node", follow_symlinks=False)
    assert stat.S_IFMT(again.mode) == kind and again.rdev == rdev == attr.rdev


async def test_symlink_and_readlink(vol: Volume) -> None:
    attr = await vol.symlink("some/where", "/l")
    assert attr.is_symlink and attr.size == len(b"some/where")
    assert await vol.readlink("/l") == "some/where"
    await vol.write_file("/f", b"1")
    f = await vol.stat("/f")
    assert await _errno_of(vol.inodes.readlink(f.ino)) == errno.EINVAL


async def test_symlinks_are_followed_by_paths(vol: Volume) -> None:
    await vol.makedirs("/a/b")
    await vol.write_file("/a/b/data", b"payload")
    await vol.symlink("a/b", "/lnk")
    assert await vol.read_file("/lnk/data") == b"payload"
    await vol.symlink("/loop", "/loop")
    assert await _errno_of(vol.read_file("/loop")) == errno.ELOOP


async def test_hard_links_share_the_inode(vol: Volume) -> None:
    await vol.write_file("/a", b"shared")
    b = await vol.link("/a", "/b")
    assert b.nlink == 2
    await vol.remove("/a")
    assert (await vol.stat("/b")).nlink == 1
    assert await vol.read_file("/b") == b"shared"


async def test_link_to_directory_is_eperm(vol: Volume) -> None:
    await vol.mkdir("/d")
    assert await _errno_of(vol.link("/d", "/d2")) == errno.EPERM


async def test_link_onto_existing_name_is_eexist(vol: Volume) -> None:
    await vol.write_file("/a", b"")
    await vol.write_file("/b", b"")
    assert await _errno_of(vol.link("/a", "/b")) == errno.EEXIST


async def test_unlink_and_rmdir_errnos(vol: Volume) -> None:
    await vol.makedirs("/d/sub")
    await vol.write_file("/f", b"")
    assert await _errno_of(vol.remove("/d")) == errno.EISDIR
    assert await _errno_of(vol.rmdir("/f")) == errno.ENOTDIR
    assert await _errno_of(vol.rmdir("/d")) == errno.ENOTEMPTY
    assert await _errno_of(vol.remove("/missing")) == errno.ENOENT
    assert await _errno_of(vol.inodes.rmdir(ROOT_INO, b".")) == errno.EINVAL
    await vol.rmdir("/d/sub")
    await vol.rmdir("/d")
    assert await vol.listdir("/") == ["f"]


async def test_operations_on_a_deleted_inode_are_enoent(vol: Volume) -> None:
    d = await vol.mkdir("/d")
    await vol.rmdir("/d")
    assert await _errno_of(vol.inodes.getattr(d.ino)) == errno.ENOENT
    assert await _errno_of(vol.inodes.mkdir(d.ino, b"x", 0o755, UID, GID)) == errno.ENOENT
    assert await _errno_of(vol.inodes.setattr(d.ino, SetAttr(mode=0o700))) == errno.ENOENT


async def test_rename_plain_and_across_directories(vol: Volume) -> None:
    await vol.makedirs("/a")
    await vol.makedirs("/b")
    await vol.write_file("/a/f", b"data")
    await vol.rename("/a/f", "/b/g")
    assert await vol.listdir("/a") == [] and await vol.listdir("/b") == ["g"]
    await vol.rename("/a", "/b/a")
    assert (await vol.stat("/b")).nlink == 3
    assert (await vol.stat("/")).nlink == 3


async def test_rename_replaces_file_and_frees_it(vol: Volume) -> None:
    await vol.write_file("/a", b"new")
    await vol.write_file("/b", b"old" * 1000)
    before = await vol.statfs()
    await vol.rename("/a", "/b")
    assert await vol.read_file("/b") == b"new"
    after = await vol.statfs()
    assert after.inodes_used == before.inodes_used - 1
    assert after.bytes_used == before.bytes_used - 3000


async def test_rename_replaces_empty_directory_only(vol: Volume) -> None:
    await vol.makedirs("/src/x")
    await vol.makedirs("/empty")
    await vol.makedirs("/full/y")
    await vol.write_file("/file", b"")
    assert await _errno_of(vol.rename("/src", "/full")) == errno.ENOTEMPTY
    assert await _errno_of(vol.rename("/src", "/file")) == errno.ENOTDIR
    assert await _errno_of(vol.rename("/file", "/empty")) == errno.EISDIR
    await vol.rename("/src", "/empty")
    assert sorted(await vol.listdir("/")) == ["empty", "file", "full"]
    assert await vol.listdir("/empty") == ["x"]


async def test_rename_noreplace(vol: Volume) -> None:
    await vol.write_file("/a", b"a")
    await vol.write_file("/b", b"b")
    assert await _errno_of(vol.rename("/a", "/b", RENAME_NOREPLACE)) == errno.EEXIST
    await vol.rename("/a", "/c", RENAME_NOREPLACE)
    assert sorted(await vol.listdir("/")) == ["b", "c"]


async def test_rename_exchange(vol: Volume) -> None:
    await vol.makedirs("/d/inner")
    await vol.write_file("/f", b"file")
    await vol.rename("/f", "/d", RENAME_EXCHANGE)
    assert await vol.read_file("/d") == b"file"
    assert await vol.listdir("/f") == ["inner"]
    assert await _errno_of(vol.rename("/d", "/missing", RENAME_EXCHANGE)) == errno.ENOENT


async def test_rename_exchange_directories_across_parents(vol: Volume) -> None:
    await vol.makedirs("/p/a/x")
    await vol.makedirs("/q/b")
    await vol.rename("/p/a", "/q/b", RENAME_EXCHANGE)
    assert await vol.listdir("/q/b") == ["x"]
    assert await _errno_of(vol.rename("/q/b", "/q/b/x/in", RENAME_EXCHANGE)) == errno.ENOENT


async def test_rename_directory_into_itself_is_einval(vol: Volume) -> None:
    await vol.makedirs("/a/b/c")
    assert await _errno_of(vol.rename("/a", "/a/b/c/a")) == errno.EINVAL
    assert await _errno_of(vol.rename("/a", "/a/inside")) == errno.EINVAL
    assert await vol.listdir("/a/b") == ["c"]


async def test_rename_onto_another_link_of_same_inode_does_nothing(vol: Volume) -> None:
    await vol.write_file("/a", b"x")
    await vol.link("/a", "/b")
    await vol.rename("/a", "/b")
    assert sorted(await vol.listdir("/")) == ["a", "b"]


async def test_readdir_offsets_are_stable_across_changes(vol: Volume) -> None:
    for i in range(10):
        await vol.write_file(f"/f{i}", b"")
    entries = await vol.inodes.readdir(ROOT_INO)
    assert [e.name for e in entries] == [f"f{i}".encode() for i in range(10)]
    assert all(e.attr is not None and e.attr.ino == e.ino for e in entries)
    cut = entries[4].offset
    await vol.remove("/f2")
    await vol.remove("/f7")
    await vol.write_file("/new", b"")
    rest = await vol.inodes.readdir(ROOT_INO, cut)
    assert [e.name for e in rest] == [b"f5", b"f6", b"f8", b"f9", b"new"]


async def test_readdir_of_file_is_enotdir(vol: Volume) -> None:
    await vol.write_file("/f", b"")
    f = await vol.stat("/f")
    assert await _errno_of(vol.inodes.readdir(f.ino)) == errno.ENOTDIR


async def test_setattr_mode_owner_times(vol: Volume) -> None:
    await vol.write_file("/f", b"abc")
    f = await vol.stat("/f")
    changed = await vol.inodes.setattr(
        f.ino, SetAttr(mode=0o4711, uid=1234, gid=5678, atime_ns=10**18, mtime_ns=2 * 10**18)
    )
    assert stat.S_ISREG(changed.mode) and stat.S_IMODE(changed.mode) == 0o4711
    assert (changed.uid, changed.gid) == (1234, 5678)
    assert (changed.atime_ns, changed.mtime_ns) == (10**18, 2 * 10**18)
    assert changed.ctime_ns > f.ctime_ns or changed.ctime_ns >= f.ctime_ns
    now = await vol.inodes.setattr(f.ino, SetAttr(atime_ns=NOW, mtime_ns=NOW))
    assert now.mtime_ns > 2 * 10**18 - 10**18


async def test_truncate_directory_is_eisdir(vol: Volume) -> None:
    d = await vol.mkdir("/d")
    assert await _errno_of(vol.inodes.setattr(d.ino, SetAttr(size=0))) == errno.EISDIR


async def test_statfs_counts_inodes(vol: Volume) -> None:
    base = await vol.statfs()
    assert base.inodes_used == 1 and base.name_max == 255
    await vol.makedirs("/a/b")
    await vol.write_file("/a/f", b"12345")
    s = await vol.statfs()
    assert s.inodes_used == 4 and s.bytes_used == 5


async def test_path_lock_excludes_other_clients(vol: Volume, vol2: Volume) -> None:
    import anyio

    await vol.write_file("/shared", b"")
    order: list[str] = []

    async def hold(v: Volume, tag: str) -> None:
        async with v.lock("/shared", ttl=1.0):
            order.append(f"{tag}-in")
            await anyio.sleep(0.3)  # longer than a third of the TTL: renewal must work
            order.append(f"{tag}-out")

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, vol, "a")
        tg.start_soon(hold, vol2, "b")
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])


def test_listing_values_parse_like_the_hash_fields() -> None:
    """stat_many's joined values give the same Attr as HGETALL's pairs, missing fields too."""
    from redisfuse.backend.model import ATTR_FIELDS, attr_from_pairs, attr_from_values

    values = [b"33188", b"1", b"1000", b"100", b"4096", b"0"] + [b"1764500000000000000"] * 3
    values += [b"7", b"4096", b""]  # no xattrs field recorded
    pairs = [x for name, v in zip(ATTR_FIELDS, values, strict=True) if v for x in (name, v)]
    parsed = attr_from_values(42, b" ".join(values))
    assert parsed == attr_from_pairs(42, pairs + [b"opens", b"2"])
    assert (parsed.size, parsed.uid, parsed.version, parsed.xattr_count) == (4096, 1000, 7, -1)
    with pytest.raises(ValueError):
        attr_from_values(42, b"1 2 3")
