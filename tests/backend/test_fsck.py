"""fsck finds every kind of damage it knows, and --repair leaves the volume consistent."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from redisfuse.backend import ROOT_INO, Volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys


async def test_consistent_volume_has_no_findings(vol: Volume, raw: Redis, volume_name: str) -> None:
    await vol.makedirs("/a/b")
    await vol.write_file("/a/b/f", b"x" * 100_000)
    await vol.link("/a/b/f", "/a/g")
    report = await fsck(raw, volume_name)
    assert report.ok, str(report)
    assert report.inodes == 4 and report.entries == 4


async def test_damage_is_found_and_repaired(vol: Volume, raw: Redis, volume_name: str) -> None:
    keys = Keys(volume_name)
    await vol.makedirs("/d")
    await vol.write_file("/d/f", b"y" * 70_000)
    f = await vol.stat("/d/f")
    d = await vol.stat("/d")
    await raw.hset(keys.dirents(d.ino), b"ghost", b"999999:77")  # dangling entry
    await raw.hset(keys.inode(f.ino), "nlink", 5)  # wrong nlink
    await raw.hset(keys.usage, "inodes", 42)  # wrong counter
    await raw.set(keys.obj(888_888), b"\x00leaked")  # object nobody references
    await raw.hset(keys.blockmap(777_777), "0", b"888_887:1")  # map of a missing inode
    await raw.zadd(keys.orphans, {"666666": 1})  # orphan without an inode
    await raw.hset(keys.inode(f.ino), "bytes", 1)  # byte count off
    report = await fsck(raw, volume_name)
    text = str(report)
    assert not report.ok
    for expected in (
        "dangling entry",
        "nlink 5",
        "usage counts",
        "block map of missing inode",
        "orphan 666666",
        "counts 1 bytes",
    ):
        assert expected in text, (expected, text)
    assert 888_888 in report.leaked_objects

    repaired = await fsck(raw, volume_name, repair=True, min_idle=0)
    assert repaired.repairs, str(repaired)
    await vol.inodes.reclaim_pending()
    after = await fsck(raw, volume_name)
    assert after.ok, str(after)
    assert await vol.read_file("/d/f") == b"y" * 70_000
    assert (await vol.stat("/d/f")).nlink == 1
    assert await vol.listdir("/d") == ["f"]
    assert (await vol.statfs()).inodes_used == 3


async def test_unreachable_inode_is_freed_by_repair(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    keys = Keys(volume_name)
    await vol.write_file("/lost", b"z" * 1000)
    lost = await vol.stat("/lost")
    await raw.hdel(keys.dirents(ROOT_INO), b"lost")  # the name vanishes, the inode stays
    report = await fsck(raw, volume_name)
    assert any("unreachable" in p for p in report.problems), str(report)
    await fsck(raw, volume_name, repair=True, min_idle=0)
    await vol.inodes.reclaim_pending()
    assert not await raw.exists(keys.inode(lost.ino), keys.blockmap(lost.ino))
    assert (await fsck(raw, volume_name)).ok


async def test_garbled_block_map_entry_is_reported_and_dropped(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    keys = Keys(volume_name)
    await vol.write_file("/f", b"q" * 1000)
    f = await vol.stat("/f")
    await raw.hset(keys.blockmap(f.ino), "7", b"not-an-entry")
    report = await fsck(raw, volume_name)
    assert any("corrupt block map entry" in p for p in report.problems), str(report)
    await fsck(raw, volume_name, repair=True, min_idle=0)
    assert (await fsck(raw, volume_name)).ok
    assert await vol.read_file("/f") == b"q" * 1000


async def test_a_missing_object_becomes_a_hole_named_in_the_log(
    vol: Volume, raw: Redis, volume_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys = Keys(volume_name)
    await vol.makedirs("/d")
    data = bytes(range(256)) * 256 * 3  # three 64 KiB blocks
    await vol.write_file("/d/f", data)
    f = await vol.stat("/d/f")
    lost = int((await raw.hget(keys.blockmap(f.ino), "1")).split(b":")[0])
    await raw.delete(keys.obj(lost))
    report = await fsck(raw, volume_name)
    assert any(f"object {lost} (block 1 of inode {f.ino}) is missing" in p for p in report.problems)

    with caplog.at_level(logging.WARNING, logger="redisfuse.backend.fsck"):
        repaired = await fsck(raw, volume_name, repair=True)
    assert any("/d/f" in r and "zeros" in r for r in repaired.repairs), str(repaired)
    assert any("/d/f" in r.getMessage() for r in caplog.records)
    assert (await fsck(raw, volume_name)).ok
    block = 65536
    assert await vol.read_file("/d/f") == data[:block] + bytes(block) + data[2 * block :]
