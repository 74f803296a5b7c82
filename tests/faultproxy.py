"""A TCP proxy between RedisFUSE and Redis that loses replies on purpose.

Each client connection gets its own connection to Redis; bytes flow through
unchanged while the proxy reads the RESP commands going up and counts the
replies coming down, so that it knows which commands are waiting for a reply.
With probabilities set per fault it can then:

- ``drop_reply``: when a reply arrives from Redis, close both connections
  instead of passing it on. Redis executed the commands whose replies are lost
  (the worst case for a client: it must retry without knowing that);
- ``cut``: close both connections before passing a request on (Redis never
  sees it);
- ``delay``: hold a reply back for up to ``max_delay`` seconds.

And on demand, :meth:`FaultProxy.blackhole_subscribers` black-holes the
connections that subscribed so far: they stay open and forward nothing more,
either way, as a NAT or firewall does with a flow it forgot. Connections made
later pass as before.

It runs its own asyncio loop in a thread, so both asyncio tests and mounts in
other processes can use it. ``dropped`` counts lost replies by command (scripts
by their name, when the proxy was given the names of the script digests).

Shortcuts: faults are drawn per chunk read from a socket, not per command, so a
pipeline's replies are lost together (as they are when a connection breaks);
the random generator is seeded, but thread timing still varies between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter, deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

import hiredis

HANDSHAKE = frozenset({"hello", "client", "auth", "select", "ping"})
"""Commands of a new connection: their replies are not dropped alone, so that a
reconnection gets through and the faults land on the filesystem's own requests."""


@dataclass
class Faults:
    """Probabilities of each fault (0 turns it off)."""

    drop_reply: float = 0.0
    drop_mutating: float = 0.0
    """Instead of drop_reply, when a ``mutating`` command is among those waiting."""
    cut: float = 0.0
    delay: float = 0.0
    max_delay: float = 0.05


@dataclass(eq=False)
class _Link:
    """One client connection through the proxy."""

    subscriber: bool = False
    """It sent (S|P)SUBSCRIBE."""
    black: bool = False
    """It forwards nothing any more (blackhole_subscribers)."""


SUBSCRIBE = frozenset({"subscribe", "ssubscribe", "psubscribe"})


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        faults: Faults | None = None,
        *,
        script_names: Mapping[str, str] | None = None,
        mutating: Collection[str] = (),
        seed: int = 0,
    ) -> None:
        self.target = (target_host, target_port)
        self.faults = faults or Faults()
        self.script_names = dict(script_names or {})
        self.mutating = frozenset(mutating)
        self.random = random.Random(seed)
        self.dropped: Counter[str] = Counter()
        self.cuts = 0
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._links: set[_Link] = set()
        self.blackholed = 0
        """Connections black-holed so far."""

    def __repr__(self) -> str:
        return f"<FaultProxy :{self.port} -> {self.target} dropped={sum(self.dropped.values())}>"

    @contextlib.contextmanager
    def calm(self) -> Iterator[None]:
        """No faults inside the block (say, while a client starts up)."""
        faults, self.faults = self.faults, Faults()
        try:
            yield
        finally:
            self.faults = faults

    def blackhole_subscribers(self) -> int:
        """Stop forwarding anything on the connections that have subscribed (keeping them
        open); returns how many there were."""

        async def mark() -> int:
            links = [link for link in self._links if link.subscriber and not link.black]
            for link in links:
                link.black = True
            self.blackholed += len(links)
            return len(links)

        return asyncio.run_coroutine_threadsafe(mark(), self._loop).result(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    def _name(self, command: object) -> str:
        if not isinstance(command, list) or not command:
            return "?"
        name = bytes(command[0]).decode(errors="replace").lower()
        if name == "evalsha" and len(command) > 1:
            sha = bytes(command[1]).decode(errors="replace")
            return self.script_names.get(sha, name)
        return name

    def _drop_chance(self, waiting: deque[str]) -> float:
        if any(name in self.mutating for name in waiting):
            return self.faults.drop_mutating or self.faults.drop_reply
        if any(name not in HANDSHAKE for name in waiting):
            return self.faults.drop_reply
        return 0.0

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        self._writers |= {client_w, server_w}
        link = _Link()
        self._links.add(link)
        waiting: deque[str] = deque()
        broken = asyncio.Event()

        def cut() -> None:
            broken.set()
            for w in (client_w, server_w):
                w.close()

        async def up() -> None:
            reader = hiredis.Reader()
            while not broken.is_set():
                data = await client_r.read(65536)
                if not data:
                    break
                if link.black:
                    continue
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    name = self._name(command)
                    waiting.append(name)
                    link.subscriber |= name in SUBSCRIBE
                if self.random.random() < self.faults.cut:
                    self.cuts += 1
                    waiting.clear()
                    cut()
                    return
                server_w.write(data)
                await server_w.drain()

        async def down() -> None:
            reader = hiredis.Reader()
            while not broken.is_set():
                data = await server_r.read(65536)
                if not data:
                    break
                if link.black:
                    continue
                reader.feed(data)
                answered = 0
                while reader.gets() is not False:
                    answered += 1
                if answered and self.random.random() < self._drop_chance(waiting):
                    self.dropped.update(waiting)
                    waiting.clear()
                    cut()
                    return
                for _ in range(min(answered, len(waiting))):
                    waiting.popleft()
                if self.random.random() < self.faults.delay:
                    await asyncio.sleep(self.random.uniform(0, self.faults.max_delay))
                client_w.write(data)
                await client_w.drain()

        try:
            tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            cut()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                    await task
        finally:
            self._writers -= {client_w, server_w}
            self._links.discard(link)
