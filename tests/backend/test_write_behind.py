"""Write-behind and replies overtaken by other changes, made to happen on purpose.

A commit behind the writer (a full write buffer) is held at the backend's test
hooks (``BlockStore.before_commit``: objects stored, map not yet committed;
``BlockStore.after_commit``: the reply taken in; ``Context.reply_hook``: a
reply arrived and nothing has used it yet) while the test reads, stats,
writes to the same and the neighbouring blocks, truncates and flushes; the
file is compared with a model of its bytes after every step and, at the end,
through a second node. The last tests hold a reply while another node's change
and its event overtake it, and check what the cache keeps.

Shortcuts: one file per test, driven through the inode-level API (what the
FUSE frontend calls); the model is a bytearray; the held points are hooks of
the backend, not a proxy, so each interleaving happens every time.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio import Redis

from redisfuse.backend import ROOT_INO, SetAttr, Volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys
from redisfuse.backend.model import BLOCK_SIZE
from tests.caching import caching

BS = BLOCK_SIZE
UID, GID = os.getuid(), os.getgid()


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


_GATES: list[Gate] = []


@pytest.fixture(autouse=True)
def _open_gates(vol: Volume) -> Iterator[None]:
    """A failed test must not leave a call held: the volume's teardown (set up before
    this, so torn down after) would wait for it."""
    yield
    for gate in _GATES:
        gate.failure = None
        gate.opened.set()
    _GATES.clear()


class Gate:
    """A hook that holds whoever reaches it (when ``when`` says so) until opened."""

    def __init__(self, when: Callable[[str], bool] = lambda name: True) -> None:
        _GATES.append(self)
        self.when = when
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self.failure: Exception | None = None
        """Raised by the held call once the gate opens (a commit that fails)."""

    async def __call__(self, name: str = "") -> None:
        if not self.when(name) or self.opened.is_set():
            return
        self.arrived.set()
        await self.opened.wait()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    async def reached(self) -> None:
        await asyncio.wait_for(self.arrived.wait(), 10)


class File:
    """One open file of ``vol`` and the model of its bytes."""

    def __init__(self, vol: Volume, fh: int, ino: int) -> None:
        self.vol = vol
        self.fs = vol.inodes
        self.fh = fh
        self.ino = ino
        self.model = bytearray()

    @classmethod
    async def create(cls, vol: Volume, buffer: int) -> File:
        vol.inodes.write_buffer_bytes = buffer
        fh, attr = await vol.inodes.create(ROOT_INO, b"f", 0o644, os.O_RDWR, UID, GID)
        return cls(vol, fh, attr.ino)

    async def write(self, offset: int, data: bytes) -> None:
        assert await self.fs.write(self.fh, offset, data) == len(data)
        if len(self.model) < offset:
            self.model.extend(bytes(offset - len(self.model)))
        self.model[offset : offset + len(data)] = data

    def truncated(self, size: int) -> None:
        del self.model[size:]
        self.model.extend(bytes(size - len(self.model)))

    async def check(self, step: str) -> None:
        """stat (inode and path) and a read of everything agree with the model."""
        want = bytes(self.model)
        assert (await self.fs.getattr(self.ino)).size == len(want), f"{step}: getattr size"
        assert (await self.vol.stat("/f")).size == len(want), f"{step}: stat size"
        got = await self.fs.read(self.fh, 0, len(want) + 100)
        assert len(got) == len(want), f"{step}: read {len(got)} bytes of {len(want)}"
        bad = next((i for i in range(len(want)) if got[i] != want[i]), None)
        assert bad is None, f"{step}: byte {bad} differs from the model"


async def test_reads_stats_and_writes_see_a_commit_held_before_its_script(
    vol: Volume, vol2: Volume
) -> None:
    """While a commit behind the writer waits to be sent, the writes it carries stay
    visible, and writes into its blocks and the next ones build on them."""
    f = await File.create(vol, 128 * 1024)
    gate = Gate()
    vol.inodes.data.before_commit = gate
    await f.write(0, pattern(150_000))  # blocks 0-2: a full buffer, committed behind
    await gate.reached()
    await f.check("commit held")
    await f.write(140_000, pattern(1_000, 1))  # block 2, in flight
    await f.check("write into a block in flight")
    await f.write(200_000, pattern(1_000, 2))  # block 3, past the committed size
    await f.check("write into the next block")
    await f.write(10, pattern(100, 3))  # block 0, in flight
    await f.check("write into the first block")
    gate.opened.set()
    await f.fs.flush(f.fh)
    await f.check("flushed")
    await f.fs.release(f.fh)
    assert await vol2.read_file("/f") == bytes(f.model)


async def test_a_truncate_and_a_flush_wait_for_a_commit_held_in_flight(
    vol: Volume, vol2: Volume
) -> None:
    f = await File.create(vol, 128 * 1024)
    gate = Gate()
    vol.inodes.data.before_commit = gate
    await f.write(0, pattern(150_000))
    await gate.reached()
    await f.write(149_000, pattern(5_000, 1))
    truncate = asyncio.create_task(f.fs.setattr(f.ino, SetAttr(size=100_000)))
    flush = asyncio.create_task(f.fs.flush(f.fh))
    await asyncio.sleep(0.05)
    assert not truncate.done() and not flush.done()
    gate.opened.set()
    await asyncio.gather(truncate, flush)
    f.truncated(100_000)
    await f.check("truncated after the commit")
    await f.write(120_000, pattern(70_000, 4))  # fills the buffer again: behind
    await f.check("written past the cut")
    await f.fs.release(f.fh)
    assert await vol2.read_file("/f") == bytes(f.model)


async def test_the_view_is_whole_right_after_a_commit_reply(vol: Volume, vol2: Volume) -> None:
    """Issue 24: between a commit's reply and the end of its task, a write into a
    block it carried found neither the block (gone with the commit) nor a size that
    included it, took the block for a hole and read back zeros."""
    f = await File.create(vol, 128 * 1024)
    gate = Gate()
    vol.inodes.data.after_commit = gate
    await f.write(0, pattern(100_000))
    await f.write(100_000, pattern(100_000, 1))  # ends in block 3: committed behind
    await gate.reached()
    await f.check("reply taken in")
    await f.write(200_000, pattern(100_000, 2))  # starts inside block 3
    await f.check("write into the committed block")
    gate.opened.set()
    for n in range(3, 10):
        await f.write(n * 100_000, pattern(100_000, n))
        await f.check(f"write {n}")
    await f.fs.release(f.fh)
    assert await vol2.read_file("/f") == bytes(f.model)


async def test_a_read_whose_map_reply_predates_a_commit_keeps_no_stale_map(
    vol: Volume, vol2: Volume
) -> None:
    """A read asked for the block map, then the commit behind the writer completed,
    then the map's reply came: the read still sees the committed bytes, and the
    older map is not kept (the next read would find holes where the data is)."""
    async with caching(vol):
        f = await File.create(vol, 128 * 1024)
        held = Gate(lambda name: name == "read_map")
        vol.inodes.ctx.reply_hook = held
        commit = Gate()
        vol.inodes.data.before_commit = commit
        await f.write(0, pattern(150_000))
        await commit.reached()
        read = asyncio.create_task(f.fs.read(f.fh, 0, 150_000))
        await held.reached()
        committed = asyncio.Event()

        async def note() -> None:
            committed.set()

        vol.inodes.data.after_commit = note
        commit.opened.set()
        await asyncio.wait_for(committed.wait(), 10)
        held.opened.set()
        assert await read == bytes(f.model)
        await f.check("after the stale map reply")
        await f.fs.release(f.fh)
    assert await vol2.read_file("/f") == bytes(f.model)


async def test_a_failed_commit_behind_keeps_the_writes_built_on_it(
    vol: Volume, raw: Redis, volume_name: str
) -> None:
    """A write into a block of a commit in flight took that commit's copy; when the
    commit fails, both writes are committed by the next flush."""
    f = await File.create(vol, 128 * 1024)
    gate = Gate()
    gate.failure = RuntimeError("injected")
    vol.inodes.data.before_commit = gate
    await f.write(0, pattern(150_000))
    await gate.reached()
    await f.write(140_000, pattern(100, 1))  # on the copy in flight
    gate.opened.set()
    with pytest.raises(RuntimeError, match="injected"):
        await f.fs.flush(f.fh)  # reports the failure, and commits everything
    await f.check("after the failure")
    await f.fs.release(f.fh)
    assert await vol.read_file("/f") == bytes(f.model)
    report = await fsck(raw, volume_name)
    assert report.leaked_objects and not report.problems
    await raw.delete(*(Keys(volume_name).obj(o) for o in report.leaked_objects))


async def test_a_block_copied_from_a_commit_that_merged_it_afresh_is_merged_too(
    vol: Volume, vol2: Volume
) -> None:
    """A commit in flight met another node's change to one of its blocks and merged
    that block afresh; a write here had copied the block before that, without the
    other node's bytes. Its commit must not put the old bytes back."""
    f = await File.create(vol, 128 * 1024)
    await f.write(0, pattern(200_000))
    await f.fs.flush(f.fh)
    gate = Gate()
    vol.inodes.data.before_commit = gate
    await f.write(70_000, pattern(100, 1))  # block 1, in part
    await f.write(4 * BS, pattern(2 * BS, 2))  # blocks 4 and 5: the buffer is full
    await gate.reached()  # committing blocks 1, 4 and 5, held before its script
    other = await vol2.open("/f", "r+b")
    await other.seek(100_000)
    await other.write(pattern(100, 3))  # block 1 again, on the other node
    await other.close()
    f.model[100_000:100_100] = pattern(100, 3)
    await f.write(120_000, pattern(100, 4))  # copies block 1 from the commit in flight
    gate.opened.set()
    await f.fs.flush(f.fh)
    await f.check("after both commits")
    await f.fs.release(f.fh)
    assert await vol2.read_file("/f") == bytes(f.model)


