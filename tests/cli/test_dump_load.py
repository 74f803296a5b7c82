"""``redisfuse dump`` and ``redisfuse load`` as a user runs them: real subprocesses, real Redis.

Shortcuts: the source tree is small (what the backend tests cover in depth is
not repeated); the volume is filled and checked through the backend in the test
process; the terminal is a pseudo-terminal on the child's stderr.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import secrets
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from redisfuse.backend import open_volume
from redisfuse.backend.dump import dump_volume
from redisfuse.backend.fsck import fsck
from redisfuse.backend.streams import AsyncWriter

CLI = [sys.executable, "-c", "from redisfuse.fuse.cli import main; raise SystemExit(main())"]


def cli(*args: str, stdin: bytes = b"", **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, timeout=120, check=False, **kw
    )  # type: ignore[call-overload, no-any-return]


def one_line_error(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The child's one error line (log lines may come before it), after checking it
    failed without a traceback."""
    err = proc.stderr.decode()
    assert proc.returncode != 0, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("redisfuse: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    return errors[0]


@pytest_asyncio.fixture
async def source(redis_server) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A volume with a small tree: a directory, a three-block file, a hard link, a symlink."""
    name = f"c-{secrets.token_hex(5)}"
    async with open_volume(redis_server.url, volume=name) as vol:
        await vol.mkdir("/docs")
        await vol.write_file("/docs/big", bytes(range(256)) * 600)
        await vol.link("/docs/big", "/big-again")
        await vol.symlink("docs/big", "/link")
    yield name


@pytest_asyncio.fixture
async def dump_file(redis_server, source: str, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A dump of ``source``, written in-process (the CLI's dump has its own test)."""
    buf = io.BytesIO()
    async with open_volume(redis_server.url, volume=source, read_only=True) as vol:
        await dump_volume(vol.inodes.ctx, AsyncWriter(buf))
    path = tmp_path / "volume.dump"
    await anyio.Path(path).write_bytes(buf.getvalue())
    return path


def _redis(redis_server) -> list[str]:  # type: ignore[no-untyped-def]
    return ["--redis-url", redis_server.url]


async def _check_copy(redis_server, name: str) -> None:  # type: ignore[no-untyped-def]
    async with open_volume(redis_server.url, volume=name, read_only=True) as vol:
        assert await vol.read_file("/big-again") == bytes(range(256)) * 600
        assert (await vol.stat("/docs/big")).nlink == 2
        assert await vol.readlink("/link") == "docs/big"
    client = Redis.from_url(redis_server.url)
    try:
        assert (await fsck(client, name)).ok
    finally:
        await client.aclose()


async def test_dump_and_load_through_files_and_pipes(
    redis_server,  # type: ignore[no-untyped-def]
    source: str,
    tmp_path: Path,
) -> None:
    dump_file = tmp_path / "volume.dump"
    done = cli("dump", source, str(dump_file), *_redis(redis_server))
    assert done.returncode == 0, done.stderr.decode()
    # Not a terminal: plain progress lines on stderr, nothing on stdout.
    assert b"dump: 4 inodes of 4 inodes" in done.stderr
    assert done.stdout == b""
    first = dump_file.read_bytes()

    copy1 = f"c-{secrets.token_hex(5)}"
    loaded = cli("load", str(dump_file), copy1, *_redis(redis_server))
    assert loaded.returncode == 0, loaded.stderr.decode()
    assert f"load: {len(first) / 1024:.1f} KiB of {len(first) / 1024:.1f} KiB".encode() in (
        loaded.stderr
    )
    await _check_copy(redis_server, copy1)

    to_stdout = cli("dump", copy1, "-", *_redis(redis_server))
    assert to_stdout.returncode == 0, to_stdout.stderr.decode()
    assert to_stdout.stdout == first  # dump -> load -> dump gives the same bytes

    copy2 = f"c-{secrets.token_hex(5)}"
    from_stdin = cli("load", "-", copy2, *_redis(redis_server), stdin=first)
    assert from_stdin.returncode == 0, from_stdin.stderr.decode()
    await _check_copy(redis_server, copy2)


def test_load_into_a_volume_that_is_not_empty_fails_in_one_line(
    redis_server,  # type: ignore[no-untyped-def]
    source: str,
    dump_file: Path,
) -> None:
    refused = cli("load", str(dump_file), source, *_redis(redis_server))
    assert "not empty" in one_line_error(refused)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[: len(d) - 30], "truncated"),
        (lambda d: b"hello, world\n", "not a RedisFUSE dump"),
    ],
)
def test_damaged_or_missing_dump_fails_in_one_line(
    redis_server,  # type: ignore[no-untyped-def]
    dump_file: Path,
    damage: object,
    message: str,
) -> None:
    dump_file.write_bytes(damage(dump_file.read_bytes()))  # type: ignore[operator]
    target = f"c-{secrets.token_hex(5)}"
    line = one_line_error(cli("load", str(dump_file), target, *_redis(redis_server)))
    assert message in line and str(dump_file) in line


def test_missing_file_and_unknown_volume_fail_in_one_line(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.dump"
    line = one_line_error(cli("load", str(missing), "x", *_redis(redis_server)))
    assert "cannot open" in line
    line = one_line_error(cli("dump", "never-formatted", str(missing), *_redis(redis_server)))
    assert "not formatted" in line


@pytest.mark.parametrize(("command", "count"), [("fsck", "4/4"), ("dump", "4/4"), ("gc", "1/1")])
def test_progress_bar_on_a_terminal(redis_server, source: str, command: str, count: str) -> None:  # type: ignore[no-untyped-def]
    """With stderr on a terminal, a tqdm bar is drawn there; stdout stays as it was."""
    leader, follower = pty.openpty()
    # A new pseudo-terminal is 0 columns wide: give it a real terminal's size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        args = [command, source, "-"] if command == "dump" else [command, "--volume", source]
        proc = subprocess.run(
            [*CLI, *args, *_redis(redis_server)],
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child's end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, shown.decode(errors="replace")
    assert f"{command}: 100%|".encode() in shown, shown
    assert count.encode() in shown
    if command == "fsck":
        assert proc.stdout.decode().splitlines()[-1] == "volume is consistent"
