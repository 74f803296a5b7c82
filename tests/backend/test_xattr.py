"""Extended attributes through the inode API: flags, limits, namespaces, ctime.

Shortcuts these tests take: attributes live on a small regular file (or the
root directory) made through the path API; ``vol.inodes`` is called with its
inode number, as the FUSE frontend would.
"""

from __future__ import annotations

import errno

import pytest
from redis.asyncio import Redis

from redisfuse.backend import XATTR_CREATE, XATTR_REPLACE, FSError, NotFound, Volume
from redisfuse.backend.keys import Keys
from redisfuse.backend.model import XATTR_NAME_MAX, XATTR_SIZE_MAX


async def make_file(vol: Volume, path: str = "/f") -> int:
    await vol.write_file(path, b"contents")
    return (await vol.stat(path)).ino


async def test_set_then_get_returns_the_value(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.color", b"blue")
    assert await vol.inodes.getxattr(ino, b"user.color") == b"blue"


async def test_binary_and_empty_values_round_trip(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.bin", b"\x00\xff\x00")
    await vol.inodes.setxattr(ino, b"user.empty", b"")
    assert await vol.inodes.getxattr(ino, b"user.bin") == b"\x00\xff\x00"
    assert await vol.inodes.getxattr(ino, b"user.empty") == b""


async def test_set_again_replaces_the_value(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"one")
    await vol.inodes.setxattr(ino, b"user.k", b"two")
    assert await vol.inodes.getxattr(ino, b"user.k") == b"two"


async def test_list_returns_every_name(vol: Volume) -> None:
    ino = await make_file(vol)
    for name in (b"user.b", b"user.a", b"trusted.c"):
        await vol.inodes.setxattr(ino, name, b"v")
    assert await vol.inodes.listxattr(ino) == [b"trusted.c", b"user.a", b"user.b"]


async def test_list_of_a_file_without_attributes_is_empty(vol: Volume) -> None:
    ino = await make_file(vol)
    assert await vol.inodes.listxattr(ino) == []


async def test_remove_deletes_the_attribute(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"v")
    await vol.inodes.removexattr(ino, b"user.k")
    assert await vol.inodes.listxattr(ino) == []
    with pytest.raises(FSError) as info:
        await vol.inodes.getxattr(ino, b"user.k")
    assert info.value.errno == errno.ENODATA


async def test_remove_of_a_missing_attribute_is_enodata(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.removexattr(ino, b"user.missing")
    assert info.value.errno == errno.ENODATA


async def test_get_of_a_missing_attribute_is_enodata(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.getxattr(ino, b"user.missing")
    assert info.value.errno == errno.ENODATA


async def test_xattr_create_on_an_existing_name_is_eexist(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"first")
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, b"user.k", b"second", XATTR_CREATE)
    assert info.value.errno == errno.EEXIST
    assert await vol.inodes.getxattr(ino, b"user.k") == b"first"


async def test_xattr_create_on_a_new_name_sets_it(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"v", XATTR_CREATE)
    assert await vol.inodes.getxattr(ino, b"user.k") == b"v"


async def test_xattr_replace_on_a_missing_name_is_enodata(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, b"user.k", b"v", XATTR_REPLACE)
    assert info.value.errno == errno.ENODATA
    assert await vol.inodes.listxattr(ino) == []


async def test_xattr_replace_on_an_existing_name_replaces_it(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"old")
    await vol.inodes.setxattr(ino, b"user.k", b"new", XATTR_REPLACE)
    assert await vol.inodes.getxattr(ino, b"user.k") == b"new"


async def test_invalid_flags_are_einval(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, b"user.k", b"v", 8)
    assert info.value.errno == errno.EINVAL


async def test_name_of_255_bytes_is_accepted(vol: Volume) -> None:
    ino = await make_file(vol)
    name = b"user." + b"n" * (XATTR_NAME_MAX - len(b"user."))
    await vol.inodes.setxattr(ino, name, b"v")
    assert await vol.inodes.getxattr(ino, name) == b"v"


async def test_name_over_255_bytes_is_erange(vol: Volume) -> None:
    ino = await make_file(vol)
    name = b"user." + b"n" * (XATTR_NAME_MAX + 1 - len(b"user."))
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, name, b"v")
    assert info.value.errno == errno.ERANGE


async def test_get_and_remove_of_a_name_over_255_bytes_are_erange(vol: Volume) -> None:
    ino = await make_file(vol)
    name = b"user." + b"n" * (XATTR_NAME_MAX + 1 - len(b"user."))
    with pytest.raises(FSError) as got:
        await vol.inodes.getxattr(ino, name)
    with pytest.raises(FSError) as removed:
        await vol.inodes.removexattr(ino, name)
    assert (got.value.errno, removed.value.errno) == (errno.ERANGE, errno.ERANGE)


async def test_empty_name_is_erange(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, b"", b"v")
    assert info.value.errno == errno.ERANGE


async def test_value_of_64_kib_is_accepted(vol: Volume) -> None:
    ino = await make_file(vol)
    value = b"v" * XATTR_SIZE_MAX
    await vol.inodes.setxattr(ino, b"user.big", value)
    assert await vol.inodes.getxattr(ino, b"user.big") == value


async def test_value_over_64_kib_is_e2big(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, b"user.big", b"v" * (XATTR_SIZE_MAX + 1))
    assert info.value.errno == errno.E2BIG
    assert await vol.inodes.listxattr(ino) == []


@pytest.mark.parametrize("name", [b"foo.bar", b"user", b"user.", b"nonamespace"])
async def test_unknown_namespace_is_enotsup(vol: Volume, name: bytes) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.setxattr(ino, name, b"v")
    assert info.value.errno == errno.ENOTSUP


async def test_get_in_an_unknown_namespace_is_enotsup(vol: Volume) -> None:
    ino = await make_file(vol)
    with pytest.raises(FSError) as info:
        await vol.inodes.getxattr(ino, b"foo.bar")
    assert info.value.errno == errno.ENOTSUP


@pytest.mark.parametrize(
    "name",
    [b"security.selinux", b"system.posix_acl_access", b"trusted.overlay.opaque", b"user.x"],
)
async def test_known_namespaces_work(vol: Volume, name: bytes) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, name, b"value")
    assert await vol.inodes.getxattr(ino, name) == b"value"
    assert await vol.inodes.listxattr(ino) == [name]
    await vol.inodes.removexattr(ino, name)
    assert await vol.inodes.listxattr(ino) == []


async def test_setxattr_changes_ctime_but_not_mtime(vol: Volume) -> None:
    ino = await make_file(vol)
    before = await vol.inodes.getattr(ino)
    await vol.inodes.setxattr(ino, b"user.k", b"v")
    after = await vol.inodes.getattr(ino)
    assert after.ctime_ns > before.ctime_ns
    assert after.mtime_ns == before.mtime_ns
    assert after.version > before.version


async def test_removexattr_changes_ctime(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"v")
    before = await vol.inodes.getattr(ino)
    await vol.inodes.removexattr(ino, b"user.k")
    assert (await vol.inodes.getattr(ino)).ctime_ns > before.ctime_ns


async def test_failed_setxattr_leaves_ctime_alone(vol: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"v")
    before = await vol.inodes.getattr(ino)
    with pytest.raises(FSError):
        await vol.inodes.setxattr(ino, b"user.k", b"w", XATTR_CREATE)
    assert await vol.inodes.getattr(ino) == before


async def test_directories_carry_attributes(vol: Volume) -> None:
    await vol.mkdir("/d")
    ino = (await vol.stat("/d")).ino
    await vol.inodes.setxattr(ino, b"user.k", b"dir value")
    assert await vol.inodes.getxattr(ino, b"user.k") == b"dir value"


async def test_attributes_are_visible_to_another_client(vol: Volume, vol2: Volume) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"shared")
    assert await vol2.inodes.getxattr(ino, b"user.k") == b"shared"


async def test_attributes_of_a_missing_inode_are_enoent(vol: Volume) -> None:
    missing = 10**9
    with pytest.raises(NotFound):
        await vol.inodes.setxattr(missing, b"user.k", b"v")
    with pytest.raises(NotFound):
        await vol.inodes.getxattr(missing, b"user.k")
    with pytest.raises(NotFound):
        await vol.inodes.listxattr(missing)


async def test_unlinking_a_file_deletes_its_attributes(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    ino = await make_file(vol)
    await vol.inodes.setxattr(ino, b"user.k", b"v")
    await vol.remove("/f")
    with pytest.raises(NotFound):
        await vol.inodes.listxattr(ino)
    assert not await raw.exists(Keys(volume_name).xattrs(ino))
