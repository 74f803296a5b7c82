"""The event loop a mount runs on: named where users look, and isolated from the others.

The whole mount suite runs on whichever loop pytest's ``--event-loop`` picks;
these tests check what is specific to the choice: the start-up log line and
``redisfuse status`` name the loop, trio-asyncio is never imported unless trio
is chosen, and our stand-in for pyfuse3's asyncio adaptor wakes one waiter per
readiness and never wakes one for a readiness that is already consumed.
Shortcuts: the adaptor is tested on a pipe, not /dev/fuse.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from redisfuse.fuse import pyfuse3_asyncio
from redisfuse.fuse.loops import DEFAULT_EVENT_LOOP

from . import mounting
from .mounting import Mount


def _loop_under_test() -> str:
    return mounting.EVENT_LOOP or DEFAULT_EVENT_LOOP


def test_log_and_status_name_the_event_loop(mount: Mount) -> None:
    loop = _loop_under_test()
    assert f"on the {loop} event loop" in mount.log()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from redisfuse.fuse.cli import main; raise SystemExit(main())",
            "status",
            "--redis-url",
            mount.url,
            "--volume",
            mount.volume,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"loop {loop}" in done.stdout, done.stdout


def test_sigusr1_logs_threads_and_tasks_and_the_mount_goes_on(mount: Mount, work: Path) -> None:
    """stackdump.py: faulthandler's thread stacks at once, then every task's await chain."""
    before = mount.log().count("-- end of stack dump --")
    mount.proc.send_signal(signal.SIGUSR1)
    mounting.wait_for(lambda: mount.log().count("-- end of stack dump --") > before)
    dump = mount.log().split("stack dump (SIGUSR1):")[-1]
    assert "-- thread MainThread" in dump
    assert "-- asyncio tasks of" in dump
    if _loop_under_test() == "trio":
        assert "-- trio tasks:" in dump
    assert "in maintain" in dump  # the backend's housekeeping, awaited through the crossing
    (work / "after-dump").write_bytes(b"still serving")
    assert (work / "after-dump").read_bytes() == b"still serving"
    assert mount.proc.poll() is None


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_asyncio_mounts_never_import_trio_asyncio(loop: str) -> None:
    """Importing trio-asyncio patches asyncio process-wide and breaks these loops."""
    code = (
        "import sys\n"
        "from redisfuse.fuse import cli, mount, loops, operations, invalidate\n"
        f"async def probe():\n"
        f"    async with loops.open_crossing({loop!r}) as crossing:\n"
        f"        assert crossing.name == {loop!r}\n"
        f"loops.run({loop!r}, probe)\n"
        "assert 'trio_asyncio' not in sys.modules, 'trio_asyncio was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def _run(loop: str, coro_fn, *args) -> None:  # type: ignore[no-untyped-def]
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(coro_fn(*args))
    else:
        asyncio.run(coro_fn(*args))


async def _one_waiter_per_readiness(r: int, w: int) -> None:
    """Like pyfuse3's workers: wait under a lock, read exactly one request, repeat."""
    got: list[bytes] = []
    lock = asyncio.Lock()
    closed = False

    async def worker() -> None:
        while True:
            async with lock:
                if closed:  # pyfuse3 checks fuse_session_exited() here
                    return
                try:
                    await pyfuse3_asyncio.wait_readable(r)
                except pyfuse3_asyncio.ClosedResourceError:
                    return
                # A blocking read: a stale readiness would hang the loop right here.
                got.append(os.read(r, 1))
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for i in range(200):
        os.write(w, bytes([i]))
        if i % 7 == 0:
            await asyncio.sleep(0.001)
    for _ in range(1000):
        if len(got) == 200:
            break
        await asyncio.sleep(0.01)
    closed = True
    pyfuse3_asyncio.notify_closing(r)
    await asyncio.wait_for(asyncio.gather(*workers), 10)
    assert sorted(got) == [bytes([i]) for i in range(200)]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_wait_readable_wakes_one_waiter_per_request(loop: str, pipe: tuple[int, int]) -> None:
    _run(loop, _one_waiter_per_readiness, *pipe)


async def _closing_wakes_waiters(r: int) -> None:
    waiter = asyncio.create_task(pyfuse3_asyncio.wait_readable(r))
    await asyncio.sleep(0.01)
    pyfuse3_asyncio.notify_closing(r)
    with pytest.raises(pyfuse3_asyncio.ClosedResourceError):
        await asyncio.wait_for(waiter, 5)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_notify_closing_wakes_the_waiter(loop: str, pipe: tuple[int, int]) -> None:
    _run(loop, _closing_wakes_waiters, pipe[0])
