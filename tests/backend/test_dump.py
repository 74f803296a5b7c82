"""Dump and load through the backend, on the session's real redis-server.

Shortcuts: trees are built and compared through the backend's inode API (no
mount); dumps go to in-memory files; the live-dump test runs a writer task and
gc (grace 0, so replaced objects vanish at once) in the same event loop as the
dump, which interleaves them at every await.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import FSError, NotEmpty, SetAttr, Volume, open_volume
from redisfuse.backend.dump import OBJECT_BATCH, Dumper, DumpStats, dump_volume
from redisfuse.backend.dumpformat import DumpFormatError
from redisfuse.backend.fsck import fsck
from redisfuse.backend.load import load_volume, read_header
from redisfuse.backend.model import BLOCK_SIZE
from redisfuse.backend.streams import AsyncReader, AsyncWriter

BS = BLOCK_SIZE
T0 = 1_600_000_000_123_456_789
"""A time with nanoseconds that no clock would produce by chance."""


async def dump_bytes(vol: Volume, stats: list[DumpStats] | None = None) -> bytes:
    buf = io.BytesIO()
    done = await dump_volume(vol.inodes.ctx, AsyncWriter(buf))
    if stats is not None:
        stats.append(done)
    return buf.getvalue()


async def load_bytes(vol: Volume, data: bytes) -> None:
    src = AsyncReader(io.BytesIO(data))
    header = await read_header(src)
    await load_volume(vol.inodes.ctx, src, header.block_size, uuid=header.uuid)


@pytest_asyncio.fixture
async def target(redis_server, raw: Redis) -> AsyncIterator[Volume]:  # type: ignore[no-untyped-def]
    """A second, empty volume to load into; fsck must find it consistent afterwards."""
    name = f"t-load-{os.urandom(6).hex()}"
    async with open_volume(redis_server.url, volume=name) as volume:
        yield volume
    report = await fsck(raw, name)
    assert report.ok, f"fsck of the loaded volume:\n{report}"


async def build_tree(vol: Volume) -> None:
    """Every kind of object the volume stores, with owners, modes and ns times set."""
    fs = vol.inodes
    root = 1
    await vol.write_file("/empty", b"")
    await vol.write_file("/small.txt", b"hello\n")
    compressible = b"RedisFUSE dump " * (3 * BS // 15 + 100)  # 3+ blocks, compresses
    await vol.write_file("/compressible", compressible)
    await vol.write_file("/random", os.urandom(2 * BS + 123))  # stored raw
    async with await vol.open("/sparse", "wb") as f:  # blocks 0 and 9, holes between
        await f.write(b"start")
        await f.seek(9 * BS + 100)
        await f.write(b"middle")
    await vol.truncate("/sparse", 20 * BS)  # a hole at the end too
    await vol.mkdir("/dir")
    await vol.mkdir("/dir/empty-subdir")
    await vol.mkdir("/dir/nested")
    await vol.write_file("/dir/nested/deep", b"deep" * 1000)
    await vol.link("/small.txt", "/dir/hardlink")
    await vol.link("/small.txt", "/dir/nested/hardlink2")
    await vol.symlink("small.txt", "/symlink")
    await vol.symlink(b"/no/such/\xff\xfetarget", "/dangling")
    odd = await fs.mkdir(root, b"caf\xe9-latin1-\xff", 0o750, 0, 0)
    await vol.write_file(b"/caf\xe9-latin1-\xff/\x01ctl\tname \xe2\x82\xac", b"odd names")
    await fs.mknod(root, b"fifo", stat.S_IFIFO | 0o640, 0, 0)
    await fs.mknod(root, b"chardev", stat.S_IFCHR | 0o600, 0, 0, rdev=os.makedev(1, 3))
    await fs.mknod(root, b"blockdev", stat.S_IFBLK | 0o600, 0, 0, rdev=os.makedev(8, 1))
    small = await vol.stat("/small.txt")
    await fs.setxattr(small.ino, b"user.text", b"plain value")
    await fs.setxattr(small.ino, b"user.binary", bytes(range(256)))
    await fs.setxattr(small.ino, b"user.\xff-name", b"")
    await fs.setxattr(odd.ino, b"user.dir", b"on a directory")
    await fs.setxattr(root, b"user.root", b"on the root")
    # Owners, modes and times last: linking and writing change ctime and mtime.
    for n, path in enumerate(
        [
            "/",
            "/empty",
            "/small.txt",
            "/compressible",
            "/random",
            "/sparse",
            "/dir",
            "/dir/empty-subdir",
            "/dir/nested/deep",
            "/fifo",
            "/chardev",
        ]
    ):
        attr = await vol.stat(path)
        await fs.setattr(
            attr.ino,
            SetAttr(
                mode=(0o4755 if path == "/random" else 0o640 + n) if not attr.is_dir else 0o1777,
                uid=1000 + n,
                gid=2000 + n,
                atime_ns=T0 + n,
                mtime_ns=T0 + 1000 * n + 7,
                ctime_ns=T0 + 1_000_000 * n + 9,
            ),
        )


async def snapshot(vol: Volume) -> dict[bytes, Any]:
    """Path -> everything a user can see of it; hard links share one ``links`` group."""
    fs = vol.inodes
    out: dict[bytes, Any] = {}
    groups: dict[int, bytes] = {}

    async def describe(path: bytes, ino: int) -> None:
        a = await fs.getattr(ino)
        xattrs = {n: await fs.getxattr(ino, n) for n in sorted(await fs.listxattr(ino))}
        info: dict[str, Any] = {
            "mode": a.mode,
            "uid": a.uid,
            "gid": a.gid,
            "nlink": a.nlink,
            "size": a.size,
            "rdev": a.rdev,
            "times": (a.atime_ns, a.mtime_ns, a.ctime_ns),
            "bytes_used": a.bytes_used,
            "xattrs": xattrs,
            "links": groups.setdefault(ino, path),
        }
        if a.is_reg:
            info["sha"] = hashlib.sha256(await vol.read_file(path or b"/")).hexdigest()
        if a.is_symlink:
            info["target"] = await fs.readlink(ino)
        out[path or b"/"] = info
        if a.is_dir:
            # By name: a load creates entries in name order, not the original order.
            for entry in sorted(await fs.readdir(ino), key=lambda e: e.name):
                await describe(path + b"/" + entry.name, entry.ino)

    await describe(b"", 1)
    return out


async def test_round_trip_preserves_everything(vol: Volume, target: Volume) -> None:
    await build_tree(vol)
    before = await snapshot(vol)
    first = await dump_bytes(vol)
    await load_bytes(target, first)
    after = await snapshot(target)
    assert after == before
    # Spot checks of what the comparison covers, so a weak snapshot cannot pass it.
    assert before[b"/small.txt"]["nlink"] == 3
    assert (
        before[b"/dir/nested/hardlink2"]["links"]
        == b"/dir/hardlink"
        == before[b"/small.txt"]["links"]
    )
    assert before[b"/sparse"]["bytes_used"] == 5 + 106  # two blocks, the rest holes
    assert before[b"/sparse"]["size"] == 20 * BS
    assert before[b"/small.txt"]["xattrs"][b"user.binary"] == bytes(range(256))
    assert before[b"/random"]["times"] == (T0 + 4, T0 + 4007, T0 + 4_000_009)
    assert before[b"/chardev"]["rdev"] == os.makedev(1, 3)
    assert before[b"/dangling"]["target"] == b"/no/such/\xff\xfetarget"
    assert b"/caf\xe9-latin1-\xff/\x01ctl\tname \xe2\x82\xac" in after
    again = await dump_bytes(target)
    assert again == first


async def test_dump_is_deterministic_and_streams_the_stored_objects(vol: Volume) -> None:
    await vol.write_file("/a", b"x" * (BS + 10))
    first = await dump_bytes(vol)
    assert first == await dump_bytes(vol)
    lines = first.split(b"\n")
    assert lines[0] == (
        b'{"block_size":65536,"codec":"zlib","format":"redisfuse-dump","kind":"header",'
        b'"uuid":"%s","version":1}' % vol.inodes.settings.uuid.encode()
    )
    # The object as stored in Redis (zlib codec byte 1), not re-encoded or decoded.
    assert b"\n\x01x" in first
    assert first.endswith(b'{"blocks":2,"inodes":2,"kind":"end","links":0}\n')


async def test_a_load_gives_the_volume_the_dumped_volumes_uuid(
    vol: Volume, target: Volume, raw: Redis
) -> None:
    """The dumped volume comes back as itself (a mount that saw it vanish resumes,
    health.py); a dump from before the header carried the uuid keeps the fresh one."""
    await vol.write_file("/a", b"a")
    data = await dump_bytes(vol)
    formatted = target.inodes.settings.uuid
    assert formatted != vol.inodes.settings.uuid
    older = data.replace(b'"uuid":"%s",' % vol.inodes.settings.uuid.encode(), b"", 1)
    assert older != data
    await load_bytes(target, older)
    assert await raw.hget(target.inodes.keys.setting, "uuid") == formatted.encode()
    await target.remove("/a")
    await load_bytes(target, data)
    assert await raw.hget(target.inodes.keys.setting, "uuid") == vol.inodes.settings.uuid.encode()
    assert target.inodes.settings.uuid == vol.inodes.settings.uuid
    assert await dump_bytes(target) == data


async def test_load_refuses_a_volume_that_is_not_empty(vol: Volume, target: Volume) -> None:
    await vol.write_file("/a", b"a")
    data = await dump_bytes(vol)
    await target.mkdir("/already-here")
    with pytest.raises(NotEmpty, match="not empty"):
        await load_bytes(target, data)
    assert await target.listdir("/") == ["already-here"]


async def test_load_refuses_a_volume_mounted_elsewhere(
    redis_server,  # type: ignore[no-untyped-def]
    vol: Volume,
    target: Volume,
) -> None:
    data = await dump_bytes(vol)
    # A second open of the target stands for a mount: a session of its own.
    async with open_volume(redis_server.url, volume=target.name) as other:
        with pytest.raises(FSError, match="in use by 1 other session"):
            await load_bytes(other, data)
    await load_bytes(target, data)  # once the other session is gone, it works


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[: len(d) // 2], "truncated"),
        (lambda d: d[: d.rindex(b'{"blocks"')], "truncated"),
        (lambda d: d.replace(b"\x01x", b"\x01y", 1), "checksum"),
        (lambda d: d.replace(b'"version":1', b'"version":9', 1), "version 9"),
        (lambda d: d.replace(b'"uuid":"', b'"uuid":"../', 1), "bad uuid"),
        (lambda d: b"PK\x03\x04 not a dump\n" + d, "not a RedisFUSE dump"),
        (lambda d: d.replace(b'"kind":"inode"', b'"kind":"inode', 1), "not a dump record"),
        (lambda d: d + b"trailing\n", "after the end record"),
    ],
)
async def test_damaged_dump_fails_cleanly(
    vol: Volume, target: Volume, damage: Any, message: str
) -> None:
    await vol.mkdir("/d")
    await vol.write_file("/d/a", b"x" * (3 * BS))
    await vol.write_file("/b", b"y")
    with pytest.raises(DumpFormatError, match=message):
        await load_bytes(target, damage(await dump_bytes(vol)))
    # What was restored before the damage is consistent (the target fixture runs fsck).


async def test_live_dump_is_consistent_per_file(vol: Volume, redis_server, raw: Redis) -> None:  # type: ignore[no-untyped-def]
    """Each file in a dump taken while files are rewritten is one version, never a mix."""
    blocks = OBJECT_BATCH + 4  # two MGETs per file: a gc can strike between them
    names = [f"/f{i}" for i in range(4)]
    for name in names:
        await vol.write_file(name, bytes([0]) * (blocks * BS))
    stop = anyio.Event()
    versions = 0

    async def writer() -> None:
        nonlocal versions
        version = 0
        while not stop.is_set():
            version = version % 250 + 1
            for name in names:
                # Overwritten in place (no truncate) and committed once, at close:
                # every block of the new version at once.
                async with await vol.open(name, "r+b") as f:
                    await f.write(bytes([version]) * (blocks * BS))
            await vol.inodes.gc(grace_ms=0)  # replaced objects vanish at once
            versions += 1
            await anyio.lowlevel.checkpoint()

    dumps = []
    stats: list[DumpStats] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer)
        # At least 8 dumps, and on until the writer has gone through two versions
        # (a fast machine can finish 8 first; the files compress to almost nothing).
        while len(dumps) < 8 or (versions < 2 and len(dumps) < 32):
            dumps.append(await dump_bytes(vol, stats))
        stop.set()
    assert versions > 1
    checked = 0
    for n, data in enumerate(dumps):
        copy_name = f"t-live-{os.urandom(4).hex()}-{n}"
        async with open_volume(redis_server.url, volume=copy_name) as copy:
            await load_bytes(copy, data)
            for name in names:
                content = await copy.read_file(name)
                assert len(content) == blocks * BS
                assert content == content[:1] * len(content), f"{name} mixes versions"
                checked += 1
        assert (await fsck(raw, copy_name)).ok
    assert checked == len(dumps) * len(names)


async def test_file_replaced_between_object_batches_is_read_again(
    vol: Volume, target: Volume
) -> None:
    """The objects of a file vanish half way through it: the dump reads it again whole."""
    blocks = 2 * OBJECT_BATCH
    old, new = os.urandom(blocks * BS), os.urandom(blocks * BS)  # stored raw: 2 MiB each
    await vol.write_file("/f", old)
    buf = io.BytesIO()
    dumper = Dumper(vol.inodes.ctx, AsyncWriter(buf))
    replaced = 0

    async def replace_and_purge() -> None:
        nonlocal replaced
        if replaced == 0:
            async with await vol.open("/f", "r+b") as f:
                await f.write(new)
            assert await vol.inodes.gc(grace_ms=0) == blocks
        replaced += 1

    dumper.between_batches = replace_and_purge
    dumper.spool_memory = 2 * BS  # the file's data waits in a temporary file
    stats = await dumper.run()
    assert stats.retries == 1
    assert replaced == 2  # once in the first read, once in the second
    assert buf.getvalue() == await dump_bytes(vol)  # the same as a quiet dump, all in memory
    await load_bytes(target, buf.getvalue())
    assert await target.read_file("/f") == new


async def test_dump_of_a_damaged_volume_names_the_problem(vol: Volume, raw: Redis) -> None:
    await vol.write_file("/f", b"data")
    ino = (await vol.stat("/f")).ino
    keys = vol.inodes.keys
    await raw.hset(keys.blockmap(ino), "1", "not-a-map-entry")
    with pytest.raises(FSError, match=f"corrupt block map entry .* of inode {ino}; run redisfuse"):
        await dump_bytes(vol)
    assert (await fsck(raw, vol.name, repair=True)).repairs  # leave it whole for the teardown


async def test_a_volume_moves_to_a_cluster_and_back_unchanged(  # type: ignore[no-untyped-def]
    vol: Volume, target: Volume, redis_cluster, raw: Redis
) -> None:
    """Dump on a single server, load on a Redis Cluster (where the volume gets the
    spread object layout), dump there, load back on a single server: the three
    dumps are byte-identical and each copy is consistent."""
    await build_tree(vol)
    before = await snapshot(vol)
    first = await dump_bytes(vol)
    name = f"t-cluster-{os.urandom(6).hex()}"
    async with open_volume(redis_cluster.url, volume=name) as on_cluster:
        assert on_cluster.inodes.ctx.keys.spread  # formatted on the cluster
        await load_bytes(on_cluster, first)
        assert await snapshot(on_cluster) == before
        second = await dump_bytes(on_cluster)
        report = await fsck(on_cluster.inodes.ctx.client, name)
        assert report.ok and report.objects > 0, str(report)
    assert second == first
    await load_bytes(target, second)  # the fixture runs fsck on it afterwards
    assert await snapshot(target) == before
    assert await dump_bytes(target) == first
