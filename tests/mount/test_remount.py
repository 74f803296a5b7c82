"""What survives an unmount, and how the command line refuses what it cannot do.

A tree written through one mount must look identical through a later mount
of the same volume (on another mountpoint), after a clean unmount and after
SIGTERM; the CLI must answer bad input with one line and a documented exit
code, never a traceback. Shortcuts: the console script is looked up next to
the test's Python (``.venv/bin/redisfuse``); the background mount's process id
is read from its session record in Redis, because it is not our child; the
volume is checked with the backend's fsck after each unmount.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from redisfuse.backend.fsck import fsck
from redisfuse.backend.keys import Keys

from .mounting import Mount, event_loop_args, start_mount, stop_mount, wait_for
from .trees import build_tree, hardlink_groups, snapshot

REDISFUSE = Path(sys.executable).with_name("redisfuse")
CLI_TIMEOUT_S = 60
EXIT_MOUNTPOINT = 3
EXIT_REDIS = 4
EXIT_FORMAT = 6

StartMount = Callable[[str], Mount]


@pytest.fixture
def mounts(redis_server, tmp_path: Path, volume_name: str) -> Iterator[StartMount]:  # type: ignore[no-untyped-def]
    """Start mounts of this test's volume by mountpoint name; all are stopped at the end."""
    started: list[Mount] = []

    def start(name: str) -> Mount:
        m = start_mount(tmp_path / name, redis_server.url, volume_name, tmp_path / f"{name}.log")
        started.append(m)
        return m

    yield start
    for m in started:
        stop_mount(m)


def assert_clean_exit(m: Mount, code: int | None) -> None:
    """The mount process ended with 0, left nothing mounted and logged no problem."""
    assert code == 0, f"mount exited with {code}:\n{m.log()}"
    assert not os.path.ismount(m.path)
    for bad in ("Traceback", " ERROR ", " WARNING ", " CRITICAL "):
        assert bad not in m.log(), m.log()


def assert_fsck_ok(url: str, volume: str) -> None:
    async def check() -> str | None:
        client = redis.asyncio.Redis.from_url(url)
        try:
            report = await fsck(client, volume)
        finally:
            await client.aclose()
        return None if report.ok else str(report)

    problems = asyncio.run(check())
    assert problems is None, f"fsck after unmount:\n{problems}"


