"""Suite-wide fixtures: a real, private redis-server and per-test isolation.

Shortcuts this file takes: one redis-server serves the whole session (tests are
isolated by volume name, each with its own hash tag, never by FLUSHALL); the
free port is picked by binding port 0 and releasing it, so a start is retried
on the rare race where another process takes the port first.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from .aof_redis import AofRedis
from .cluster_redis import RedisClusterInfo, start_cluster

#: The port a system-wide redis (e.g. Debian's redis-server package) may own.
SYSTEM_REDIS_PORT = 6379
STARTUP_DEADLINE_S = 10.0
SHUTDOWN_TIMEOUT_S = 10.0
START_ATTEMPTS = 3


EVENT_LOOPS = ("trio", "asyncio", "uvloop")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=None,
        help="run every mount the tests start with --event-loop LOOP "
        "(default: the mount's own default)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from .mount import mounting

    mounting.EVENT_LOOP = config.getoption("--event-loop")


def pytest_report_header(config: pytest.Config) -> str:
    return f"mount event loop: {config.getoption('--event-loop') or 'the default'}"


@dataclass(frozen=True, slots=True)
class RedisServer:
    """Where the session's private redis-server listens."""

    host: str
    port: int
    unix_socket: Path
    url: str


def _find_redis_server() -> str | None:
    """Return the path of the redis-server binary, or None if it is not installed."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    fallback = "/usr/bin/redis-server"
    return fallback if os.access(fallback, os.X_OK) else None


def _free_port(host: str) -> int:
    """Return a TCP port on `host` that was free a moment ago and is not 6379."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port != SYSTEM_REDIS_PORT:
            return port


def _ping(host: str, port: int) -> bool:
    """Send an inline PING; True once the server answers +PONG."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server, killing it if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _start(
    binary: str, workdir: Path, host: str, extra_args: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], RedisServer] | str:
    """Start one redis-server and wait for PING.

    Returns the process and its address, or the server's log if it exited
    before answering (for example because the port was taken meanwhile).
    Fails the session if it neither exits nor answers within the deadline.
    """
    port = _free_port(host)
    unix_socket = workdir / "redis.sock"
    log_path = workdir / f"redis-{port}.log"
    argv = [
        binary,
        "--bind", host,
        "--port", str(port),
        "--unixsocket", str(unix_socket),
        "--unixsocketperm", "700",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        *extra_args,
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while not _ping(host, port):
        if proc.poll() is not None:
            return log_path.read_text(errors="replace")
        if time.monotonic() > deadline:
            _stop(proc)
            pytest.fail(
                f"redis-server did not answer PING on {host}:{port} within "
                f"{STARTUP_DEADLINE_S:.0f} s; its log:\n{log_path.read_text(errors='replace')}",
                pytrace=False,
            )
        time.sleep(0.05)
    server = RedisServer(
        host=host, port=port, unix_socket=unix_socket, url=f"redis://{host}:{port}/0"
    )
    return proc, server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server for the whole session, on a free port (never 6379).

    It keeps nothing on disk (no RDB, no AOF), listens on 127.0.0.1 and on a
    Unix socket in its tmp dir, and is terminated (killed after a timeout) at
    the end of the session. Skips when redis-server is not installed.
    """
    with _RedisFactory(tmp_path_factory) as start:
        yield start()


class _RedisFactory:
    """Starts private redis-servers (each on a free port, in its own tmp dir) and
    stops every one of them on exit."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> _RedisFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            _stop(proc)

    def __call__(self, *extra_args: str) -> RedisServer:
        """Start one more server with ``extra_args`` (e.g. ``--maxmemory 16mb``)."""
        binary = _find_redis_server()
        if binary is None:
            pytest.skip(
                "redis-server not found on PATH or at /usr/bin/redis-server (run scripts/setup)"
            )
        workdir = self.tmp_path_factory.mktemp("redis")
        logs: list[str] = []
        for _ in range(START_ATTEMPTS):
            started = _start(binary, workdir, "127.0.0.1", extra_args)
            if isinstance(started, str):
                logs.append(started)
                if "Address already in use" in started:
                    continue  # lost the race for the port: try another one
                break
            proc, server = started
            self.procs.append(proc)
            return server
        pytest.fail(
            f"redis-server exited during start-up ({len(logs)} attempt(s)); its log:\n{logs[-1]}",
            pytrace=False,
        )


@pytest.fixture
def redis_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_RedisFactory]:
    """Starts extra redis-servers for one test (a small maxmemory, a replica, ACL
    users...); all are stopped when the test ends."""
    with _RedisFactory(tmp_path_factory) as factory:
        yield factory


@pytest.fixture
def aof(tmp_path: Path) -> Iterator[AofRedis]:
    """A redis-server of the test's own (AofRedis: killable, freezable, restartable);
    thawed and stopped at the end whatever happened."""
    server = AofRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def volume_name() -> str:
    """A volume name unique to this test, so tests share the server but no keys."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Run the garbage collector after each test to surface unclosed resources.

    With ``filterwarnings = error``, a ResourceWarning from an object left open
    by the test (a client, a Volume) then fails that test rather than a later one.
    """
    yield
    gc.collect()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterInfo]:
    """A private 3-master Redis Cluster for the whole session (free ports, temp dirs),
    stopped at the end; skips with the reason when this Redis cannot run one."""
    with _RedisFactory(tmp_path_factory) as start:
        yield start_cluster(start)
