"""A mount on a Redis that may drop its keys: an evicting policy, a volume flushed away.

A mount refuses an ``allkeys-*`` maxmemory-policy in one line (exit 4); a
policy switched to one under a mount stops its writes (EROFS) with one ERROR
line, and they work again once the policy is safe. A FLUSHALL under a mount
makes every request fail with EIO, with one ERROR line naming the cause (not
"declared dead"), and the mount writes nothing to Redis, also past its
session timeout; ``redisfuse status`` says the volume is missing; loading the
volume's dump brings it back and the mount resumes. Each test owns its
redis-server. Shortcuts: a short session timeout (housekeeping every 0.2 s);
the dump is taken with the CLI while the volume is mounted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from .mounting import Mount, start_mount, stop_mount, wait_for
from .test_remount import EXIT_FORMAT, EXIT_REDIS, assert_refused, cli, mount_via


def errno_of(action: Callable[[], object]) -> int:
    """The errno ``action`` fails with, or 0 when it succeeds."""
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def logged(m: Mount, level: str) -> list[str]:
    """The mount's log lines at ``level`` (ERROR, WARNING, INFO)."""
    return [line for line in m.log().splitlines() if f" {level} " in line]


@pytest.mark.parametrize("entry", ["console-script", "python-m"])
def test_a_mount_refuses_an_evicting_redis_in_one_line(  # type: ignore[no-untyped-def]
    redis_factory, tmp_path: Path, entry: str
) -> None:
    server = redis_factory("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = [mnt, "--redis-url", server.url, "--volume", "fresh"]
    done = mount_via(entry, *args)
    assert_refused(
        done,
        EXIT_REDIS,
        f"Redis at {server.url} has maxmemory-policy allkeys-lru",
        "CONFIG SET maxmemory-policy noeviction",
    )
    assert not os.path.ismount(mnt)
    client = redis.Redis.from_url(server.url)
    try:
        assert client.dbsize() == 0  # not formatted
    finally:
        client.close()


def test_a_policy_switched_under_a_mount_stops_writes_until_it_is_safe(  # type: ignore[no-untyped-def]
    redis_factory, tmp_path: Path
) -> None:
    server = redis_factory("--maxmemory", "256mb", "--maxmemory-policy", "noeviction")
    client = redis.Redis.from_url(server.url)
    m = start_mount(tmp_path / "mnt", server.url, f"p-{secrets.token_hex(4)}", tmp_path / "log")
    try:
        (m / "before").write_bytes(b"kept")
        client.config_set("maxmemory-policy", "allkeys-lru")
        # Noticed by the mount's own reading (once a second at most), with no df.
        wait_for(lambda: errno_of(lambda: os.chmod(m / "before", 0o644)) == errno.EROFS)
        for change in (
            lambda: (m / "new").write_bytes(b"no"),
            lambda: os.mkdir(m / "dir"),
            lambda: os.rename(m / "before", m / "renamed"),
            lambda: os.unlink(m / "before"),
        ):
            assert errno_of(change) == errno.EROFS
        assert (m / "before").read_bytes() == b"kept"
        assert sorted(os.listdir(m.path)) == ["before"]
        errors = logged(m, "ERROR")
        assert len(errors) == 1, m.log()
        assert (
            f"maxmemory-policy of Redis at {server.url} changed from noeviction to " in (errors[0])
        )
        assert "allkeys-lru" in errors[0] and "EROFS" in errors[0]

        client.config_set("maxmemory-policy", "noeviction")
        wait_for(lambda: errno_of(lambda: os.chmod(m / "before", 0o644)) == 0)
        (m / "after").write_bytes(b"written again")
        assert (m / "after").read_bytes() == b"written again"
        assert len(logged(m, "ERROR")) == 1 and not logged(m, "WARNING"), m.log()
        assert any("is safe again (noeviction): writes resume" in x for x in logged(m, "INFO"))
    finally:
        code = stop_mount(m)
        client.close()
    assert code == 0, m.log()


def test_a_volume_flushed_under_a_mount_fails_with_eio_and_resumes_when_loaded_back(  # type: ignore[no-untyped-def]
    redis_factory, tmp_path: Path
) -> None:
    server = redis_factory()
    client = redis.Redis.from_url(server.url)
    volume = f"v-{secrets.token_hex(4)}"
    redis_args = ["--redis-url", server.url]
    m = start_mount(
        tmp_path / "mnt",
        server.url,
        volume,
        tmp_path / "mount.log",
        extra_args=["--session-timeout", "1"],
    )
    try:
        # b gets a lower inode number than a here; a load numbers them in name order,
        # so after it the number the kernel knows for a is b's.
        (m / "b").write_bytes(b"bb")
        (m / "a").write_bytes(b"aaaa")
        assert os.stat(m / "a").st_ino > os.stat(m / "b").st_ino
        (m / "dir").mkdir()
        (m / "dir" / "f").write_bytes(b"kept")
        (m / "top").write_bytes(b"top")
        dump = cli("dump", volume, tmp_path / "v.dump", *redis_args)
        assert dump.returncode == 0, dump.stderr
        held = os.open(m / "top", os.O_RDONLY)

        client.flushall()
        wait_for(lambda: errno_of(lambda: os.listdir(m.path)) == errno.EIO)
        for request in (
            lambda: os.listdir(m / "dir"),
            lambda: (m / "dir" / "f").read_bytes(),
            lambda: os.open(m / "top", os.O_RDONLY),
            lambda: os.stat(m / "not-looked-up-yet"),
            lambda: (m / "new").write_bytes(b"x"),
            lambda: os.mkdir(m / "d"),
            lambda: os.statvfs(m.path),
        ):
            assert errno_of(request) == errno.EIO
        time.sleep(2.5)  # past the session timeout: about a dozen housekeeping rounds
        assert client.dbsize() == 0, client.keys()
        errors = logged(m, "ERROR")
        assert len(errors) == 1, m.log()
        assert (
            f"volume {volume!r} no longer exists in Redis at {server.url}: its keys were "
            "deleted (FLUSHALL/FLUSHDB?) or the server was replaced by an empty one"
        ) in errors[0]
        assert "declared dead" not in m.log() and not logged(m, "WARNING"), m.log()

        status = cli("status", *redis_args, "--volume", volume)
        assert_refused(status, EXIT_FORMAT, f"volume {volume!r} does not exist in Redis at")
        assert client.dbsize() == 0

        load = cli("load", tmp_path / "v.dump", volume, *redis_args)
        assert load.returncode == 0, load.stderr
        wait_for(lambda: errno_of(lambda: (m / "dir" / "f").read_bytes()) == 0)
        assert (m / "dir" / "f").read_bytes() == b"kept"
        assert (m / "top").read_bytes() == b"top"
        assert (m / "a").read_bytes() == b"aaaa" and os.stat(m / "a").st_size == 4
        assert (m / "b").read_bytes() == b"bb" and os.stat(m / "b").st_size == 2
        assert os.stat(m / "a").st_ino < os.stat(m / "b").st_ino  # renumbered by the load
        (m / "after").write_bytes(b"writable again")
        assert sorted(os.listdir(m.path)) == ["a", "after", "b", "dir", "top"]
        assert any("is back in Redis" in line for line in logged(m, "INFO")), m.log()
        assert errno_of(lambda: os.read(held, 3)) in (0, errno.EIO)
        with contextlib.suppress(OSError):
            os.close(held)  # opened in the session of before: its close may fail (EIO)
        assert len(logged(m, "ERROR")) == 1 and not logged(m, "WARNING"), m.log()
    finally:
        code = stop_mount(m)
    assert code == 0, m.log()
    fsck = cli("fsck", *redis_args, "--volume", volume)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    client.close()
