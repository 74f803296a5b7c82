"""The backend beneath trio: the path API through trio-asyncio, as the FUSE bridge runs it.

Shortcuts these tests take: plain sync tests that call ``trio.run`` themselves
(no trio pytest plugin); the backend tests enter the asyncio side with
``trio_asyncio.aio_as_trio(fn)(*args)``, the bridge tests through the bridge
itself (``redisfuse.fuse.bridge``), in a fresh interpreter. The module is
skipped where the ``fuse`` extra (trio, trio-asyncio) is absent, as in the
``backend-only`` tox env.

Import order matters: trio-asyncio makes asyncio find its loop by replacing
``asyncio.get_running_loop`` when it is imported, and anyio's asyncio backend
binds that function when *it* is imported. anyio's pytest plugin imports that
backend before any test module, so inside this pytest process anyio features
that look up the loop (``to_thread``, ``fail_after``) find none beneath
trio-asyncio. ``redisfuse.fuse.mount`` imports trio-asyncio before the backend
first runs, so the test of a large (threaded) write runs in a fresh interpreter
with that order; in-process tests stay below the thread threshold, and one
strict xfail pins the in-process limitation so that it is noticed once it goes.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

trio_asyncio = pytest.importorskip("trio_asyncio")
trio = pytest.importorskip("trio")

from redis.asyncio import Redis  # noqa: E402

from redisfuse.backend import NotFound, open_volume  # noqa: E402
from redisfuse.backend.fsck import FsckReport, fsck  # noqa: E402
from redisfuse.backend.reader import THREAD_THRESHOLD  # noqa: E402

if TYPE_CHECKING:
    from conftest import RedisServer

_anyio_asyncio = sys.modules.get("anyio._backends._asyncio")
ANYIO_IMPORTED_FIRST = (
    _anyio_asyncio is not None and _anyio_asyncio.get_running_loop is not asyncio.get_running_loop
)
SMALL = b"hello from trio" * 1000
assert len(SMALL) < THREAD_THRESHOLD


async def _use_volume(url: str, volume: str, data: bytes) -> tuple[bytes, list[str], list[str]]:
    """An asyncio coroutine: open a volume (with its background tasks) and use it."""
    async with open_volume(url, volume=volume) as vol:
        await vol.mkdir("/dir")
        await vol.write_file("/dir/hello.txt", data)
        read = await vol.read_file("/dir/hello.txt")
        await vol.write_file("/dir/gone.txt", b"freed by the background reclaimer")
        names = await vol.listdir("/dir")
        await vol.remove("/dir/gone.txt")
        after = await vol.listdir("/dir")
        with pytest.raises(NotFound):
            await vol.stat("/dir/gone.txt")
    return read, names, after


async def _fsck(url: str, volume: str) -> FsckReport:
    client = Redis.from_url(url)
    try:
        return await fsck(client, volume)
    finally:
        await client.aclose()


def _run_under_trio(url: str, volume: str, data: bytes) -> None:
    async def main() -> tuple[tuple[bytes, list[str], list[str]], FsckReport]:
        async with trio_asyncio.open_loop():
            used = await trio_asyncio.aio_as_trio(_use_volume)(url, volume, data)
            report = await trio_asyncio.aio_as_trio(_fsck)(url, volume)
        return used, report

    (read, names, after), report = trio.run(main)
    assert read == data
    assert names == ["hello.txt", "gone.txt"]
    assert after == ["hello.txt"]
    assert report.ok, str(report)


def test_path_api_works_under_trio_asyncio(redis_server: RedisServer, volume_name: str) -> None:
    _run_under_trio(redis_server.url, volume_name, SMALL)


def test_two_volumes_open_at_once_under_trio_asyncio(
    redis_server: RedisServer, volume_name: str
) -> None:
    async def main() -> list[bytes]:
        results: list[bytes] = []

        async def one(name: str) -> None:
            async def use() -> bytes:
                async with open_volume(redis_server.url, volume=name) as vol:
                    await vol.write_file("/f", name.encode())
                    return await vol.read_file("/f")

            results.append(await trio_asyncio.aio_as_trio(use)())

        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            nursery.start_soon(one, volume_name + "-a")
            nursery.start_soon(one, volume_name + "-b")
        return results

    assert sorted(trio.run(main)) == [
        (volume_name + "-a").encode(),
        (volume_name + "-b").encode(),
    ]


CHILD = """
import json, sys
import trio, trio_asyncio  # first, as redisfuse.fuse.mount imports them
from redisfuse.backend import open_volume
from redisfuse.backend.fsck import fsck
from redis.asyncio import Redis

