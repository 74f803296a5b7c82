"""Model-based test: random operation sequences against the backend and an in-memory model.

A hypothesis ``RuleBasedStateMachine`` drives the inode-level API (``vol.inodes``)
of a fresh volume and a plain-Python model side by side. Every operation's
errno must equal the one the model (Linux's rules and order of checks) predicts;
after every step the namespace (names, inode numbers, kinds, '..'), each live
inode's nlink, size and bytes_used, the contents of files, and statfs's inode and
byte counters must match the model. fsck runs every few steps and, before and
after the volume is closed, at teardown.

Shortcuts this file takes: one node only (races live in test_races.py); names
come from a pool of four so that collisions are common; contents are seeded
random bytes; every write is flushed within its step, so each step ends with
everything committed; only regular files are held open (directories never
are); the model of bytes_used mirrors the block map (sum of the valid lengths
of 64 KiB blocks), which is what the backend promises in keys.py. One errno
follows the backend rather than Linux: a non-directory renamed onto a directory
that contains its source directory gets EISDIR (Linux: ENOTEMPTY); through a
mount the kernel answers that case itself before RedisFUSE sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from redisfuse.backend import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_INO,
    FSError,
    RedisOptions,
    SetAttr,
    Volume,
    open_volume,
)
from redisfuse.backend.fsck import fsck
from redisfuse.backend.scripts import ONCE_SCRIPTS, Scripts
from tests.faultproxy import FaultProxy, Faults

T = TypeVar("T")

UID, GID = os.getuid(), os.getgid()
BS = 64 * 1024
NAMES = [b"a", b"b", b"c", b"d"]
FSCK_EVERY = 5
XATTR_NAMES = [b"user.a", b"user.b"]
XATTR_CREATE, XATTR_REPLACE = 1, 2
LOST_REPLY_EXAMPLES = int(os.environ.get("REDISFUSE_LOST_REPLY_EXAMPLES", "25"))
"""Examples of the lost-reply run (the soak command raises it; see README)."""

# Offsets and sizes below 300 KiB, often right at a 64 KiB block boundary.
positions = st.one_of(
    st.integers(0, 300 * 1024 - 1),
    st.builds(lambda k, d: max(0, k * BS + d), st.integers(0, 4), st.integers(-16, 16)),
)
lengths = st.one_of(st.integers(0, 40), st.integers(0, 70_000))
rename_flags = st.sampled_from([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])


@dataclass
class Node:
    """One live inode of the model."""

    ino: int
    is_dir: bool
    parent: int = 0
    """The containing directory (directories only)."""
    entries: dict[bytes, int] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    valid: dict[int, int] = field(default_factory=dict)
    """Block index -> valid bytes, as the block map holds them (files only)."""
    opens: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


def _name(err: int | None) -> str:
    return "success" if err is None else errno.errorcode.get(err, str(err))


async def all_of(*checks: Coroutine[Any, Any, None]) -> None:
    """Run independent checks concurrently; raise the first failure once all are done."""
    results = await asyncio.gather(*checks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


STEP_DEADLINE_S = 120.0
"""A step still waiting after this long is stuck: its tasks' stacks are printed."""


