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
from typing import Any

import pytest
from redis import Redis

from ..conftest import STARTUP_DEADLINE_S, _find_redis_server, _free_port, _stop
from .certs import TlsFiles


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
    tls: TlsFiles | None = None
    """Every process speaks only TLS (and requires client certificates) when set."""

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{hosts}/{MASTER_NAME}"

    def client(self, port: int) -> Redis:
        """A synchronous client of the process at ``port``."""
        return Redis(port=port, decode_responses=True, **tls_client_kwargs(self.tls))


def tls_server_args(files: TlsFiles) -> list[str]:
    """redis-server (and sentinel) options: TLS only, client certificates required,
    TLS to the master too (replication, and a sentinel's monitoring)."""
    return [
        "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key),
        "--tls-client-cert-file", str(files.client_cert),
        "--tls-client-key-file", str(files.client_key),
        "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "yes",
        "--tls-replication", "yes",
    ]  # fmt: skip


def tls_client_kwargs(files: TlsFiles | None) -> dict[str, Any]:
    """redis-py's options for a client of a TLS-only test server (none without TLS)."""
    if files is None:
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": str(files.ca),
        "ssl_certfile": str(files.client_cert),
        "ssl_keyfile": str(files.client_key),
    }


MASTER_NAME = "rfmaster"
DOWN_AFTER_MS = 1000
"""Sentinels declare a silent master down after this long (the default, 30 s, is for production)."""
FAILOVER_TIMEOUT_MS = 5000


def start_sentinel_group(
    servers: Servers,
    replicas: int = 2,
    sentinels: int = 3,
    tls: TlsFiles | None = None,
    server_args: tuple[str, ...] = (),
) -> SentinelGroup:
    """Start a master, ``replicas`` replicas of it and ``sentinels`` sentinels (quorum 2),
    all TLS-only with ``tls``; ``server_args`` go to the master and the replicas.

    Returns once every sentinel sees all replicas and the other sentinels, so a
    failover can start as soon as the master goes.
    """
    secure = tls_server_args(tls) if tls else []
    extra = [*secure, *server_args]
    on_tls = tls is not None
    master = servers.start(*extra, tls_port=on_tls)
    copies = [
        servers.start("--replicaof", "127.0.0.1", str(master.port), *extra, tls_port=on_tls)
        for _ in range(replicas)
    ]
    conf = (
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} {replicas}\n"
    )
    watchers = [servers.start(*secure, sentinel=conf, tls_port=on_tls) for _ in range(sentinels)]
    group = SentinelGroup(master, copies, watchers, tls)
    deadline = time.monotonic() + 20
    while not all(_sees_everyone(group, s, replicas, sentinels - 1) for s in watchers):
        if time.monotonic() > deadline:
            pytest.fail("the sentinels never found each other and the replicas", pytrace=False)
        time.sleep(0.1)
    return group


def _sees_everyone(group: SentinelGroup, sentinel: Proc, replicas: int, others: int) -> bool:
    with group.client(sentinel.port) as client:
        state = client.sentinel_master(MASTER_NAME)
    return int(state["num-slaves"]) >= replicas and int(state["num-other-sentinels"]) >= others


def master_port(group: SentinelGroup) -> int:
    """The port of the master the first live sentinel names now."""
    for s in group.sentinels:
        try:
            with group.client(s.port) as client:
                _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        except OSError:
            continue
    raise AssertionError("no sentinel answered")
