"""Starts (or reuses) a private, persistent redis-server for users who have none (blocking).

Used only when no Redis option was given and nothing answers on
localhost:6379, so that the README's run command works on a fresh machine.
The server keeps an append-only file in the user's data directory and listens
on a Unix socket there only (no TCP port); it outlives the mount so that data
stays reachable, and a later mount reuses it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from ..errors import BackendUnavailable

START_DEADLINE_S = 10.0


def data_dir() -> Path:
    """``$XDG_DATA_HOME/redisfuse/redis`` (``~/.local/share/...`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "redisfuse" / "redis"


def _answers(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(sock_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def tcp_answers(host: str, port: int) -> bool:
    """Whether something accepts connections on host:port (a Redis, we assume)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_private_redis() -> tuple[str, bool]:
    """Return (unix URL, started now) of the private server, starting it if needed."""
    directory = data_dir()
    sock_path = directory / "redis.sock"
    if _answers(sock_path):
        return f"unix://{sock_path}", False
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        raise BackendUnavailable(
            "no Redis given, none on localhost:6379, and redis-server is not installed "
            "(install it, or pass --redis-url/--redis-host/--redis-port)"
        )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [
        binary, "--port", "0", "--unixsocket", str(sock_path), "--unixsocketperm", "700",
        "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec",
        "--daemonize", "yes", "--logfile", str(directory / "redis.log"),
        "--pidfile", str(directory / "redis.pid"),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackendUnavailable(
            f"could not start redis-server: {result.stderr.strip() or result.stdout.strip()}"
        )
    deadline = time.monotonic() + START_DEADLINE_S
    while not _answers(sock_path):
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"private redis-server did not answer on {sock_path}; see {directory / 'redis.log'}"
            )
        time.sleep(0.05)
    return f"unix://{sock_path}", True
