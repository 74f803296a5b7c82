"""Redis Cluster: the client for ``redis+cluster://`` URLs and what differs on a cluster.

A volume on a cluster keeps its metadata in one slot (the ``{VOL}`` hash tag),
so every script stays atomic; only objects are spread (keys.py). This module
builds the cluster client, tells the rest of the backend whether it talks to a
cluster, and gives events a connection to the master of the volume's slot.
Everything else uses the common command API of both clients.

Retries: redis-py's cluster client follows MOVED/ASK by itself and retries a
command whose node failed immediately (after re-reading the slot map); it has
no backoff between those attempts. ``DeadlineCluster`` therefore wraps each
command in the volume's deadline retry (deadline.py: jittered backoff until
the retry deadline), and pipelines retry every 0.25 s for as long. redis-py's
own loops count attempts, each of which may wait a read timeout on a silent
node; their backoff (``DeadlineBackoff``) ends them at the request's
deadline, so a frozen master fails a request after the deadline plus one
read timeout, as a single server does. The deadline retry
also covers a command that redis-py gave up on after 16 redirections
(``ClusterError``, "TTL exhausted"; a pipeline sends its redirected commands
again one by one through ``execute_command``): while a slot moves, its source
can hand it over (``CLUSTER SETSLOT NODE``) before its target is told that it
owns it, and until then each answers MOVED to the other. ``redis-cli --cluster
reshard`` tells the masters one after the other, in its own order, so that
moment is part of a reshard; no attempt ran the command (every reply was a
redirection or TRYAGAIN). A pipeline executed
with ``raise_on_error=False`` (the commit, the object stores) gets no retry
from redis-py at all: a master that died answers its commands with
ConnectionError *results*. ``DeadlinePipeline`` sends those commands again
(only those: the others ran) under the counting retry, so a master failover
is waited out there too.

Round trips are counted as by ``counting.CountingRedis``: each command call
once, each pipeline once (its commands go to their masters in parallel).
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import parse_url
from redis.exceptions import (
    ClusterDownError,
    ClusterError,
    ConnectionError,
    RedisClusterException,
    SlotNotCoveredError,
    TimeoutError,
    TryAgainError,
)

from .counting import RedisTally
from .deadline import DeadlineBackoff, request_deadline
from .health import policies_of

log = logging.getLogger(__name__)

SCHEMES = ("redis+cluster", "rediss+cluster")
"""URL schemes of a cluster: ``redis+cluster://HOST:PORT[,HOST:PORT...]`` (TLS: rediss+)."""

PIPELINE_RETRY_S = 0.25
"""redis-py's cluster pipeline sleeps this long before each retry (after CLUSTERDOWN),
and the longest backoff of its loops between other failed attempts."""

INNER_BACKOFF_S = 0.02
"""The first backoff of redis-py's own cluster retry loops (doubling, jittered)."""

_RETRYABLE = (ClusterDownError, ClusterError, SlotNotCoveredError, TryAgainError)
_RESEND = (ConnectionError, TimeoutError, ClusterDownError, SlotNotCoveredError, TryAgainError)
"""Results of a pipeline that mean "not run, or its reply lost": sent again."""


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and urllib.parse.urlsplit(cast(str, url)).scheme.lower() in SCHEMES


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (made by :func:`make_cluster_client`)."""
    return isinstance(client, RedisCluster)


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The start-up nodes and the connection options of a cluster URL.

    ``rediss+cluster://user:pass@h1:7000,h2:7001/?ssl_cert_reqs=none``: the
    user, password and query options apply to every node, as with a
    ``redis://`` URL (redis-py's parse_url reads them); a path (database) other
    than 0 is refused, since a cluster has only database 0.
    """
    parts = urllib.parse.urlsplit(url)
    tls = parts.scheme.lower() == "rediss+cluster"
    auth, _, hostlist = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"cluster node {item!r} is not HOST:PORT")
        nodes.append((host.strip("[]"), int(port)))
    plain = urllib.parse.urlunsplit(
        (
            "rediss" if tls else "redis",
            f"{auth}@{hostlist.split(',')[0]}" if auth else hostlist.split(",")[0],
            parts.path,
            parts.query,
            "",
        )
    )
    options = dict(parse_url(plain))  # type: ignore[no-untyped-call]
    if int(options.pop("db", 0) or 0) != 0:
        raise ValueError("a Redis Cluster has only database 0")
    for name in ("host", "port", "connection_class"):
        options.pop(name, None)
    if tls:
        options["ssl"] = True
    return nodes, options


