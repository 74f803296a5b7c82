"""Starting and stopping real mounts for the tests (used by conftest.py and tests).

A mount is ``python -m redisfuse.fuse MOUNTPOINT --redis-url URL --volume V``
(plus ``--event-loop L`` when pytest runs with ``--event-loop=L``) in a
subprocess; start waits for the mountpoint while watching the process
(failing with its log when it dies), stop unmounts with ``fusermount3 -u``,
falls back to ``-u -z``; a process that does not exit then has its stacks
logged (SIGUSR1) before terminate, then kill; the mountpoint is always left
unmounted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

READY_DEADLINE_S = 20.0
STOP_DEADLINE_S = 20.0
DUMP_DEADLINE_S = 5.0

EVENT_LOOP: str | None = None
"""``--event-loop`` for every mount the tests start (pytest ``--event-loop``); None: the default."""


def event_loop_args() -> list[str]:
    """The command-line arguments that put a mount on the event loop under test."""
    return [] if EVENT_LOOP is None else ["--event-loop", EVENT_LOOP]


def fuse_missing_reason() -> str | None:
    """Why mount tests cannot run here, or None when they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "pyfuse3 (the fuse extra) is not installed"
    return None


@dataclass
class Mount:
    """A running mount process and where it is."""

    path: Path
    volume: str
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes]
    extra_args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __truediv__(self, other: str) -> Path:
        return self.path / other


def start_mount(
    mountpoint: Path,
    url: str,
    volume: str,
    log_path: Path,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Mount:
    """Mount ``volume`` at ``mountpoint`` and wait until the kernel shows the mount
    (``env`` adds to the environment, e.g. REDISFUSE_REDIS_PASSWORD)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "redisfuse.fuse",
        str(mountpoint),
        "--redis-url",
        url,
        "--volume",
        volume,
        *event_loop_args(),
        *(extra_args or []),
    ]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env} if env else None,
        )
    mount = Mount(mountpoint, volume, url, log_path, proc, list(extra_args or []))
    deadline = time.monotonic() + READY_DEADLINE_S
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None:
            pytest.fail(
                f"mount process exited with {proc.returncode}:\n{mount.log()}", pytrace=False
            )
        if time.monotonic() > deadline:
            stop_mount(mount)
            pytest.fail(
                f"mount not ready after {READY_DEADLINE_S} s:\n{mount.log()}", pytrace=False
            )
        time.sleep(0.02)
    return mount


def _wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def is_mounted(path: Path | str) -> bool:
    """Whether the kernel lists ``path`` as a mountpoint (also when its process died).

    ``os.path.ismount`` says False for a mount whose FUSE process is gone
    ("Transport endpoint is not connected"), so read /proc/mounts instead.
    """
    target = os.path.abspath(path)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and fields[1].encode().decode("unicode_escape") == target:
                return True
    return False


def _dump_stacks(mount: Mount) -> None:
    """Have a mount that does not exit log its threads and tasks (SIGUSR1, stackdump.py)."""
    mount.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + DUMP_DEADLINE_S
    while "end of stack dump" not in mount.log() and time.monotonic() < deadline:
        if mount.proc.poll() is not None:
            return
        time.sleep(0.05)


def stop_mount(mount: Mount) -> int | None:
    """Unmount and end the process, escalating as needed; returns its exit status."""
    path = str(mount.path)
    if is_mounted(path):
        done = subprocess.run(["fusermount3", "-u", path], capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
    if not _wait_exit(mount.proc, STOP_DEADLINE_S):
        _dump_stacks(mount)
        mount.proc.terminate()
        if not _wait_exit(mount.proc, 5):
            mount.proc.kill()
            mount.proc.wait()
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
    return mount.proc.returncode


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}", pytrace=False)
        time.sleep(interval)