url, volume, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = bytes(range(256)) * (size // 256)

async def use():
    async with open_volume(url, volume=volume) as vol:
        await vol.write_file("/big", data)
        ok = await vol.read_file("/big") == data
        names = await vol.listdir("/")
        await vol.remove("/big")
    client = Redis.from_url(url)
    try:
        report = await fsck(client, volume)
    finally:
        await client.aclose()
    return {"ok": ok, "names": names, "fsck": str(report), "fsck_ok": report.ok}

async def main():
    async with trio_asyncio.open_loop():
        return await trio_asyncio.aio_as_trio(use)()

print(json.dumps(trio.run(main)))
"""


def test_large_write_under_trio_asyncio_with_the_mount_import_order(
    redis_server: RedisServer, volume_name: str
) -> None:
    size = 4 * THREAD_THRESHOLD  # (de)compressed in a worker thread
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, redis_server.url, volume_name, str(size)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"]
    assert result["names"] == ["big"]
    assert result["fsck_ok"], result["fsck"]


@pytest.mark.xfail(
    ANYIO_IMPORTED_FIRST,
    reason="anyio's asyncio backend was imported (by anyio's pytest plugin) before "
    "trio-asyncio patched asyncio.get_running_loop, so anyio.to_thread finds no loop",
    strict=True,
)
def test_large_write_under_trio_asyncio_in_process(
    redis_server: RedisServer, volume_name: str
) -> None:
    _run_under_trio(redis_server.url, volume_name, bytes(THREAD_THRESHOLD * 2))


BRIDGE_CHILD = r'''
import asyncio, json, sys
import trio
from redisfuse.fuse.bridge import open_crossing  # imports trio-asyncio first, as a mount does
import anyio

scenario = sys.argv[1]


async def wait_until(predicate):
    while not predicate():
        await trio.sleep(0.001)


async def cancel_once_started(crossing, fn, *args):
    """Start crossing.call(fn, *args), cancel it once fn reports it started; how it ended."""
    started = []
    ended = []

    async def caller(scope_box):
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            try:
                ended.append(("returned", await crossing.call(fn, started, *args)))
            except trio.Cancelled:
                ended.append(("cancelled", None))
                raise

    box = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, box)
        await wait_until(lambda: started)
        box[0].cancel()
    return ended[0]


async def swallows_one_cancellation(started, log):
    """Loops until cancelled, but swallows the first CancelledError, as Python 3.11's
    asyncio.wait_for does when its future completes just as the cancellation comes."""
    started.append(True)
    swallowed = False
    for _ in range(2000):  # bounded: after a one-shot cancellation it would loop for ever
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            log.append("cancelled")
            if swallowed:
                raise
            swallowed = True
    log.append("ran on")
    return "ran on"


async def shielded(started, log, release):
    with anyio.CancelScope(shield=True):
        started.append(True)
        await release.wait()
        log.append("shielded part done")
    await asyncio.sleep(3600)


async def pings(started, client, state):
    """A maintain()-like loop of real Redis commands (redis-py's wait_for at each send)."""
    started.append(True)
    while True:
        await client.ping()
        if state["cancelled"]:
            state["pings after cancel"] += 1
            if state["pings after cancel"] > 1000:
                return "ran on"


async def running_loop():
    return asyncio.get_running_loop()


async def main():
    async with open_crossing() as crossing:
        if scenario == "swallow":
            log = []
            ended = await cancel_once_started(crossing, swallows_one_cancellation, log)
            return {"ended": ended[0], "log": log}
        if scenario == "shield":
            log = []
            release = asyncio.Event()

            async def caller(scope_box, started, ended):
                with trio.CancelScope() as scope:
                    scope_box.append(scope)
                    try:
                        await crossing.call(shielded, started, log, release)
                    except trio.Cancelled:
                        ended.append("cancelled")
                        raise

            loop = await crossing.call(running_loop)
            box, started, ended = [], [], []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(caller, box, started, ended)
                await wait_until(lambda: started)
                box[0].cancel()
                loop.call_soon(release.set)  # after the cancellation reached asyncio
            return {"ended": ended, "log": log}
        if scenario == "iterate":
            log = []

            async def events():
                try:
                    while True:
                        yield "event"
                        await asyncio.sleep(0)
                finally:
                    log.append("backend generator closed")

            got = 0
            with trio.CancelScope() as scope:
                async for _ in crossing.iterate(events()):
                    got += 1
                    if got == 3:
                        scope.cancel()
            log.append("consumer left")
            return {"got": got, "log": log}
        if scenario == "redis":
            from redisfuse.backend.connect import RedisOptions, make_client

            async def new_client():
                return make_client(RedisOptions(url=sys.argv[2]))

            client = await crossing.call(new_client)
            results = []
            try:
                for trial in range(30):
                    state = {"cancelled": False, "pings after cancel": 0}

                    async def caller(scope_box, started, ended):
                        with trio.CancelScope() as scope:
                            scope_box.append(scope)
                            try:
                                ended.append(await crossing.call(pings, started, client, state))
                            except trio.Cancelled:
                                ended.append("cancelled")
                                raise

                    box, started, ended = [], [], []
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(caller, box, started, ended)
                        await wait_until(lambda: started)
                        for _ in range(trial % 7):
                            await trio.sleep(0)  # cancel at different points of a command
                        state["cancelled"] = True
                        box[0].cancel()
                    results.append(ended[0])
            finally:
                await crossing.call(client.aclose)
            return {"results": results}
    raise SystemExit(f"unknown scenario {scenario}")


print(json.dumps(trio.run(main)))
'''


def _bridge(scenario: str, *args: str) -> dict[str, object]:
    """Run a scenario of BRIDGE_CHILD in a fresh interpreter (import order, see above)."""
    proc = subprocess.run(
        [sys.executable, "-c", BRIDGE_CHILD, scenario, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_bridge_cancellation_survives_a_swallowed_cancelled_error() -> None:
    """trio's cancellation is level-triggered across the bridge: a backend call that
    swallows one CancelledError (as Python 3.11's wait_for in redis-py can) still ends.
    With trio-asyncio's one-shot Task.cancel() it ran on, and unmount hung in maintain()."""
    result = _bridge("swallow")
    assert result == {"ended": "cancelled", "log": ["cancelled", "cancelled"]}


def test_bridge_cancellation_honours_the_backends_shielded_scopes() -> None:
    result = _bridge("shield")
    assert result == {"ended": ["cancelled"], "log": ["shielded part done"]}


def test_bridge_closes_the_backend_iterator_when_the_consumer_is_cancelled() -> None:
    result = _bridge("iterate")
    assert result == {"got": 3, "log": ["backend generator closed", "consumer left"]}


def test_bridge_cancels_a_loop_of_redis_commands_at_any_point(
    redis_server: RedisServer,
) -> None:
    """The unmount hang as it happened: a loop of real commands, cancelled mid-command."""
    result = _bridge("redis", redis_server.url)
    assert result == {"results": ["cancelled"] * 30}
