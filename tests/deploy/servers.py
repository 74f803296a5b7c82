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


@dataclass
class SentinelGroup:
    """A master, its replicas, and the sentinels watching them as ``MASTER_NAME``."""

    master: Proc
    replicas: list[Proc]
    sentinels: list[Proc]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}"


MASTER_NAME = "rfmaster"
DOWN_AFTER_MS = 1000
"""Sentinels declare a silent master down after this long (the default, 30 s, is for production)."""
FAILOVER_TIMEOUT_MS = 5000


def start_sentinel_group(servers: Servers, replicas: int = 2, sentinels: int = 3) -> SentinelGroup:
    """Start a master, ``replicas`` replicas of it and ``sentinels`` sentinels (quorum 2).

    Returns once every sentinel sees all replicas and the other sentinels, so a
    failover can start as soon as the master goes.
    """
    master = servers.start()
    copies = [servers.start("--replicaof", "127.0.0.1", str(master.port)) for _ in range(replicas)]
    conf = (
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} {replicas}\n"
    )
    watchers = [servers.start(sentinel=conf) for _ in range(sentinels)]
    group = SentinelGroup(master, copies, watchers)
    deadline = time.monotonic() + 20
    while not all(_sees_everyone(s, replicas, sentinels - 1) for s in watchers):
        if time.monotonic() > deadline:
            pytest.fail("the sentinels never found each other and the replicas", pytrace=False)
        time.sleep(0.1)
    return group


def _sees_everyone(sentinel: Proc, replicas: int, others: int) -> bool:
    from redis import Redis

    with Redis(port=sentinel.port, decode_responses=True) as client:
        state = client.sentinel_master(MASTER_NAME)
    return int(state["num-slaves"]) >= replicas and int(state["num-other-sentinels"]) >= others


def master_port(group: SentinelGroup) -> int:
    """The port of the master the first live sentinel names now."""
    from redis import Redis

    for s in group.sentinels:
        try:
            with Redis(port=s.port, decode_responses=True) as client:
                _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        except OSError:
            continue
    raise AssertionError("no sentinel answered")
