"""The ``--replicas`` barrier on a Redis Cluster: one barrier on every master.

A spread volume's objects live on every master, so the single server's
barrier (a zero INCRBY and WAIT on the volume's master, replicas.py) would
vouch for the metadata only: a master holding some of the file's objects could
die before its replica had them. Here every master gets its own barrier, on
one connection of a client of its own: a script that sets and deletes a key
of that master's slots (a write that travels down its replication stream and
leaves nothing behind, not even for a SCAN, as scripts are atomic), then
WAIT; the master of the volume's own slot gets replicas.py's barrier instead
(which also tells acknowledged changes lost in a failover). The file is
confirmed when the master whose replicas are furthest behind has N of them
caught up.

WAIT is the reason for the per-master clients: it counts the writes of the
connection it is sent on, and a keyless command sent through the cluster
client could go to any node. A redirection (the slot moved), a lost master
or a replica still answering as the old master make the barrier start over
on a fresh slot map, within the retry deadline, as a cluster command does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)

from .cluster import DeadlineCluster
from .context import Context
from .keys import Keys
from .replicas import ReplicaWait

log = logging.getLogger(__name__)

T = TypeVar("T")

BARRIER_SCRIPT = "redis.call('SET', KEYS[1], '1') return redis.call('DEL', KEYS[1])"
"""Replicated as SET + DEL in one MULTI: a write on the connection, and no key left."""

_START_OVER = (
    AskError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
"""Errors of a barrier sent by an out-of-date slot map: re-read it and start over."""

MAX_TAG = 1 << 20
"""Bound of the search for a barrier key on each master (a few tries each, in practice)."""


def master_of(cluster: RedisCluster, key: str) -> str | None:
    """The name of the master serving ``key``'s slot in the client's slot map."""
    owners = cluster.nodes_manager.slots_cache.get(cluster.keyslot(key))
    return owners[0].name if owners else None


def barrier_keys(cluster: RedisCluster, keys: Keys, volume_key: str) -> dict[str, str]:
    """One barrier key per master serving slots (name -> key), from the client's slot
    map: ``volume_key`` for the master of the volume's slot, a search for the others."""
    masters = {node.name for node in cluster.get_primaries()}
    found: dict[str, str] = {}
    owner = master_of(cluster, volume_key)
    if owner is not None:
        found[owner] = volume_key
    for n in range(MAX_TAG):
        key = keys.barrier(n)
        owner = master_of(cluster, key)
        if owner in masters and owner not in found:
            found[owner] = key
            if len(found) == len(masters):
                break
    return found


class ClusterReplicaWait(ReplicaWait):
    """``ReplicaWait`` over every master of a cluster; see the module docstring."""

    def __init__(self, ctx: Context, replicas: int, timeout: float):
        super().__init__(ctx, replicas, timeout)
        self.nodes: dict[str, Redis] = {}
        """A client (a pool of its own) per master, by name, made on first use."""

    async def reached(self) -> tuple[int, int]:
        cluster = cast(DeadlineCluster, self.client)
        counted = self.keys.requests(self.ctx.session)

        async def attempt() -> tuple[int, int]:
            targets = barrier_keys(cluster, self.keys, counted)
            if counted not in targets.values():
                raise ClusterDownError(f"no master serves {counted!r}'s slot")
            replies = await asyncio.gather(
                *(self._barrier(name, key, key == counted) for name, key in targets.items())
            )
            seen = next(seen for _, seen in replies if seen is not None)
            return min(reached for reached, _ in replies), seen

        return cast(tuple[int, int], await self._on_fresh_maps(attempt))

    async def store_objects(self, names: list[str], blobs: list[bytes]) -> None:
        """SET new objects and return once each master holding some has them on
        ``replicas`` replicas (EIO when one has not): a block map may name them then.

        The SETs and the WAIT travel on one connection per master, so the WAIT
        counts exactly them; a master lost before its WAIT replied gets them
        again at its successor (objects are immutable: storing twice is harmless),
        so an object a dead master took with it is never named.
        """
        cluster = cast(DeadlineCluster, self.client)
        self.waits += 1

        async def attempt() -> int:
            groups: dict[str, list[tuple[str, bytes]]] = {}
            for name, blob in zip(names, blobs, strict=True):
                owner = master_of(cluster, name)
                if owner is None:
                    raise ClusterDownError(f"no master serves {name!r}'s slot")
                groups.setdefault(owner, []).append((name, blob))
            replies = await asyncio.gather(
                *(self._store_on(node, items) for node, items in groups.items())
            )
            return min(replies, default=self.replicas)

        reached = cast(int, await self._on_fresh_maps(attempt))
        if reached < self.replicas:
            self.too_few(reached)

    async def _store_on(self, name: str, items: list[tuple[str, bytes]]) -> int:
        """SET ``items`` on one master and WAIT, in one pipeline (one connection)."""
        pipe = self._node_client(name).pipeline(transaction=False)
        for key, blob in items:
            pipe.set(key, blob)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return int((await pipe.execute())[-1])

    async def _on_fresh_maps(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` until it succeeds or the retry deadline passes, re-reading
        the slot map after each failure that an out-of-date map or a lost master
        explains (a refusal such as OOM is raised at once)."""
        cluster = cast(DeadlineCluster, self.client)

        async def once() -> T:
            try:
                return await attempt()
            except _START_OVER as exc:
                log.debug("replica wait starts over on a new slot map: %r", exc)
                raise ConnectionError(f"replica wait: {exc}") from exc

        async def start_over(_: Exception) -> None:
            try:
                await cluster.nodes_manager.initialize()
            except RedisClusterException as exc:
                log.debug("slot map not read yet: %r", exc)

        return cast(T, await cluster.deadline_retry.call_with_retry(once, start_over))

    async def _barrier(self, name: str, key: str, counts: bool) -> tuple[int, int | None]:
        """The barrier on one master: how many of its replicas have our writes there,
        and (on the master that ``counts``) the session's successes it has seen."""
        client = self._node_client(name)
        pipe = client.pipeline(transaction=False)
        if counts:
            self.queue_count(pipe)
        else:
            pipe.eval(BARRIER_SCRIPT, 1, key)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        first, reached = await pipe.execute()
        return int(reached), int(first) if counts else None

    def _node_client(self, name: str) -> Redis:
        client = self.nodes.get(name)
        if client is None:
            node = cast(RedisCluster, self.client).get_node(node_name=name)
            node = cast(ClusterNode, node)
            # The node's own settings (TLS, password, timeouts). A pipeline holds one
            # connection from its first command to its reply: WAIT follows its writes.
            pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            client = self.nodes[name] = Redis.from_pool(pool)
        return client

    async def aclose(self) -> None:
        nodes, self.nodes = self.nodes, {}
        for client in nodes.values():
            await client.aclose()
