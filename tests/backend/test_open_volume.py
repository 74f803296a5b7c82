"""Opening volumes: formatting, reopening, versions, addresses, names, read-only.

Shortcuts these tests take: they open volumes themselves with ``open_volume``
(the ``vol`` fixture would hide what opening does) and check consistency with
fsck where a test leaves data behind; a wrong password is tried against an ACL
user created for the test on the session's server (and deleted after), because
the server itself runs without a password; an unreachable address is a port
that was free a moment ago.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import (
    ROOT_INO,
    BackendUnavailable,
    FormatError,
    ReadOnly,
    RedisOptions,
    SetAttr,
    Volume,
    open_volume,
)
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys
from redisfuse.backend.model import BLOCK_SIZE, FORMAT_VERSION

if TYPE_CHECKING:
    from conftest import RedisServer


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def assert_consistent(raw: Redis, volume: str) -> None:
    report = await fsck(raw, volume)
    assert report.ok, str(report)


# -- formatting -------------------------------------------------------------------


async def test_opening_an_empty_volume_formats_it(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        settings = vol.inodes.settings
    fields = await raw.hgetall(Keys(volume_name).setting)  # type: ignore[misc]
    assert int(fields[b"format"]) == FORMAT_VERSION
    assert int(fields[b"block_size"]) == BLOCK_SIZE
    assert fields[b"codec"] == b"zlib"
    assert len(fields[b"uuid"]) == 32
    int(fields[b"uuid"], 16)  # hex
    assert fields[b"uuid"].decode() == settings.uuid
    await assert_consistent(raw, volume_name)


async def test_formatted_root_is_a_directory_with_nlink_2(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        root = await vol.stat("/")
        assert await vol.listdir("/") == []
    assert root.ino == ROOT_INO
    assert stat.S_ISDIR(root.mode)
    assert root.nlink == 2
    assert (root.uid, root.gid) == (os.getuid(), os.getgid())


async def test_codec_setting_is_recorded_at_format(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    async with open_volume(redis_server.url, volume=volume_name, codec="raw") as vol:
        await vol.write_file("/f", b"a" * 10_000)
    fields = await raw.hgetall(Keys(volume_name).setting)  # type: ignore[misc]
    assert fields[b"codec"] == b"raw"
    await assert_consistent(raw, volume_name)


async def test_concurrent_first_opens_format_once(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    uuids: list[str] = []

    async def open_one() -> None:
        async with open_volume(redis_server.url, volume=volume_name) as vol:
            uuids.append(vol.inodes.settings.uuid)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(open_one)
    assert len(set(uuids)) == 1
    await assert_consistent(raw, volume_name)


async def test_reopening_keeps_data_and_settings(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        await vol.mkdir("/dir")
        await vol.write_file("/dir/f", b"persistent")
        first = vol.inodes.settings
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        assert await vol.read_file("/dir/f") == b"persistent"
        assert vol.inodes.settings == first
    await assert_consistent(raw, volume_name)


async def test_closing_ends_the_session(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    keys = Keys(volume_name)
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        sid = vol.inodes.ctx.session
        assert await raw.zscore(keys.sessions, str(sid)) is not None
        assert await raw.exists(keys.session(sid))
    assert await raw.zscore(keys.sessions, str(sid)) is None
    assert not await raw.exists(keys.session(sid))


async def test_repr_names_the_volume(redis_server: RedisServer, volume_name: str) -> None:
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        assert volume_name in repr(vol)


async def test_unsupported_format_version_is_a_format_error(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    keys = Keys(volume_name)
    await raw.hset(  # type: ignore[misc]
        keys.setting,
        mapping={"format": 999, "block_size": BLOCK_SIZE, "codec": "zlib", "created": 0,
                 "uuid": "0" * 32},
    )  # fmt: skip
    with pytest.raises(FormatError) as info:
        async with open_volume(redis_server.url, volume=volume_name):
            pass
    message = str(info.value)
    assert volume_name in message
    assert "999" in message
    assert f"format {FORMAT_VERSION}" in message
    assert info.value.errno == errno.EINVAL
    assert await raw.hget(keys.setting, "format") == b"999"  # type: ignore[misc]
    assert not await raw.exists(keys.inode(ROOT_INO))


# -- reaching Redis ----------------------------------------------------------------


async def test_unreachable_url_is_backend_unavailable_naming_the_address() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as info:
        async with open_volume(f"redis://127.0.0.1:{port}/0", volume="v"):
            pass
    assert f"127.0.0.1:{port}" in str(info.value)
    assert info.value.errno == errno.EIO


async def test_unreachable_host_and_port_name_the_address() -> None:
    port = free_port()
    with pytest.raises(BackendUnavailable) as info:
        async with open_volume(host="127.0.0.1", port=port, volume="v"):
            pass
    assert f"127.0.0.1:{port}" in str(info.value)


async def test_unreachable_address_fails_quickly_without_retries() -> None:
    port = free_port()
    options = RedisOptions(url=f"redis://127.0.0.1:{port}/0", retry_deadline=0, connect_timeout=1.0)
    with anyio.fail_after(5), pytest.raises(BackendUnavailable):
        async with open_volume(volume="v", options=options):
            pass


@pytest_asyncio.fixture
async def acl_user(raw: Redis) -> AsyncIterator[str]:
    """A Redis ACL user with password 'right', deleted after the test."""
    name = f"u-{secrets.token_hex(4)}"
    await raw.acl_setuser(
        name, enabled=True, passwords=["+right"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    yield name
    await raw.acl_deluser(name)


async def test_wrong_password_is_backend_unavailable(
    redis_server: RedisServer, acl_user: str
) -> None:
    url = f"redis://{acl_user}:wrongpassword@{redis_server.host}:{redis_server.port}/0"
    with pytest.raises(BackendUnavailable) as info:
        async with open_volume(url, volume="v"):
            pass
    message = str(info.value)
    assert f"{redis_server.host}:{redis_server.port}" in message
    assert "password" in message
    assert "wrongpassword" not in message


async def test_right_password_opens_the_volume(
    redis_server: RedisServer, acl_user: str, volume_name: str, raw: Redis
) -> None:
    url = f"redis://{acl_user}:right@{redis_server.host}:{redis_server.port}/0"
    async with open_volume(url, volume=volume_name) as vol:
        await vol.write_file("/f", b"authenticated")
        assert await vol.read_file("/f") == b"authenticated"
    await assert_consistent(raw, volume_name)


async def test_unix_socket_url_works(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    async with open_volume(f"unix://{redis_server.unix_socket}", volume=volume_name) as vol:
        await vol.write_file("/over-unix", b"via the socket")
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        assert await vol.read_file("/over-unix") == b"via the socket"
    await assert_consistent(raw, volume_name)


async def test_invalid_url_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable):
        async with open_volume("nosuchscheme://localhost", volume="v"):
            pass


# -- volume names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a{b", "a}b", "{ab}", "a:b", "tab\there"])
async def test_invalid_volume_name_is_value_error(redis_server: RedisServer, name: str) -> None:
    with pytest.raises(ValueError, match="invalid volume name"):
        async with open_volume(redis_server.url, volume=name):
            pass


async def test_invalid_volume_name_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError):
        async with open_volume(f"redis://127.0.0.1:{free_port()}/0", volume="a:b"):
            pass


async def test_two_volumes_in_one_db_are_independent(redis_server: RedisServer, raw: Redis) -> None:
    name_a, name_b = f"a-{secrets.token_hex(6)}", f"b-{secrets.token_hex(6)}"
    async with (
        open_volume(redis_server.url, volume=name_a) as a,
        open_volume(redis_server.url, volume=name_b) as b,
    ):
        await a.write_file("/f", b"in a")
        await b.write_file("/f", b"in volume b")
        await a.mkdir("/only-in-a")
        await b.remove("/f")
        assert await a.read_file("/f") == b"in a"
        assert await a.listdir("/") == ["f", "only-in-a"]
        assert await b.listdir("/") == []
        assert (await a.statfs()).inodes_used == 3
        assert (await b.statfs()).inodes_used == 1
        assert a.inodes.settings.uuid != b.inodes.settings.uuid
    await assert_consistent(raw, name_a)
    await assert_consistent(raw, name_b)


# -- read-only ----------------------------------------------------------------------


SESSION_KINDS = ("sess:", "open:")


async def snapshot(raw: Redis, volume: str) -> dict[bytes, Any]:
    """Every key of the volume and its value, except the per-session bookkeeping."""
    keys = Keys(volume)
    skip = {keys.sessions, keys.counter_sess}
    out: dict[bytes, Any] = {}
    pattern = keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    async for key in raw.scan_iter(match=pattern):
        name = key.decode()
        if name in skip or name[len(keys.prefix) :].startswith(SESSION_KINDS):
            continue
        kind = (await raw.type(key)).decode()
        if kind == "string":
            out[key] = await raw.get(key)
        elif kind == "hash":
            out[key] = await raw.hgetall(key)  # type: ignore[misc]
        elif kind == "zset":
            out[key] = await raw.zrange(key, 0, -1, withscores=True)
        else:
            out[key] = (kind, await raw.dump(key))
    return out


@pytest_asyncio.fixture
async def populated(redis_server: RedisServer, volume_name: str) -> str:
    """A volume holding a directory, a file with data and an attribute, and a symlink."""
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        await vol.mkdir("/dir")
        await vol.write_file("/dir/f", b"original" * 10_000)
        await vol.symlink("dir/f", "/link")
        ino = (await vol.stat("/dir/f")).ino
        await vol.inodes.setxattr(ino, b"user.k", b"v")
    return volume_name


WRITES: dict[str, Callable[[Volume], Awaitable[Any]]] = {
    "write_file": lambda v: v.write_file("/dir/f", b"changed"),
    "create": lambda v: v.write_file("/new", b"x"),
    "append": lambda v: v.open("/dir/f", "ab"),
    "open-r+": lambda v: v.open("/dir/f", "r+b"),
    "truncate": lambda v: v.truncate("/dir/f", 0),
    "mkdir": lambda v: v.mkdir("/newdir"),
    "remove": lambda v: v.remove("/dir/f"),
    "rmdir": lambda v: v.rmdir("/dir"),
    "rename": lambda v: v.rename("/dir/f", "/g"),
    "symlink": lambda v: v.symlink("x", "/newlink"),
    "link": lambda v: v.link("/dir/f", "/hardlink"),
    "chmod": lambda v: v.chmod("/dir/f", 0o600),
}


@pytest.mark.parametrize("operation", sorted(WRITES))
async def test_read_only_volume_refuses_writes_with_erofs(
    redis_server: RedisServer, populated: str, operation: str
) -> None:
    async with open_volume(redis_server.url, volume=populated, read_only=True) as vol:
        with pytest.raises(ReadOnly) as info:
            await WRITES[operation](vol)
    assert info.value.errno == errno.EROFS


async def test_read_only_volume_refuses_inode_level_writes(
    redis_server: RedisServer, populated: str
) -> None:
    async with open_volume(redis_server.url, volume=populated, read_only=True) as vol:
        ino = (await vol.stat("/dir/f")).ino
        with pytest.raises(ReadOnly):
            await vol.inodes.setxattr(ino, b"user.k", b"new")
        with pytest.raises(ReadOnly):
            await vol.inodes.removexattr(ino, b"user.k")
        with pytest.raises(ReadOnly):
            await vol.inodes.setattr(ino, SetAttr(size=1))
        with pytest.raises(ReadOnly):
            await vol.inodes.open(ino, os.O_RDONLY | os.O_TRUNC)


async def test_read_only_volume_can_be_read(redis_server: RedisServer, populated: str) -> None:
    async with open_volume(redis_server.url, volume=populated, read_only=True) as vol:
        assert await vol.read_file("/link") == b"original" * 10_000
        assert await vol.listdir("/") == ["dir", "link"]
        ino = (await vol.stat("/dir/f")).ino
        assert await vol.inodes.getxattr(ino, b"user.k") == b"v"


async def test_read_only_volume_changes_nothing(
    redis_server: RedisServer, populated: str, raw: Redis
) -> None:
    before = await snapshot(raw, populated)
    async with open_volume(redis_server.url, volume=populated, read_only=True) as vol:
        await vol.read_file("/dir/f")
        await vol.listdir("/dir")
        for write in WRITES.values():
            with pytest.raises(ReadOnly):
                await write(vol)
    assert await snapshot(raw, populated) == before
    await assert_consistent(raw, populated)


async def test_read_only_open_of_an_empty_volume_does_not_format_it(
    redis_server: RedisServer, volume_name: str, raw: Redis
) -> None:
    with pytest.raises(FormatError, match="not formatted"):
        async with open_volume(redis_server.url, volume=volume_name, read_only=True):
            pass
    assert await snapshot(raw, volume_name) == {}
