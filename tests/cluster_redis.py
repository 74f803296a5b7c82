"""A real 3-master Redis Cluster for the tests: started once, torn down always.

The session's cluster has no replicas (``--cluster-replicas 0``); a test of
a master failover starts its own with ``start_cluster(..., replicas=1)``
(a replica per master, a short ``cluster-node-timeout``) and SIGKILLs a
master with :meth:`RedisClusterInfo.kill`. Shortcuts: nodes keep nothing on
disk; ``redis-cli --cluster`` creates the cluster and moves slots, exactly
as the README tells users to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from redis.crc import key_slot

MASTERS = 3
NODE_TIMEOUT_MS = 3000
"""How long a silent node takes to be flagged failing (a replica then starts an election)."""
READY_DEADLINE_S = 20.0
MIN_VERSION = (7, 0)
"""Sharded pub/sub (the volume's change events on a cluster) came with Redis 7."""


@dataclass(frozen=True, slots=True)
class RedisClusterInfo:
    """Where the test cluster's nodes listen (its masters, and replicas if it has any)."""

    ports: tuple[int, ...]
    host: str = "127.0.0.1"
    tls_args: tuple[str, ...] = ()
    """redis-cli's ``--tls --cacert ... --cert ... --key ...`` for a TLS-only cluster."""

    @property
    def url(self) -> str:
        scheme = "rediss+cluster" if self.tls_args else "redis+cluster"
        return f"{scheme}://" + ",".join(f"{self.host}:{p}" for p in self.ports)

    @property
    def nodes(self) -> list[str]:
        return [f"{self.host}:{p}" for p in self.ports]

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``redis-cli`` (``--cluster ...`` or a command on the first node)."""
        done = subprocess.run(
            ["redis-cli", *self.tls_args, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 or "ERR" in done.stdout.splitlines()[-1:]:
            raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout}\n{done.stderr}")
        return done.stdout

    def node_cli(self, port: int, *args: str) -> str:
        return self.cli("-h", self.host, "-p", str(port), *args)

    def node_id(self, port: int) -> str:
        return self.node_cli(port, "cluster", "myid").strip()

    def masters(self) -> dict[int, list[range]]:
        """The live masters serving slots now: port -> slot ranges (from a live node)."""
        for port in self.ports:
            try:
                table = self.node_cli(port, "cluster", "nodes")
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            if "master" not in table:
                continue  # a killed node: redis-cli prints its error, and may exit 0
            found: dict[int, list[range]] = {}
            for line in table.splitlines():
                fields = line.split()
                flags = fields[2].split(",")
                if "master" in flags and "fail" not in flags and len(fields) > 8:
                    slots = [s.split("-") for s in fields[8:] if not s.startswith("[")]
                    port_of = int(fields[1].split("@")[0].rpartition(":")[2])
                    found[port_of] = [range(int(s[0]), int(s[-1]) + 1) for s in slots]
            return found
        raise AssertionError("no cluster node answered")

    def replicas_of(self, port: int) -> list[int]:
        """The ports of the replicas following the master at ``port`` now."""
        master = self.node_id(port)
        table = self.node_cli(port, "cluster", "nodes")
        return [
            int(fields[1].split("@")[0].rpartition(":")[2])
            for fields in (line.split() for line in table.splitlines())
            if len(fields) > 3 and "slave" in fields[2].split(",") and fields[3] == master
        ]

    def master_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        return next(p for p, ranges in self.masters().items() if any(slot in r for r in ranges))

    def kill(self, port: int) -> None:
        """SIGKILL the node at ``port`` (its pid from INFO server)."""
        info = self.node_cli(port, "info", "server")
        pid = int(re.search(r"process_id:(\d+)", info)[1])  # type: ignore[index]
        os.kill(pid, signal.SIGKILL)

    def move_slot(
        self, slot: int, source: int, target: int, tell: tuple[int, ...] | None = None
    ) -> None:
        """Move one slot and its keys between masters, the way redis-cli reshard does:
        at the end it tells the masters the new owner one after the other, here in
        port order. ``tell``: only these masters, in this order (the move stops
        there; :meth:`tell_owner` finishes it)."""
        src, dst = self.node_id(source), self.node_id(target)
        self.node_cli(target, "cluster", "setslot", str(slot), "importing", src)
        self.node_cli(source, "cluster", "setslot", str(slot), "migrating", dst)
        while keys := self.node_cli(source, "cluster", "getkeysinslot", str(slot), "100").split():
            self.node_cli(source, "migrate", self.host, str(target), "", "0", "5000", "KEYS", *keys)
        self.tell_owner(slot, target, self.ports if tell is None else tell)

    def tell_owner(self, slot: int, owner: int, ports: tuple[int, ...]) -> None:
        """CLUSTER SETSLOT slot NODE owner, at the masters ``ports`` in that order."""
        owner_id = self.node_id(owner)
        for port in ports:
            self.node_cli(port, "cluster", "setslot", str(slot), "node", owner_id)


def cluster_missing_reason() -> str | None:
    """Why a test cluster cannot be started here, or None."""
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            return f"{program} not found on PATH (run scripts/setup)"
    out = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout
    found = re.search(r"v=(\d+)\.(\d+)", out)
    if found is None or (int(found[1]), int(found[2])) < MIN_VERSION:
        return f"redis-server {out.strip()!r} is older than 7.0 (no sharded pub/sub)"
    return None


def node_args(bus_port: int, node_timeout_ms: int = NODE_TIMEOUT_MS) -> list[str]:
    """redis-server arguments of a cluster node; the bus port is given because
    the default (port + 10000) is out of range for high free ports."""
    return ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms),
            "--cluster-port", str(bus_port)]  # fmt: skip


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_cluster(
    start_server: Callable[..., object],
    replicas: int = 0,
    node_timeout_ms: int = NODE_TIMEOUT_MS,
    tls_args: tuple[str, ...] = (),
) -> RedisClusterInfo:
    """Start MASTERS cluster-enabled servers (and ``replicas`` replicas of each) with
    ``start_server`` (the suite's factory, which stops them) and join them into one
    cluster; returns once every replica is in sync with its master. ``tls_args``:
    redis-cli's TLS options, for servers that ``start_server`` runs TLS-only."""
    reason = cluster_missing_reason()
    if reason:
        pytest.skip(reason)
    nodes = MASTERS * (1 + replicas)
    ports = tuple(
        int(start_server(*node_args(free_port(), node_timeout_ms)).port) for _ in range(nodes)
    )
    cluster = RedisClusterInfo(ports, tls_args=tls_args)
    cluster.cli(
        "--cluster", "create", *cluster.nodes, "--cluster-replicas", str(replicas), "--cluster-yes"
    )
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        states = [cluster.node_cli(p, "cluster", "info") for p in ports]
        if all("cluster_state:ok" in s for s in states):
            check = cluster.cli("--cluster", "check", cluster.nodes[0])
            synced = [cluster.node_cli(p, "info", "replication") for p in ports]
            linked = sum("master_link_status:up" in r for r in synced)
            if (
                "[OK] All 16384 slots covered" in check
                and "[WARNING]" not in check
                and linked == MASTERS * replicas
            ):
                return cluster
        if time.monotonic() > deadline:
            pytest.fail(f"the test cluster did not become ready: {states}", pytrace=False)
        time.sleep(0.1)
