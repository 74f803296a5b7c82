"""Redis processes with layouts the session server cannot have: TLS-only, Sentinel groups.

Each server gets a free port and its own tmp dir; readiness is the server's own
"Ready to accept connections" log line (a TLS-only server has no plain port
for an inline PING). Every process started is stopped on exit, also when the
test failed. Shortcuts: no persistence; sentinels monitor 127.0.0.1 only.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import STARTUP_DEADLINE_S, _find_redis_server, _free_port, _stop


@dataclass
class Proc:
    """One running redis-server (or sentinel) and where it listens."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    workdir: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


class Servers:
    """Starts redis-server processes in tmp dirs and stops all of them on exit."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp = tmp_path_factory
        self.procs: list[Proc] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            _stop(p.proc)

    def start(self, *args: str, tls_port: bool = False, sentinel: str | None = None) -> Proc:
        """Start a server; ``tls_port`` puts the free port on TLS (plain port off);
        ``sentinel`` is a config file's text, for ``redis-server CONF --sentinel``."""
        binary = _find_redis_server()
        if binary is None:
            pytest.skip("redis-server is not installed (run scripts/setup)")
        workdir = self.tmp.mktemp("srv")
        port = _free_port("127.0.0.1")
        log = workdir / "server.log"
        ports = ["--port", "0", "--tls-port", str(port)] if tls_port else ["--port", str(port)]
        head: list[str] = [binary]
        if sentinel is not None:
            conf = workdir / "sentinel.conf"
            conf.write_text(sentinel)
            head = [binary, str(conf), "--sentinel"]
        argv = [
            *head, "--bind", "127.0.0.1", *ports, "--dir", str(workdir),
            "--daemonize", "no", "--logfile", str(log),
        ]  # fmt: skip
        if sentinel is None:
            argv += ["--save", "", "--appendonly", "no"]
        proc = subprocess.Popen([*argv, *args], cwd=workdir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        server = Proc(port, proc, log, workdir)
        self.procs.append(server)
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        ready = "Sentinel ID is" if sentinel is not None else "Ready to accept connections"
        while not (log.exists() and ready in server.log_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                text = server.log_text() if log.exists() else "(no log)"
                pytest.fail(f"redis-server {argv} did not start:\n{text}", pytrace=False)
            time.sleep(0.05)
        return server