@pytest.mark.parametrize("first", ["A", "B"])
async def test_writers_on_two_nodes_inside_one_block_both_survive(
    vol: Volume, vol2: Volume, first: str
) -> None:
    """README, "Writes": two nodes writing different bytes of one 64 KiB block both
    survive, whichever commits first. A node that took the block for a hole (past
    the size it knew) committed it over the other node's bytes."""
    await vol.write_file("/f", b"")
    a = await vol.open("/f", "r+b")
    b = await vol2.open("/f", "r+b")
    await a.write(b"A" * 1000)
    await b.seek(1000)
    await b.write(b"B" * 1000)
    for f in (a, b) if first == "A" else (b, a):
        await f.close()
    assert await vol.read_file("/f") == b"A" * 1000 + b"B" * 1000
    assert await vol2.read_file("/f") == b"A" * 1000 + b"B" * 1000


async def test_a_commit_reply_overtaken_by_another_nodes_change_is_not_kept(
    vol: Volume, vol2: Volume
) -> None:
    """Issue 21: A's commit ran, B extended the file and B's event reached A, and only
    then did A take in its commit's reply. A kept that older size and served it for
    the cache's lifetime; it must serve B's."""
    async with caching(vol):
        half = 3 * BS
        fa = await vol.open("/f", "w+b")
        await fa.write(pattern(half))
        held = Gate(lambda name: name == "commit")
        vol.inodes.ctx.reply_hook = held
        closing = asyncio.create_task(fa.close())
        await held.reached()
        counters = vol.inodes.ctx.counters
        heard = counters.events_inode
        fb = await vol2.open("/f", "r+b")
        await fb.seek(half)
        await fb.write(pattern(half, 1))
        await fb.close()
        for _ in range(500):
            if counters.events_inode > heard:
                break
            await asyncio.sleep(0.01)
        assert counters.events_inode > heard, "B's change event never reached A"
        held.opened.set()
        await closing
        assert (await vol.stat("/f")).size == 2 * half
        assert await vol.read_file("/f") == pattern(half) + pattern(half, 1)


async def test_a_lookup_reply_overtaken_by_an_event_is_not_kept(vol: Volume, vol2: Volume) -> None:
    """A lookup sent before B's chmod, taken in after B's event: its attributes may
    be neither cached here nor handed to the kernel to cache."""
    await vol.write_file("/f", b"x")
    async with caching(vol):
        held = Gate(lambda name: name == "lookup")
        vol.inodes.ctx.reply_hook = held
        lookup = asyncio.create_task(vol.inodes.lookup(ROOT_INO, b"f"))
        await held.reached()
        counters = vol.inodes.ctx.counters
        heard = counters.events_inode
        await vol2.chmod("/f", 0o600)
        for _ in range(500):
            if counters.events_inode > heard:
                break
            await asyncio.sleep(0.01)
        held.opened.set()
        old = await lookup
        assert old.mode & 0o777 == 0o666
        assert not vol.inodes.current(old)
        cached = vol.inodes.cached_lookup(ROOT_INO, b"f")
        assert cached is None or cached.mode & 0o777 == 0o600
        assert (await vol.inodes.lookup(ROOT_INO, b"f")).mode & 0o777 == 0o600
