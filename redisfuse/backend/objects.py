"""The immutable block objects in Redis: store, load, delete, scan; no block-map logic.

One code path for both object layouts (keys.py): tagged objects share the
volume's slot and travel in multi-key commands (MGET, UNLINK of many keys);
spread objects each have their own slot, so every command names one key and a
pipeline carries them (on a cluster, redis-py's cluster pipeline sends one
pipeline per master, concurrently). Deleting or storing an object twice is
harmless: objects are immutable and their ids are never reused, which is what
makes a retried or replayed object write safe.

Multi-key commands go through ``execute_command`` on pipelines: redis-py's
cluster pipeline turns its ``unlink()``/``exists()``/``delete()`` methods into
coroutines of their own (split by slot) instead of queueing them.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from redis.asyncio import Redis

from .keys import Keys

CHUNK = 1000
"""Keys per multi-key command (tagged layout) or per pipeline (spread layout)."""


class ReplicatedStore(Protocol):
    """Stores objects and returns once they reached the replicas (cluster_replicas.py)."""

    async def store_objects(self, names: list[str], blobs: list[bytes]) -> None: ...


class Objects:
    """Object I/O of one volume over one client (plain or cluster)."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.replicated: ReplicatedStore | None = None
        """Set with ``--replicas`` on a cluster: new objects reach the replicas before
        any block map names them (a master's failover could take them along)."""

    def __repr__(self) -> str:
        return f"<Objects {self.keys.volume!r} {self.keys.layout}>"

    async def load(self, ids: list[int]) -> list[bytes | None]:
        """The stored bytes of each object (None when it is missing), in one round trip
        (one per master on a cluster)."""
        names = [self.keys.obj(i) for i in ids]
        if not self.keys.spread:
            return cast(list[bytes | None], await self.client.mget(names))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
        return cast(list[bytes | None], await pipe.execute())

    def queue_store(self, pipe: Any, ids: list[int], blobs: list[bytes]) -> None:
        """Queue the SETs of new objects on ``pipe``, one per object."""
        for obj, blob in zip(ids, blobs, strict=True):
            pipe.set(self.keys.obj(obj), blob)

    async def store(self, ids: list[int], blobs: list[bytes]) -> list[Any]:
        """SET new objects; return each reply (True, or the exception that refused it)."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_store(pipe, ids, blobs)
        result: list[Any] = await pipe.execute(raise_on_error=False)
        return result

    async def store_all(self, ids: list[int], blobs: list[bytes]) -> None:
        """SET new objects; raise the first refusal, or the error of a reply lost
        for good, so that nothing names objects that may not be stored."""
        if self.replicated is not None:
            await self.replicated.store_objects([self.keys.obj(i) for i in ids], blobs)
            return
        failed = next((r for r in await self.store(ids, blobs) if isinstance(r, Exception)), None)
        if failed is not None:
            raise failed

    def queue_delete(self, pipe: Any, ids: list[int]) -> None:
        """Queue UNLINKs of objects on ``pipe`` (a pipeline bound for the volume's node
        in the tagged layout, any pipeline in the spread one)."""
        names = [self.keys.obj(i) for i in ids]
        if not self.keys.spread:
            for start in range(0, len(names), CHUNK):
                pipe.execute_command("UNLINK", *names[start : start + CHUNK])
            return
        for name in names:
            pipe.execute_command("UNLINK", name)

    async def delete(self, ids: list[int]) -> None:
        """UNLINK objects (works on a full Redis too); missing ones are skipped."""
        for start in range(0, len(ids), CHUNK):
            pipe = self.client.pipeline(transaction=False)
            self.queue_delete(pipe, ids[start : start + CHUNK])
            await pipe.execute()

    async def existing(self, ids: list[int]) -> set[int]:
        """Which of ``ids`` are stored."""
        if not ids:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for obj in ids:
            pipe.execute_command("EXISTS", self.keys.obj(obj))
        return {obj for obj, there in zip(ids, await pipe.execute(), strict=True) if there}

    async def idle_seconds(self, ids: list[int]) -> list[int | None]:
        """OBJECT IDLETIME of each object (None when it is gone)."""
        pipe = self.client.pipeline(transaction=False)
        for obj in ids:
            pipe.object("idletime", self.keys.obj(obj))
        return cast(list[int | None], await pipe.execute())

    async def scan_ids(self) -> list[int]:
        """Every stored object id, found by SCAN (on every master of a cluster)."""
        out = []
        async for key in self.client.scan_iter(match=self.keys.object_pattern, count=1000):
            out.append(self.keys.object_id(key))
        return out