class DeadlineCluster(RedisCluster):
    """A cluster client whose commands keep retrying (with backoff) for the retry deadline.

    ``deadline_retry`` is the volume's deadline retry (deadline.py): it counts
    retries for ``redisfuse status`` and spaces them out; redis-py's own loop
    inside each attempt follows redirections and re-reads the slot map.
    """

    deadline_retry: Retry
    deadline: float
    tally: RedisTally

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.tally.round_trips += 1
        self.tally.commands += 1

        async def attempt() -> Any:
            try:
                return await RedisCluster.execute_command(self, *args, **dict(kwargs))
            except RedisClusterException as exc:
                # No node reachable (initialize failed): what a lost connection is
                # on a single server, retried and reported as such.
                raise ConnectionError(str(exc)) from exc

        async def wait(*_: Any) -> None:
            return None

        return await self.deadline_retry.call_with_retry(attempt, wait)

    def get_retry(self) -> Retry:
        return self.deadline_retry

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is not supported in cluster mode")
        return DeadlinePipeline(self, transaction)  # type: ignore[abstract]


class DeadlinePipeline(ClusterPipeline):
    """A cluster pipeline that counts its round trip and, with ``raise_on_error=False``,
    sends commands whose node failed again until the retry deadline (see the module
    docstring). It remembers what was queued, as redis-py resets its queue on execute."""

    def __init__(self, client: DeadlineCluster, transaction: Any | None = None) -> None:
        super().__init__(client, transaction)
        self.owner = client
        self.queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.queued.append((args, dict(kwargs)))
        return super().execute_command(*args, **kwargs)

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        queued, self.queued = self.queued, []
        if queued:
            self.owner.tally.round_trips += 1
            self.owner.tally.commands += len(queued)
        with request_deadline(self.owner.deadline):
            results: list[Any] = await super().execute(raise_on_error, allow_redirections)
        pending = [i for i, r in enumerate(results) if isinstance(r, _RESEND)]
        if raise_on_error or not pending or len(results) != len(queued):
            return results  # (a queue this class did not see whole is not resent)
        cluster = self.owner

        async def attempt() -> None:
            log.debug(
                "sending %d pipelined commands again after %r", len(pending), results[pending[0]]
            )
            try:
                await cluster.nodes_manager.initialize()  # the slot map after the failover
            except RedisClusterException as exc:
                raise ConnectionError(str(exc)) from exc
            again = ClusterPipeline(cluster, None)  # type: ignore[abstract]
            for i in pending:
                args, kwargs = queued[i]
                again.execute_command(*args, **kwargs)
            for i, result in zip(pending, await again.execute(False), strict=True):
                results[i] = result
            pending[:] = [i for i in pending if isinstance(results[i], _RESEND)]
            if pending:
                raise results[pending[0]]

        async def wait(*_: Any) -> None:
            return None

        try:
            await cluster.deadline_retry.call_with_retry(attempt, wait)
        except _RESEND:
            pass  # the results hold the errors, for the caller to translate
        return results