async def _watched(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro``; if it hangs, fail with where every task is waiting."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=STEP_DEADLINE_S)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack(limit=25)
        task.cancel()
        raise AssertionError(f"a step hung for {STEP_DEADLINE_S} s (task stacks above)")
    return task.result()


class _Failed:
    """What :meth:`VolumeMachine.attempt` returns when the operation failed as predicted."""


FAILED = _Failed()


class VolumeMachine(RuleBasedStateMachine):
    """The backend and the model, one fresh volume per example."""

    redis_url = ""  # set by the test on a subclass
    options: RedisOptions | None = None
    """How the volume reaches Redis, when not straight at ``redis_url`` (a fault proxy)."""
    fsck_every = FSCK_EVERY
    write_buffer = 0
    """The volume's write buffer in bytes (0: the default)."""
    flush_held_writes = True
    """Whether a write through a held handle is flushed within its step; if not, it
    is committed behind later steps (a full buffer) or by close and truncate."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[int, Node] = {ROOT_INO: Node(ROOT_INO, True, parent=ROOT_INO)}
        self.dead_dirs: list[int] = []
        self.handles: dict[int, int] = {}  # fh -> ino
        self.unflushed: set[int] = set()
        """Files with writes not yet committed: their bytes_used is not checked."""
        self.steps = 0
        self.volume_name = f"t-model-{secrets.token_hex(6)}"
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._host: asyncio.Task[None] | None = None
        self.raw: Redis | None = None
        try:
            self.run(self._start())
        except BaseException:
            self._shutdown()
            raise

    # -- the event loop and the volume ---------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(_watched(coro))

    async def _hold_volume(self, ready: asyncio.Event) -> None:
        # One long-lived task enters and leaves open_volume (anyio cancel scopes and
        # task groups must be left by the task that entered them); every
        # run_until_complete of a step is a task of its own.
        async with open_volume(
            self.redis_url, volume=self.volume_name, options=self.options
        ) as vol:
            self.vol: Volume = vol
            if self.write_buffer:
                vol.inodes.write_buffer_bytes = self.write_buffer
            ready.set()
            await self._stop.wait()

    async def _start(self) -> None:
        self.raw = Redis.from_url(self.redis_url)
        ready = asyncio.Event()
        self._host = asyncio.create_task(self._hold_volume(ready))
        waiter = asyncio.create_task(ready.wait())
        await asyncio.wait([waiter, self._host], return_when=asyncio.FIRST_COMPLETED)
        if not ready.is_set():
            waiter.cancel()
            await self._host  # raises why the volume did not open

    async def _close_volume(self) -> None:
        self._stop.set()
        if self._host is not None:
            await self._host

    def _shutdown(self) -> None:
        try:
            self.run(self._close_volume())
        finally:
            try:
                if self.raw is not None:
                    self.run(self.raw.aclose())
                self.run(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    def teardown(self) -> None:
        try:
            for fh in sorted(self.handles):
                self._close(fh)
            self.check_model()
            self.check_contents()
            self._fsck("at teardown")
            self.run(self._close_volume())
            self._fsck("after close")
            self.run(self._delete_volume())
        finally:
            self._shutdown()

    async def _delete_volume(self) -> None:
        assert self.raw is not None
        keys = [k async for k in self.raw.scan_iter(match=f"rf:{{{self.volume_name}}}:*")]
        if keys:
            await self.raw.delete(*keys)

    def _fsck(self, when: str) -> None:
        assert self.raw is not None
        self.run(self._commits_landed())
        report = self.run(fsck(self.raw, self.volume_name))
        assert report.ok, f"fsck {when}:\n{report}"

    async def _commits_landed(self) -> None:
        """Wait for commits running behind the writer (write-behind): one caught between
        storing its objects and sending its block map is in flight, not leaking (fsck
        reports its objects as leaked all the same). Nothing is flushed here."""
        running = {d.inflight for d in self.vol.inodes._dirty.values() if d.inflight is not None}
        if running:
            await asyncio.wait(running)

    def attempt(self, what: str, coro: Coroutine[Any, Any, T], expected: int | None) -> T | _Failed:
        """Run one backend call; its errno (or success) must be what the model expects."""
        try:
            result = self.run(coro)
        except FSError as exc:
            assert exc.errno == expected, (
                f"{what}: backend failed with {_name(exc.errno)} ({exc}), model expects "
                f"{_name(expected)}"
            )
            return FAILED
        assert expected is None, f"{what}: backend succeeded, model expects {_name(expected)}"
        return result

    # -- the model -------------------------------------------------------------

    def _dirs(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if n.is_dir)

    def _files(self) -> list[int]:
        return sorted(i for i, n in self.nodes.items() if not n.is_dir)

    def _names(self, ino: int) -> int:
        return sum(
            1
            for n in self.nodes.values()
            if n.is_dir
            for child in n.entries.values()
            if child == ino
        )

    def _nlink(self, ino: int) -> int:
        node = self.nodes[ino]
        if node.is_dir:
            return 2 + sum(1 for c in node.entries.values() if self.nodes[c].is_dir)
        return self._names(ino)

    def _within(self, ino: int, ancestor: int) -> bool:
        """Whether directory ``ino`` is ``ancestor`` or lies below it."""
        while True:
            if ino == ancestor:
                return True
            if ino == ROOT_INO:
                return False
            ino = self.nodes[ino].parent

    def _lost_name(self, ino: int) -> None:
        """An entry naming ``ino`` is gone: free the inode if nothing holds it."""
        node = self.nodes[ino]
        if node.is_dir:
            del self.nodes[ino]
            self.dead_dirs.append(ino)
        elif self._names(ino) == 0 and node.opens == 0:
            del self.nodes[ino]

    def _parent_error(self, parent: int) -> int | None:
        return None if parent in self.nodes else errno.ENOENT

    def _draw_parent(self, data: st.DataObject) -> int:
        choices = self._dirs() + self.dead_dirs
        return data.draw(st.sampled_from(choices), label="parent")

    def _draw_name(self, data: st.DataObject, label: str = "name") -> bytes:
        return data.draw(st.sampled_from(NAMES), label=label)

    def _positions(self, ino: int) -> st.SearchStrategy[int]:
        """Offsets anywhere, near block boundaries, or inside the file's current data."""
        return st.one_of(positions, st.integers(0, len(self.nodes[ino].data)))

    def _draw_entry(self, data: st.DataObject, label: str) -> tuple[int, bytes]:
        """A directory and a name, usually one that exists (so that the call can succeed)."""
        entries = sorted((p, n) for p in self._dirs() for n in self.nodes[p].entries)
        if entries and data.draw(st.integers(0, 4), label=f"{label} exists") < 4:
            return data.draw(st.sampled_from(entries), label=label)
        return self._draw_parent(data), self._draw_name(data, label)

    def _draw_new_entry(self, data: st.DataObject, label: str) -> tuple[int, bytes]:
        """A directory and a name, usually one that is free (so that the call can succeed)."""
        parent = self._draw_parent(data)
        free = [n for n in NAMES if parent in self.nodes and n not in self.nodes[parent].entries]
        if free and data.draw(st.integers(0, 4), label=f"{label} free") < 4:
            return parent, data.draw(st.sampled_from(free), label=label)
        return parent, self._draw_name(data, label)

    # -- rules -------------------------------------------------------------------

    @rule(data=st.data(), keep_open=st.booleans())
    def create_file(self, data: st.DataObject, keep_open: bool) -> None:
        parent, name = self._draw_new_entry(data, "name")
        expected = self._parent_error(parent)
        if expected is None and name in self.nodes[parent].entries:
            expected = errno.EEXIST
        fs = self.vol.inodes
        res = self.attempt(
            f"create({parent}, {name!r})",
            fs.create(parent, name, 0o644, os.O_RDWR, UID, GID),
            expected,
        )
        if isinstance(res, _Failed):
            return
        fh, attr = res
        assert attr.is_reg and attr.nlink == 1 and attr.size == 0
        self.nodes[attr.ino] = Node(attr.ino, False, opens=1)
        self.nodes[parent].entries[name] = attr.ino
        self.handles[fh] = attr.ino
        if not keep_open:
            self._close(fh)

    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        parent, name = self._draw_new_entry(data, "name")
        expected = self._parent_error(parent)
        if expected is None and name in self.nodes[parent].entries:
            expected = errno.EEXIST
        res = self.attempt(
            f"mkdir({parent}, {name!r})",
            self.vol.inodes.mkdir(parent, name, 0o755, UID, GID),
            expected,
        )
        if isinstance(res, _Failed):
            return
        assert res.is_dir and res.nlink == 2
        self.nodes[res.ino] = Node(res.ino, True, parent=parent)
        self.nodes[parent].entries[name] = res.ino

    @rule(
        data=st.data(),
        name=st.sampled_from(XATTR_NAMES),
        value=st.binary(max_size=20),
        how=st.sampled_from(["set", "create", "replace", "remove"]),
    )
    def xattr(self, data: st.DataObject, name: bytes, value: bytes, how: str) -> None:
        ino = data.draw(st.sampled_from(sorted(self.nodes)), label="inode")
        node = self.nodes[ino]
        present = name in node.xattrs
        fs = self.vol.inodes
        expected: int | None = None
        if how == "remove":
            expected = None if present else errno.ENODATA
            call = fs.removexattr(ino, name)
        else:
            flags = {"set": 0, "create": XATTR_CREATE, "replace": XATTR_REPLACE}[how]
            if how == "create" and present:
                expected = errno.EEXIST
            elif how == "replace" and not present:
                expected = errno.ENODATA
            call = fs.setxattr(ino, name, value, flags)
        if isinstance(self.attempt(f"{how}xattr({ino}, {name!r})", call, expected), _Failed):
            return
        if how == "remove":
            del node.xattrs[name]
        else:
            node.xattrs[name] = value

    @precondition(lambda self: self._files())
    @rule(data=st.data(), length=lengths, seed=st.integers(0, 2**32))
    def write(self, data: st.DataObject, length: int, seed: int) -> None:
        ino = data.draw(st.sampled_from(self._files()), label="file")
        offset = data.draw(self._positions(ino), label="offset")
        payload = random.Random(seed).randbytes(length)
        fs = self.vol.inodes
        held = [fh for fh, i in self.handles.items() if i == ino]

        async def go() -> int:
            if held:
                n = await fs.write(held[0], offset, payload)
                if self.flush_held_writes:
                    await fs.flush(held[0])
                elif n:
                    self.unflushed.add(ino)
                return n
            fh, _ = await fs.open(ino, os.O_RDWR)
            try:
                return await fs.write(fh, offset, payload)
            finally:
                await fs.release(fh)  # commits the inode's writes, also earlier ones
                self.unflushed.discard(ino)

        written = self.run(go())
        assert written == length
        node = self.nodes[ino]
        if not length:
            return
        end = offset + length
        if len(node.data) < offset:
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:end] = payload
        for idx in range(offset // BS, (end - 1) // BS + 1):
            node.valid[idx] = max(node.valid.get(idx, 0), min(end, (idx + 1) * BS) - idx * BS)

    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        files = self._files()
        if files and data.draw(st.integers(0, 9), label="a file") < 9:
            ino = data.draw(st.sampled_from(files), label="inode")
        else:
            ino = data.draw(st.sampled_from(sorted(self.nodes)), label="inode")
        size = data.draw(self._positions(ino), label="size")
        node = self.nodes[ino]
        expected = errno.EISDIR if node.is_dir else None
        res = self.attempt(
            f"truncate({ino}, {size})", self.vol.inodes.setattr(ino, SetAttr(size=size)), expected
        )
        if isinstance(res, _Failed):
            return
        self.unflushed.discard(ino)  # committed first, in the same round trip
        assert res.size == size
        if size < len(node.data):
            del node.data[size:]
            keep = -(-size // BS)
            for idx in [i for i in node.valid if i >= keep]:
                del node.valid[idx]
            if keep and keep - 1 in node.valid:
                node.valid[keep - 1] = min(node.valid[keep - 1], size - (keep - 1) * BS)
        else:
            node.data.extend(bytes(size - len(node.data)))

    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        parent, name = self._draw_entry(data, "name")
        expected = self._parent_error(parent)
        child = None
        if expected is None:
            child = self.nodes[parent].entries.get(name)
            if child is None:
                expected = errno.ENOENT
            elif self.nodes[child].is_dir:
                expected = errno.EISDIR
        res = self.attempt(
            f"unlink({parent}, {name!r})", self.vol.inodes.unlink(parent, name), expected
        )
        if isinstance(res, _Failed):
            return
        assert child is not None
        del self.nodes[parent].entries[name]
        self._lost_name(child)

    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        parent, name = self._draw_entry(data, "name")
        expected = self._parent_error(parent)
        child = None
        if expected is None:
            child = self.nodes[parent].entries.get(name)
            if child is None:
                expected = errno.ENOENT
            elif not self.nodes[child].is_dir:
                expected = errno.ENOTDIR
            elif self.nodes[child].entries:
                expected = errno.ENOTEMPTY
        res = self.attempt(
            f"rmdir({parent}, {name!r})", self.vol.inodes.rmdir(parent, name), expected
        )
        if isinstance(res, _Failed):
            return
        assert child is not None
        del self.nodes[parent].entries[name]
        self._lost_name(child)

    @precondition(lambda self: len(self.nodes) > 1)
    @rule(data=st.data())
    def link(self, data: st.DataObject) -> None:
        files = self._files()
        if files and data.draw(st.integers(0, 4), label="target is a file") < 4:
            ino = data.draw(st.sampled_from(files), label="target")
        else:
            ino = data.draw(st.sampled_from(sorted(self.nodes)), label="target")
        parent, name = self._draw_new_entry(data, "name")
        # Linux: the new name is looked up first (EEXIST), then vfs_link refuses
        # directories (EPERM) and inodes without names (ENOENT).
        expected = self._parent_error(parent)
        if expected is None and name in self.nodes[parent].entries:
            expected = errno.EEXIST
        elif expected is None and self.nodes[ino].is_dir:
            expected = errno.EPERM
        elif expected is None and not self._names(ino):
            expected = errno.ENOENT
        res = self.attempt(
            f"link({ino}, {parent}, {name!r})", self.vol.inodes.link(ino, parent, name), expected
        )
        if isinstance(res, _Failed):
            return
        self.nodes[parent].entries[name] = ino
        assert res.nlink == self._nlink(ino)

    def _rename_error(self, sp: int, sname: bytes, dp: int, dname: bytes, flags: int) -> int | None:
        """Linux renameat2's verdict, in the order do_renameat2 and vfs_rename check."""
        if sp not in self.nodes or dp not in self.nodes:
            return errno.ENOENT
        src = self.nodes[sp].entries.get(sname)
        if src is None:
            return errno.ENOENT
        dst = self.nodes[dp].entries.get(dname)
        exchange = bool(flags & RENAME_EXCHANGE)
        if flags & RENAME_NOREPLACE and dst is not None:
            return errno.EEXIST
        if exchange and dst is None:
            return errno.ENOENT
        sdir = self.nodes[src].is_dir
        ddir = dst is not None and self.nodes[dst].is_dir
        if sp != dp:
            if sdir and self._within(dp, src):
                return errno.EINVAL  # source is an ancestor of the target
            if dst is not None and ddir and self._within(sp, dst):  # target is an ancestor
                if exchange:
                    return errno.EINVAL
                # Linux: ENOTEMPTY even for a non-directory source; the backend does
                # not look up the source's ancestors here and says EISDIR (shortcut).
                return errno.ENOTEMPTY if sdir else errno.EISDIR
        if dst == src:
            return None  # two names of one inode: nothing happens
        if dst is not None and not exchange:
            if sdir and not ddir:
                return errno.ENOTDIR
            if ddir and not sdir:
                return errno.EISDIR
            if ddir and self.nodes[dst].entries:
                return errno.ENOTEMPTY
        return None

    @rule(data=st.data(), flags=rename_flags)
    def rename(self, data: st.DataObject, flags: int) -> None:
        sp, sname = self._draw_entry(data, "source")
        if data.draw(st.booleans(), label="same directory"):
            dp, dname = sp, self._draw_name(data, "target name")
        else:
            dp, dname = self._draw_entry(data, "target")
        expected = self._rename_error(sp, sname, dp, dname, flags)
        res = self.attempt(
            f"rename({sp}, {sname!r}, {dp}, {dname!r}, flags={flags})",
            self.vol.inodes.rename(sp, sname, dp, dname, flags),
            expected,
        )
        if isinstance(res, _Failed):
            return
        spn, dpn = self.nodes[sp], self.nodes[dp]
        src = spn.entries[sname]
        dst = dpn.entries.get(dname)
        if dst == src:
            return
        if flags & RENAME_EXCHANGE:
            assert dst is not None
            spn.entries[sname], dpn.entries[dname] = dst, src
            if self.nodes[src].is_dir:
                self.nodes[src].parent = dp
            if self.nodes[dst].is_dir:
                self.nodes[dst].parent = sp
            return
        del spn.entries[sname]
        dpn.entries[dname] = src
        if self.nodes[src].is_dir:
            self.nodes[src].parent = dp
        if dst is not None:
            self._lost_name(dst)

    @precondition(lambda self: self.unflushed)
    @rule(pause=st.sampled_from([0.0, 0.0002, 0.0005, 0.001, 0.002, 0.005]))
    def let_commits_run(self, pause: float) -> None:
        """Commits behind the writer progress only while a step awaits: let them run
        for a moment, so that the next step meets them at another point."""
        self.run(asyncio.sleep(pause))

    @precondition(lambda self: not self.flush_held_writes)
    @rule(before=st.sampled_from([0.0, 0.001, 0.005]), after=st.sampled_from([0.0, 0.001, 0.005]))
    def slow_commits(self, before: float, after: float) -> None:
        """From now on commits pause before their script is sent and after its reply
        was taken in (the backend's test hooks), so that the steps that follow meet
        a commit in flight at those points."""
        data = self.vol.inodes.data

        async def pause_before() -> None:
            await asyncio.sleep(before)

        async def pause_after() -> None:
            await asyncio.sleep(after)

        data.before_commit = pause_before if before else None
        data.after_commit = pause_after if after else None

    @precondition(lambda self: self._files())
    @rule(data=st.data())
    def open_handle(self, data: st.DataObject) -> None:
        ino = data.draw(st.sampled_from(self._files()), label="file")
        fh, attr = self.run(self.vol.inodes.open(ino, os.O_RDWR))
        assert attr.ino == ino and attr.size == len(self.nodes[ino].data)
        self.handles[fh] = ino
        self.nodes[ino].opens += 1

    def _close(self, fh: int) -> None:
        self.run(self.vol.inodes.release(fh))
        ino = self.handles.pop(fh)
        self.unflushed.discard(ino)
        node = self.nodes[ino]
        node.opens -= 1
        if node.opens == 0 and self._names(ino) == 0:
            del self.nodes[ino]

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def close_handle(self, data: st.DataObject) -> None:
        self._close(data.draw(st.sampled_from(sorted(self.handles)), label="handle"))

    # -- comparisons -------------------------------------------------------------

    @invariant()
    def check_model(self) -> None:
        """Namespace, nlink, sizes and the statfs counters match the model."""
        self.run(self._check_model())

    async def _check_model(self) -> None:
        fs = self.vol.inodes
        st_ = await fs.statfs()
        assert st_.inodes_used == len(self.nodes), (
            f"statfs counts {st_.inodes_used} inodes, model has {len(self.nodes)}"
        )
        model_bytes = sum(sum(n.valid.values()) for n in self.nodes.values())
        if not self.unflushed:
            assert st_.bytes_used == model_bytes, f"statfs counts {st_.bytes_used} bytes"
        await all_of(
            *(self._check_node(ino, node) for ino, node in self.nodes.items()),
            *(self._check_removed(ino) for ino in self.dead_dirs),
        )

    async def _check_node(self, ino: int, node: Node) -> None:
        fs = self.vol.inodes
        attr = await fs.getattr(ino)
        assert attr.is_dir == node.is_dir, f"inode {ino} kind"
        assert attr.nlink == self._nlink(ino), f"inode {ino} nlink {attr.nlink}"
        assert await fs.listxattr(ino) == sorted(node.xattrs), f"inode {ino} xattr names"
        for name, value in node.xattrs.items():
            assert await fs.getxattr(ino, name) == value, f"inode {ino} xattr {name!r}"
        if node.is_dir:
            listing = await fs.readdir(ino)
            got = {e.name: (e.ino, e.attr is not None and e.attr.is_dir) for e in listing}
            want = {n: (c, self.nodes[c].is_dir) for n, c in node.entries.items()}
            assert got == want, f"directory {ino} lists {got}, model has {want}"
            assert (await fs.lookup(ino, b"..")).ino == node.parent
        else:
            assert attr.size == len(node.data), f"inode {ino} size {attr.size}"
            if ino not in self.unflushed:
                assert attr.bytes_used == sum(node.valid.values()), f"inode {ino} bytes_used"

    async def _check_removed(self, ino: int) -> None:
        with contextlib.suppress(FSError):
            await self.vol.inodes.getattr(ino)
            raise AssertionError(f"removed directory {ino} still exists")

    @invariant()
    def check_contents(self) -> None:
        """Every file reads back as the model's bytes (holes as zeros)."""
        self.run(all_of(*(self._check_contents(ino) for ino in self._files())))

    async def _check_contents(self, ino: int) -> None:
        fs = self.vol.inodes
        want = bytes(self.nodes[ino].data)
        held = [fh for fh, i in self.handles.items() if i == ino]
        if held:  # (a close of a handle of our own would commit the writes)
            got = await fs.read(held[0], 0, len(want) + 100)
            assert got == want, f"inode {ino}: read {len(got)} bytes differing from the model"
            return
        fh, _ = await fs.open(ino, os.O_RDONLY)
        try:
            got = await fs.read(fh, 0, len(want) + 100)
        finally:
            await fs.release(fh)
        assert got == want, f"inode {ino}: read {len(got)} bytes differing from the model"

    @invariant()
    def check_fsck(self) -> None:
        self.steps += 1
        if self.steps % self.fsck_every == 0:
            self._fsck(f"after step {self.steps}")


def model_settings(examples: int) -> settings:
    """Runs of 40 steps each; no per-example deadline (Redis round trips vary)."""
    return settings(
        max_examples=examples,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# A passing run takes seconds; a failing one lets hypothesis shrink the steps
# (up to its own 5-minute limit) rather than be cut off by the suite's timeout.
@pytest.mark.timeout(600)
def test_random_operations_match_the_model(redis_server) -> None:  # type: ignore[no-untyped-def]
    machine = type("BoundVolumeMachine", (VolumeMachine,), {"redis_url": redis_server.url})
    run_state_machine_as_test(
        machine,
        settings=model_settings(40),
    )


# -- the same, with commits running behind the writer -----------------------------


@pytest.mark.timeout(600)
def test_random_operations_match_the_model_with_write_behind(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Issue 24: a 64 KiB write buffer, and writes through held handles left to be
    committed behind the writer while later steps stat, read, write and truncate.
    The invariants stat and read every file after each step (through a held handle
    where there is one, so that checking commits nothing)."""
    machine = type(
        "WriteBehindMachine",
        (VolumeMachine,),
        {"redis_url": redis_server.url, "write_buffer": BS, "flush_held_writes": False},
    )
    run_state_machine_as_test(
        machine,
        settings=model_settings(40),
    )


# -- the same, with replies lost on the way back from Redis ---------------------


@pytest.mark.timeout(1800)
def test_random_operations_match_the_model_when_replies_are_lost(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Every mutating request runs once, whatever redis-py retries.

    A fault proxy drops the connection after Redis ran a request and before its
    reply returns; redis-py sends the request again on a new connection. After
    every step the volume must still match the model and fsck must be clean.
    """
    names = {sha: name for name, sha in Scripts().shas.items()}
    with FaultProxy(
        redis_server.host,
        redis_server.port,
        Faults(drop_reply=0.05, drop_mutating=0.4),
        script_names=names,
        mutating=ONCE_SCRIPTS,
    ) as proxy:

        class ProxiedVolumeMachine(VolumeMachine):
            redis_url = redis_server.url
            options = RedisOptions(url=proxy.url, retry_base=0.002)
            fsck_every = 1

            async def _start(self) -> None:
                with proxy.calm():  # the lost replies are for the operations
                    await super()._start()

        run_state_machine_as_test(
            ProxiedVolumeMachine,
            settings=model_settings(LOST_REPLY_EXAMPLES),
        )
    mutating = {name: proxy.dropped[name] for name in sorted(ONCE_SCRIPTS)}
    total = sum(proxy.dropped.values())
    print(f"\nreplies lost: {total}; of mutating scripts: {mutating}")  # noqa: T201
    assert total >= 1000, proxy.dropped
    missed = [name for name, count in mutating.items() if not count]
    assert not missed, f"no reply of {missed} was lost: {proxy.dropped}"
