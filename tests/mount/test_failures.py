"""Failures: Redis killed and restarted under a writer, a mount killed, Redis gone too long.

Each test owns its redis-server (append-only file, fsync always) so it can kill
it; mounts are real and always cleaned up.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ..aof_redis import AofRedis
from .mounting import Mount, start_mount, stop_mount, wait_for


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from redisfuse.fuse.cli import main; raise SystemExit(main())",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fsck(url: str, volume: str) -> subprocess.CompletedProcess[str]:
    return _cli("fsck", "--redis-url", url, "--volume", volume)


def test_redis_killed_and_restarted_under_a_writer_loses_nothing_acknowledged(
    aof: AofRedis, tmp_path: Path
) -> None:
    volume = f"f-{secrets.token_hex(4)}"
    mount = start_mount(tmp_path / "mnt", aof.url, volume, tmp_path / "mount.log")
    done: dict[str, str] = {}
    failed: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            name = f"f{i:04d}"
            data = os.urandom(1000 + (i * 7919) % 150_000)
            try:
                with open(mount.path / name, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                done[name] = hashlib.sha256(data).hexdigest()
            except OSError as exc:
                failed.append(f"{name}: {exc}")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        wait_for(lambda: len(done) >= 20, 30)
        aof.kill()
        outage_end = time.monotonic() + 1.0
        while time.monotonic() < outage_end:  # the writer keeps going against a dead server
            assert thread.is_alive()
            time.sleep(0.05)
        aof.start()
        count = len(done)
        wait_for(lambda: len(done) >= count + 20, 60)
    finally:
        stop.set()
        thread.join(timeout=60)
    try:
        assert mount.proc.poll() is None, mount.log()
        for name, digest in done.items():
            assert hashlib.sha256((mount.path / name).read_bytes()).hexdigest() == digest, name
    finally:
        assert stop_mount(mount) == 0, mount.log()
    report = _fsck(aof.url, volume)
    assert report.returncode == 0, report.stdout + report.stderr


def test_killed_mount_loses_nothing_closed_and_is_reclaimed(aof: AofRedis, tmp_path: Path) -> None:
    volume = f"k-{secrets.token_hex(4)}"
    a = start_mount(tmp_path / "a", aof.url, volume, tmp_path / "a.log", ["--session-timeout", "2"])
    b = start_mount(tmp_path / "b", aof.url, volume, tmp_path / "b.log")
    try:
        files = {f"f{i}": os.urandom(70_000 * (i + 1)) for i in range(5)}
        for name, data in files.items():
            (a.path / name).write_bytes(data)
        (a.path / "synced").write_bytes(b"s")
        with open(a.path / "synced", "r+b") as f:
            f.write(b"synced data")
            os.fsync(f.fileno())
        (a.path / "held").write_bytes(os.urandom(200_000))
        held = open(a.path / "held", "rb")
        os.unlink(a.path / "held")
        files_before = os.statvfs(b.path).f_files - os.statvfs(b.path).f_ffree
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        with contextlib.suppress(OSError):  # the dead mount's handle cannot be closed cleanly
            held.close()
        # B notices A's expired session and frees what A held open.
        wait_for(
            lambda: os.statvfs(b.path).f_files - os.statvfs(b.path).f_ffree == files_before - 1, 30
        )
        for name, data in files.items():
            assert (b.path / name).read_bytes() == data
        assert (b.path / "synced").read_bytes() == b"synced data"
    finally:
        stop_mount(a)
        assert stop_mount(b) == 0, b.log()
    again = start_mount(tmp_path / "c", aof.url, volume, tmp_path / "c.log")
    try:
        for name, data in files.items():
            assert (again.path / name).read_bytes() == data
    finally:
        assert stop_mount(again) == 0, again.log()
    report = _fsck(aof.url, volume)
    assert report.returncode == 0, report.stdout + report.stderr


def test_gc_reclaims_a_killed_mounts_session(aof: AofRedis, tmp_path: Path) -> None:
    volume = f"g-{secrets.token_hex(4)}"
    a = start_mount(tmp_path / "a", aof.url, volume, tmp_path / "a.log")
    try:
        (a.path / "held").write_bytes(b"x" * 100_000)
        held = open(a.path / "held", "rb")
        os.unlink(a.path / "held")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        with contextlib.suppress(OSError):
            held.close()
    finally:
        stop_mount(a)
    status = _cli("status", "--redis-url", aof.url, "--volume", volume)
    assert "sessions    1" in status.stdout, status.stdout + status.stderr
    gc = _cli("gc", "--redis-url", aof.url, "--volume", volume, "--session-timeout", "0")
    assert gc.returncode == 0 and "reclaimed 1 dead sessions" in gc.stdout, gc.stdout + gc.stderr
    status = _cli("status", "--redis-url", aof.url, "--volume", volume)
    assert "usage       1 inodes, 0 bytes" in status.stdout, status.stdout
    report = _fsck(aof.url, volume)
    assert report.returncode == 0, report.stdout + report.stderr


def test_redis_gone_past_the_deadline_gives_eio_and_the_mount_recovers(
    aof: AofRedis, tmp_path: Path
) -> None:
    volume = f"d-{secrets.token_hex(4)}"
    mount: Mount = start_mount(
        tmp_path / "mnt",
        aof.url,
        volume,
        tmp_path / "mount.log",
        [
            "--redis-retry-deadline",
            "2",
            "--attr-timeout",
            "0",
            "--entry-timeout",
            "0",
            "--negative-timeout",
            "0",
        ],
    )
    try:
        (mount.path / "f").write_bytes(b"before")
        aof.kill()
        with pytest.raises(OSError) as info:
            os.stat(mount.path / "nothing-cached-here")
        assert info.value.errno == errno.EIO
        assert mount.proc.poll() is None, mount.log()
        aof.start()
        wait_for(lambda: _reads(mount.path / "f") == b"before", 30)
        (mount.path / "g").write_bytes(b"after")
        assert (mount.path / "g").read_bytes() == b"after"
    finally:
        assert stop_mount(mount) == 0, mount.log()


def _reads(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None