def make_cluster_client(url: str, retry: Retry, deadline: float, common: dict[str, Any]) -> Redis:
    """A cluster client (typed as Redis: it has the same command API; the few places
    that differ ask :func:`is_cluster`). ``common`` holds connect.py's settings
    (timeouts, credentials, TLS files); the URL's own user, password and query
    options win over them, as with a ``redis://`` URL."""
    nodes, url_options = parse_cluster_url(url)
    options = {**common, **url_options}
    options.pop("retry", None)
    options.pop("retry_on_error", None)
    retry.update_supported_errors(list(_RETRYABLE))
    # redis-py's loop counts attempts and, after a refused connection, sleeps only what
    # the backoff says: with none, a dead master used up every attempt before the
    # cluster had promoted its replica. So a short jittered backoff, and a count that
    # never runs out first: DeadlineBackoff ends the loop at the request's deadline.
    backoff = ExponentialWithJitterBackoff(base=INNER_BACKOFF_S, cap=PIPELINE_RETRY_S)
    inner = Retry(DeadlineBackoff(backoff), max(3, int(deadline / INNER_BACKOFF_S)))
    client = DeadlineCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        retry=inner,
        **options,
    )
    client.deadline_retry = retry
    client.deadline = deadline
    client.tally = RedisTally()
    return cast(Redis, client)


def set_deadline_retry(client: Redis, retry: Retry) -> None:
    """Give a cluster client another counting retry (connect.py: after the first PING)."""
    assert isinstance(client, DeadlineCluster)
    retry.update_supported_errors(list(_RETRYABLE))
    client.deadline_retry = retry


async def node_client(client: Redis, key: str, *, refresh: bool = False) -> Redis:
    """A plain client to the master serving ``key``'s slot (for sharded pub/sub,
    which a node serves only for its own slots); ``refresh`` re-reads the slot map
    first (after the slot moved or its master failed)."""
    cluster = cast(RedisCluster, client)
    if refresh:
        await cluster.nodes_manager.initialize()
    node = cluster.get_node_from_key(key)
    assert node is not None
    # The node's own connection settings (TLS, password, timeouts), in a pool of ours.
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return Redis.from_pool(pool)


def node_of(client: Redis, key: str) -> str:
    """The name (host:port) of the master serving ``key``'s slot, as this client knows it."""
    node = cast(RedisCluster, client).get_node_from_key(key)
    return node.name if node is not None else ""


MEMORY_FIELDS = ("used_memory", "maxmemory", "total_system_memory")


async def masters_info(client: Redis, section: str) -> dict[str, dict[str, Any]]:
    """INFO ``section`` of every master, by node name (host:port)."""
    cluster = cast(RedisCluster, client)
    replies = await cluster.info(section, target_nodes=RedisCluster.PRIMARIES)
    if all(isinstance(v, dict) for v in replies.values()):
        return dict(replies)
    primaries = cluster.get_primaries()  # one master: redis-py returns its reply alone
    return {primaries[0].name if primaries else "": replies}


async def memory_info(client: Redis) -> tuple[dict[str, int], dict[str, str]]:
    """INFO memory of every master: the figures summed (the room a spread volume has:
    its objects go to every master, its metadata to one, so this is an estimate), and
    each master's maxmemory-policy (health.py: any one of them may evict keys)."""
    per_node = await masters_info(client, "memory")
    summed = {f: sum(int(node.get(f, 0) or 0) for node in per_node.values()) for f in MEMORY_FIELDS}
    return summed, policies_of(per_node)


async def still_subscribed(node: Redis, client: Redis, channel: str) -> bool:
    """Whether ``node`` (a plain client to one master) still serves the volume's slot
    and still counts our subscription to ``channel``.

    A volume's slot always holds keys (its setting, its root), so a master with
    none there is no longer the volume's. And a subscription made while the slot
    was moving can be dropped without a word (seen with Redis 7.0: subscribed at
    the importing master, gone once the move completed).
    """
    slot = cast(RedisCluster, client).keyslot(channel)
    pipe = node.pipeline(transaction=False)
    pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
    pipe.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    keys, (_, subscribers) = await pipe.execute()
    return int(keys) > 0 and int(subscribers) > 0


async def load_scripts(client: Redis, sources: dict[str, str]) -> None:
    """SCRIPT LOAD on every master (a script runs on the master of its keys' slot).

    ``sources`` maps SHA1 digests to script texts. One SCRIPT EXISTS (on every
    master) comes first: usually they are all there already, and loading them
    costs a round trip per script.
    """
    shas = list(sources)
    present: list[bool] = await client.script_exists(*shas)
    for sha, there in zip(shas, present, strict=True):
        if not there:
            await client.script_load(sources[sha])
