"""``redisfuse flock``: real processes, each with its own Redis connection, on a real server.

Shortcuts: the commands under the lock are small ``sh`` scripts that mark a
local file; "the holder" waits on a marker file rather than a sleep, and every
process the test starts is killed (with its process group) in teardown.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import RedisServer

REDISFUSE = [
    sys.executable,
    "-c",
    "import sys; from redisfuse.fuse.cli import main; sys.exit(main())",
]


class Flocks:
    """Starts ``redisfuse flock`` processes on one volume; kills the leftovers at the end."""

    def __init__(self, server: RedisServer, volume: str) -> None:
        self.redis = ["--redis-url", server.url, "--volume", volume]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [*REDISFUSE, "flock", *self.redis, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        proc = self.start(*args)
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def flocks(redis_server: RedisServer, volume_name: str) -> Iterator[Flocks]:
    f = Flocks(redis_server, volume_name)
    try:
        yield f
    finally:
        f.kill_all()


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"holder exited with {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"{path} not created within {timeout} s"
        time.sleep(0.02)


def test_holders_never_overlap(flocks: Flocks, tmp_path: Path) -> None:
    """Four processes append start/end marks under one lock: the intervals never interleave."""
    log = tmp_path / "log"
    script = f'echo "start $$" >> {log}; sleep 0.2; echo "end $$" >> {log}'
    procs = [flocks.start("job", "--", "sh", "-c", script) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 8
    for start, end in zip(lines[::2], lines[1::2], strict=True):
        assert start[0] == "start" and end[0] == "end" and start[1] == end[1], lines


def test_busy_lock_nonblock_timeout_and_dead_holder(flocks: Flocks, tmp_path: Path) -> None:
    """-n fails at once with 1, -w fails after its wait, and a killed holder's lock
    becomes free once its lease (--ttl) runs out, not before."""
    ready = tmp_path / "ready"
    holder = flocks.start(
        "--ttl", "1", "/nightly.lock", "--", "sh", "-c", f"touch {ready}; sleep 60"
    )
    wait_for_file(ready, holder)

    began = time.monotonic()
    busy = flocks.run("-n", "/nightly.lock", "--", "true")
    assert busy.returncode == 1, busy.stderr
    assert b"is held" in busy.stderr

    began = time.monotonic()
    waited = flocks.run("-w", "0.5", "-E", "9", "/nightly.lock", "--", "true")
    elapsed = time.monotonic() - began
    assert waited.returncode == 9, waited.stderr
    assert b"not free within 0.5 s" in waited.stderr
    assert elapsed >= 0.5

    # Well past several renewals (every ttl/3), the holder still holds it.
    time.sleep(1.5)
    assert flocks.run("-n", "/nightly.lock", "--", "true").returncode == 1

    os.killpg(holder.pid, signal.SIGKILL)  # no release: only the lease frees the lock
    holder.wait()
    killed = time.monotonic()
    after = flocks.run("-w", "10", "/nightly.lock", "--", "sh", "-c", "echo got it")
    assert after.returncode == 0, after.stderr
    assert after.stdout == b"got it\n"
    # The lease is 1 s; the process start-up alone takes part of that.
    assert time.monotonic() - killed < 10


def test_exit_status_and_forwarded_signal(flocks: Flocks, tmp_path: Path) -> None:
    """The command's status comes back; SIGTERM reaches the command; the lock is released."""
    assert flocks.run("j2", "--", "sh", "-c", "exit 7").returncode == 7
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f'trap "echo term > {got}; exit 3" TERM; touch {ready}; sleep 60 & wait'
    holder = flocks.start("j2", "--", "sh", "-c", script)
    wait_for_file(ready, holder)
    holder.send_signal(signal.SIGTERM)  # to the flock process only, not its group
    holder.wait(timeout=30)
    assert holder.returncode == 3
    assert got.read_text() == "term\n"
    assert flocks.run("-n", "j2", "--", "true").returncode == 0


def test_usage_errors_are_one_line(flocks: Flocks) -> None:
    no_command = flocks.run("j3")
    assert no_command.returncode == 2
    assert no_command.stderr.decode().count("\n") == 1
    missing = flocks.run("j3", "--", "/nonexistent/program")
    assert missing.returncode == 127
    no_parent = flocks.run("/no/such/dir.lock", "--", "true")
    assert no_parent.returncode == 1
    assert b"cannot create lock file" in no_parent.stderr
    assert b"Traceback" not in no_parent.stderr
