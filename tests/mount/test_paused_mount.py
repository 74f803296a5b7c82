"""A mount paused (SIGSTOP) past its session timeout and reclaimed by another mount.

When it resumes, nothing the other mount did meanwhile is undone: its buffered
writes are refused (close fails with EIO) and reported in its log, it carries
on in a new session, and fsck is clean. Both mounts are real; the test never
touches the paused mount's files while it is stopped (that would hang).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
from pathlib import Path

import pytest
import redis

from redisfuse.backend.keys import Keys

from .mounting import start_mount, stop_mount, wait_for
from .test_remount import cli


def test_a_paused_mount_declared_dead_changes_nothing_when_it_wakes(
    redis_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    volume = f"pause-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_server.url)
    a = start_mount(
        tmp_path / "a",
        redis_server.url,
        volume,
        tmp_path / "a.log",
        extra_args=["--session-timeout", "2"],
    )
    b = start_mount(tmp_path / "b", redis_server.url, volume, tmp_path / "b.log")
    try:
        (a / "f").write_bytes(b"original")
        (a / "g").write_bytes(b"unlinked while open")
        fd_f = os.open(a / "f", os.O_WRONLY)
        os.write(fd_f, b"from the paused mount")  # buffered in the mount, not committed
        fd_g = os.open(a / "g", os.O_RDONLY)
        (b / "g").unlink()  # a holds g open: it must live on until a lets go

        sessions = Keys(volume).sessions
        assert client.zcard(sessions) == 2
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            # b declares a dead once a's lease (2 s) has expired, and reclaims it.
            wait_for(lambda: client.zcard(sessions) == 1, timeout=30)
            (b / "f").write_bytes(b"from the live mount")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)

        with pytest.raises(OSError) as caught:
            os.close(fd_f)
        assert caught.value.errno == errno.EIO
        with contextlib.suppress(OSError):
            os.close(fd_g)
        wait_for(lambda: "declared dead" in a.log(), timeout=20)
        assert (b / "f").read_bytes() == b"from the live mount"
        assert (a / "f").read_bytes() == b"from the live mount"
        assert not (b / "g").exists()
        (a / "after").write_bytes(b"a new session")
        wait_for(lambda: (b / "after").exists())
        assert (b / "after").read_bytes() == b"a new session"
        assert a.proc.poll() is None
    finally:
        code_a, code_b = stop_mount(a), stop_mount(b)
        client.close()
    assert code_a == 0, a.log()
    assert code_b == 0, b.log()
    report = cli("fsck", "--redis-url", redis_server.url, "--volume", volume)
    assert report.returncode == 0, report.stdout + report.stderr