def test_tree_survives_remount(mounts: StartMount, redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    first = mounts("mnt1")
    tree = first / "tree"
    build_tree(tree)
    os.chmod(tree / "script.sh", 0o4755 | stat.S_ISGID)  # set-id bits survive as well
    os.chmod(tree / "sub" / "deep" / "deeper", 0o1777)
    os.utime(tree / "script.sh", ns=(1, 2))
    os.utime(tree / "sub" / "deep" / "deeper", ns=(3, 4))
    before = snapshot(first.path)
    links = hardlink_groups(first.path)
    assert links == [
        ["tree/small-link.txt", "tree/small.txt"],
        ["tree/sub/big.bin", "tree/sub/deep/big-link.bin"],
    ]
    assert before["tree/small.txt"].nlink == 2
    assert before["tree/small.txt"].uid == 1234
    assert before["tree/script.sh"].mode == stat.S_IFREG | 0o6755
    assert before["tree/sub/deep/deeper"].mtime_ns == 4

    assert_clean_exit(first, stop_mount(first))
    assert_fsck_ok(redis_server.url, volume_name)
    second = mounts("mnt2")
    assert snapshot(second.path) == before
    assert hardlink_groups(second.path) == links


def test_data_closed_before_sigterm_survives(
    mounts: StartMount,
    redis_server,  # type: ignore[no-untyped-def]
    volume_name: str,
) -> None:
    first = mounts("mnt1")
    big = os.urandom(3 * 65536 + 123)  # several blocks, below the write buffer size
    (first / "big").write_bytes(big)
    (first / "small").write_bytes(b"last words\n")
    os.mkdir(first / "dir")
    os.symlink("small", first / "dir" / "link")
    first.proc.send_signal(signal.SIGTERM)
    try:
        code = first.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mount did not exit within 20 s of SIGTERM:\n{first.log()}", pytrace=False)
    assert_clean_exit(first, code)
    assert_fsck_ok(redis_server.url, volume_name)

    second = mounts("mnt2")
    assert (second / "big").read_bytes() == big
    assert (second / "small").read_bytes() == b"last words\n"
    assert os.readlink(second / "dir" / "link") == "small"


# -- the command line ----------------------------------------------------------------


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the ``redisfuse`` console script (``mount`` on the event loop under test)."""
    if not REDISFUSE.exists():
        pytest.skip(f"console script {REDISFUSE} is not installed (pip install -e .)")
    loop_args = event_loop_args() if args[:1] == ("mount",) else []
    return subprocess.run(
        [str(REDISFUSE), *map(str, args), *loop_args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def mount_via(entry: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``redisfuse mount ARGS`` (entry "console-script") or ``python -m redisfuse.fuse
    ARGS`` (entry "python-m"), on the event loop under test."""
    if entry == "console-script":
        return cli("mount", *args)
    return subprocess.run(
        [sys.executable, "-m", "redisfuse.fuse", *map(str, args), *event_loop_args()],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def assert_refused(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code`` with exactly one line on stderr that names ``needles``, no traceback."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("redisfuse: "), lines[0]
    for needle in needles:
        assert needle in lines[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("entry", ["console-script", "python-m"])
def test_cli_missing_mountpoint(redis_server, tmp_path: Path, entry: str) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope"
    args = [missing, "--redis-url", redis_server.url]
    done = mount_via(entry, *args)
    assert_refused(done, EXIT_MOUNTPOINT, str(missing), "does not exist")
    assert not missing.exists()


def test_cli_mountpoint_not_a_directory(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "file"
    file.write_text("not a directory")
    assert_refused(
        cli("mount", file, "--redis-url", redis_server.url),
        EXIT_MOUNTPOINT,
        str(file),
        "not a directory",
    )


def test_cli_already_mounted(mounts: StartMount, redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    m = mounts("mnt")
    (m / "f").write_bytes(b"still here")
    done = cli("mount", m.path, "--redis-url", redis_server.url, "--volume", volume_name)
    assert_refused(done, EXIT_MOUNTPOINT, str(m.path), "already")
    assert m.proc.poll() is None
    assert (m / "f").read_bytes() == b"still here"


def test_cli_redis_unreachable(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = _free_port()
    done = cli("mount", mnt, "--redis-host", "127.0.0.1", "--redis-port", str(port))
    assert_refused(done, EXIT_REDIS, f"127.0.0.1:{port}")
    assert not os.path.ismount(mnt)


def test_cli_volume_format_too_new(redis_server, tmp_path: Path, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.hset(
            Keys(volume_name).setting,
            mapping={
                "format": 999,
                "block_size": 65536,
                "codec": "zlib",
                "created": 1,
                "uuid": "x" * 32,
            },
        )
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        done = cli("mount", mnt, "--redis-url", redis_server.url, "--volume", volume_name)
        assert_refused(done, EXIT_FORMAT, volume_name, "999")
        assert not os.path.ismount(mnt)
        # Refusing must not touch the volume.
        assert client.hget(Keys(volume_name).setting, "format") == b"999"
        assert client.exists(Keys(volume_name).sessions) == 0
    finally:
        client.close()


def test_cli_umount(mounts: StartMount, redis_server, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    m = mounts("mnt")
    (m / "f").write_bytes(b"x" * 100_000)
    done = cli("umount", m.path)
    assert done.returncode == 0, done.stderr
    try:
        code = m.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mount still running after redisfuse umount:\n{m.log()}", pytrace=False)
    assert_clean_exit(m, code)
    assert_fsck_ok(redis_server.url, volume_name)


def test_cli_umount_not_mounted(tmp_path: Path) -> None:
    assert_refused(cli("umount", tmp_path), EXIT_MOUNTPOINT, str(tmp_path), "not mounted")


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_cli_background(redis_server, tmp_path: Path, volume_name: str) -> None:  # type: ignore[no-untyped-def]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    keys = Keys(volume_name)
    client = redis.Redis.from_url(redis_server.url)
    pids: list[int] = []
    try:
        done = cli(
            "mount", mnt, "--redis-url", redis_server.url, "--volume", volume_name, "--background"
        )
        assert done.returncode == 0, done.stderr
        assert os.path.ismount(mnt), "--background returned before the mount was ready"
        assert done.stderr == ""
        sessions = client.zrange(keys.sessions, 0, -1)
        assert len(sessions) == 1
        pids.append(int(client.hget(keys.session(int(sessions[0])), "pid")))
        assert _pid_alive(pids[0])

        # The detached mount keeps serving after the command returned.
        (mnt / "dir").mkdir()
        (mnt / "dir" / "f").write_bytes(b"served in the background\n" * 1000)
        assert os.listdir(mnt) == ["dir"]
        assert (mnt / "dir" / "f").read_bytes() == b"served in the background\n" * 1000

        assert cli("umount", mnt).returncode == 0
        wait_for(lambda: not _pid_alive(pids[0]), timeout=20)
        assert not os.path.ismount(mnt)
        assert client.zcard(keys.sessions) == 0  # it closed its session: a clean exit
        assert_fsck_ok(redis_server.url, volume_name)
    finally:
        client.close()
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, check=False)
        for pid in pids:
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
