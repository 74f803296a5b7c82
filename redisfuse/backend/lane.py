"""The lean request path to one Redis server: many requests pipelined on one connection.

redis-py's asyncio client pays for each command: a connection checked out of
its pool and returned, a retry wrapper, a timer around every read (beneath
trio-asyncio each cancelled timer wakes the loop once more when it would have
fired), observability hooks and layers of response handling. That is 80-140 µs
of CPU per EVALSHA on this 2-core machine, where the same request written with
hiredis on the connection's stream costs 35-40 µs, and a mount makes one or two
such requests per file operation.

A :class:`Lane` keeps one of redis-py's own connections (so connecting, TLS,
AUTH, SELECT and the reply parser are redis-py's) and drives it itself:

- A request is a list of commands (one command, or a pipeline). Requests made
  in one turn of the event loop leave together at its end, in one write. Replies are
  parsed as they arrive, by the transport's protocol (no reader task, no
  stream buffer), and handed to the requests in order; concurrent FUSE
  requests thus share round trips without any pool, and a reply wakes only
  the task that waits for it.
- No timer per request: one watchdog runs while requests are outstanding. If
  no reply came for ``read_timeout`` the connection is taken for lost, as when
  it breaks or is refused: it is replaced and every unanswered request is sent
  again, in order (the mutating scripts' request ids make that safe, see
  lib.lua ``once()``), with jittered backoff between attempts to connect.
- A request that has not been answered ``deadline`` seconds after it was made
  fails (TimeoutError or ConnectionError, which the backend turns into EIO)
  once its connection is found lost; a request in flight at its deadline gets
  one more read timeout. So no request waits longer than the deadline plus one
  read timeout, whatever Redis does.
- A caller that is cancelled leaves its request behind: if it was not yet
  written it is dropped, else its replies are read and discarded in turn.

:class:`~redisfuse.backend.deadline.Reachability` hears of every failure and
answer, so an outage is logged once and counted for the metrics, the same as
for requests that go through redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, DataError, TimeoutError

log = logging.getLogger(__name__)


class Reach(Protocol):
    """What a lane tells about Redis answering (deadline.Reachability)."""

    unavailable: bool

    def failed(self, error: Exception) -> None: ...

    def answered(self) -> None: ...

    def deadline_passed(self, error: Exception) -> None: ...


class _Request:
    """One request: its packed commands, how many replies it waits for, its caller."""

    __slots__ = ("chunks", "expect", "replies", "future", "deadline")

    def __init__(
        self, chunks: list[bytes], expect: int, future: asyncio.Future[list[Any]], deadline: float
    ) -> None:
        self.chunks = chunks
        self.expect = expect
        self.replies: list[Any] = []
        self.future = future
        self.deadline = deadline


class Lane:
    """Requests pipelined on one redis-py connection, resent on a new one when it is lost."""

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        *,
        read_timeout: float,
        deadline: float,
        reach: Reach,
        on_retry: Callable[[Exception], None],
        backoff_base: float = 0.05,
        name: str = "lane",
    ) -> None:
        self._make_connection = make_connection
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.reach = reach
        self._on_retry = on_retry
        self._backoff_base = backoff_base
        self.name = name
        self._queued: collections.deque[_Request] = collections.deque()
        """Requests not yet written (new ones, and unanswered ones to send again)."""
        self._inflight: collections.deque[_Request] = collections.deque()
        """Requests written on the current connection, oldest first."""
        self._conn: Any = None
        """The redis-py connection in use (typed loosely: redis-py's methods are untyped)."""
        self._transport: asyncio.WriteTransport | None = None
        self._replies: _Replies | None = None
        """The protocol now receiving the connection's bytes."""
        self._connecting: asyncio.Task[None] | None = None
        self._flush_soon = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._progress = 0.0
        """When (monotonic) the connection last showed life: a reply, or a write after quiet."""
        self._closed = False
        self._troubled = False
        """An attempt failed since Redis last answered (``reach`` is told of the answer)."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        state = "connected" if self._transport is not None else "idle"
        return (
            f"<Lane {self.name} {state} queued={len(self._queued)} inflight={len(self._inflight)}>"
        )

    # -- requests ----------------------------------------------------------------

    async def send(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` as one request; return their raw replies, in order.

        An error reply is an exception instance in its place (redis-py's classes:
        ResponseError, NoScriptError ...); the request fails as a whole only when
        Redis could not be reached or did not answer by the deadline.
        """
        return await self.submit([pack(c) for c in commands])

    async def submit(self, chunks: list[bytes]) -> list[Any]:
        """:meth:`send` for commands packed already (one chunk each)."""
        if self._closed:
            raise ConnectionError(f"{self.name}: closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = time.monotonic()
        # Once a request failed at its deadline, later ones get one attempt each.
        deadline = now if self.reach.unavailable else now + self.deadline
        request = _Request(chunks, len(chunks), loop.create_future(), deadline)
        self._queued.append(request)
        if not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        try:
            return await request.future
        except asyncio.CancelledError:
            if not request.future.done():
                request.future.cancel()
            try:
                self._queued.remove(request)  # not written yet: never sent
            except ValueError:
                pass  # written: its replies are read and dropped in turn
            raise

    def _flush(self) -> None:
        """Write every queued request (one write), or start connecting first."""
        self._flush_soon = False
        if not self._queued:
            return
        transport = self._transport
        if transport is None:
            self._connect_soon()
            return
        queued = self._queued
        chunks: list[bytes] = []
        now = time.monotonic()
        if not self._inflight:
            self._progress = now
        while queued:
            request = queued.popleft()
            if request.future.done():  # its caller gave up before it was written
                continue
            chunks.extend(request.chunks)
            self._inflight.append(request)
        if chunks:
            transport.writelines(chunks)
            self._arm_watchdog()

    # -- the connection ---------------------------------------------------------------

    def _connect_soon(self) -> None:
        if self._connecting is None and not self._closed:
            assert self._loop is not None
            self._connecting = self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        """Connect (again), with jittered backoff, while requests wait and have time left."""
        attempt = 0
        try:
            while self._queued and not self._closed:
                conn: Any = self._make_connection()
                try:
                    await conn.connect()
                except (ConnectionError, TimeoutError, OSError) as exc:
                    await conn.disconnect(nowait=True)
                    self._failed(exc)
                    if not self._queued:
                        return
                    attempt += 1
                    pause = random.uniform(0, min(1.0, self._backoff_base * 2**attempt))
                    soonest = min(r.deadline for r in self._queued)
                    await asyncio.sleep(max(0.0, min(pause, soonest - time.monotonic())))
                    continue
                self._attach(conn)
                self._flush()
                return
        finally:
            self._connecting = None

    def _attach(self, conn: Any) -> None:
        """Take over ``conn``'s transport: its bytes come to :class:`_Replies` from now on."""
        writer = conn._writer
        assert writer is not None
        transport = writer.transport
        parser = hiredis.Reader(replyError=conn._parser.parse_error)
        left = bytes(getattr(conn._reader, "_buffer", b""))  # nothing, after the handshake
        replies = _Replies(self, parser)
        transport.set_protocol(replies)
        self._conn, self._transport, self._replies = conn, transport, replies
        if left:
            replies.data_received(left)

    def _received(self, replies: _Replies) -> None:
        """Bytes arrived: hand each complete reply to the oldest request waiting for one."""
        self._progress = time.monotonic()
        if self._troubled:
            self._troubled = False
            self.reach.answered()
        parser = replies.parser
        inflight = self._inflight
        try:
            while (reply := parser.gets()) is not False:
                if not inflight:
                    raise ConnectionError("a reply nobody asked for")
                request = inflight[0]
                request.replies.append(reply)
                if len(request.replies) == request.expect:
                    inflight.popleft()
                    if not request.future.done():
                        request.future.set_result(request.replies)
        except Exception as exc:  # garbled: the connection cannot be trusted any more
            self._lost_from(replies, exc)

    def _lost_from(self, replies: _Replies, error: Exception) -> None:
        if replies is self._replies:
            self._lost(error)

    def _lost(self, error: Exception) -> None:
        """The connection is gone (or silent): send what it left unanswered again."""
        conn, self._conn, self._transport, self._replies = self._conn, None, None, None
        if conn is not None:
            conn._close()
        if not self._inflight and not self._queued:
            return  # an idle connection closed (a server's client timeout): nothing lost
        unanswered = list(self._inflight)
        self._inflight.clear()
        for request in reversed(unanswered):
            request.replies = []
            self._queued.appendleft(request)
        self._failed(error)
        if self._queued:
            self._connect_soon()

    def _failed(self, error: Exception) -> None:
        """An attempt failed: fail the requests past their deadline, count the rest's retry."""
        self._troubled = True
        self.reach.failed(error)
        now = time.monotonic()
        kept: collections.deque[_Request] = collections.deque()
        for request in self._queued:
            if request.future.done():
                continue
            if now >= request.deadline:
                request.future.set_exception(_fresh(error))
                self.reach.deadline_passed(error)
            else:
                self._on_retry(error)
                kept.append(request)
        self._queued = kept

    # -- the watchdog ----------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and self._loop is not None:
            delay = max(self.read_timeout / 4, 0.01)
            self._watchdog = self._loop.call_later(delay, self._watch)

    def _watch(self) -> None:
        """While requests are outstanding: a connection silent for a read timeout is lost."""
        self._watchdog = None
        if not self._inflight or self._transport is None:
            return
        silent = time.monotonic() - self._progress
        if silent >= self.read_timeout:
            self._lost(TimeoutError(f"no reply from Redis for {silent:.1f} s"))
            return
        self._arm_watchdog()

    # -- closing ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Fail what waits, and close the connection."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connecting is not None:
            self._connecting.cancel()
        for request in (*self._inflight, *self._queued):
            if not request.future.done():
                request.future.set_exception(ConnectionError(f"{self.name}: closed"))
        self._inflight.clear()
        self._queued.clear()
        conn, self._conn, self._transport, self._replies = self._conn, None, None, None
        connecting = self._connecting
        if conn is not None:
            await conn.disconnect(nowait=True)
        if connecting is not None:
            await asyncio.gather(connecting, return_exceptions=True)


class _Replies(asyncio.Protocol):
    """The protocol of a lane's connection: parses what arrives, tells the lane."""

    def __init__(self, lane: Lane, parser: hiredis.Reader) -> None:
        self.lane = lane
        self.parser = parser

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        self.lane._received(self)

    def eof_received(self) -> bool:
        self.lane._lost_from(self, ConnectionError("Connection closed by server."))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane._lost_from(self, exc or ConnectionError("Connection closed."))


def pack(command: Sequence[Any]) -> bytes:
    """One command in RESP, as redis-py would write it (hiredis does the work)."""
    try:
        return cast(bytes, hiredis.pack_command(cast(Any, tuple(command))))
    except TypeError:
        pass
    args: list[str | bytes | int | float] = []
    for arg in command:
        if isinstance(arg, (bytearray, memoryview)):
            args.append(bytes(arg))
        elif isinstance(arg, (str, bytes, int, float)) and not isinstance(arg, bool):
            args.append(arg)
        else:  # what redis-py's encoder refuses too
            raise DataError(f"invalid input of type {type(arg).__name__!r} in a Redis command")
    return cast(bytes, hiredis.pack_command(cast(Any, tuple(args))))


def _fresh(error: Exception) -> Exception:
    """A new exception like ``error`` for each request that fails with it."""
    if isinstance(error, TimeoutError):
        return TimeoutError(f"no reply from Redis within the retry deadline ({error})")
    return ConnectionError(f"Redis unreachable until the retry deadline ({error})")


BULK_BYTES = 64 * 1024
"""Requests this large go to the bulk lane, and so do MGETs (of blocks: their replies are
large), so that small requests never queue behind them."""

LANE_COMMANDS = frozenset(
    {
        "EVALSHA",
        "EVAL",
        "GET",
        "MGET",
        "SET",
        "DEL",
        "UNLINK",
        "EXISTS",
        "STRLEN",
        "INCR",
        "INCRBY",
        "HGET",
        "HGETALL",
        "HMGET",
        "HSET",
        "HDEL",
        "HEXISTS",
        "HINCRBY",
        "HKEYS",
        "HVALS",
        "HLEN",
        "ZADD",
        "ZREM",
        "ZSCORE",
        "ZCARD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "PUBLISH",
        "PING",
        "EXPIRE",
        "PEXPIRE",
    }
)
"""Commands that may travel on a lane: each answers at once and leaves no state on its
connection. Blocking ones (WAIT for replicas), subscriptions, transactions, SCRIPT
LOAD, INFO and the rest go through redis-py as before."""


class Lanes:
    """A client's two lanes: small requests, and bulk ones (block data) apart."""

    def __init__(self, make_connection: Callable[[], AbstractConnection], **options: Any) -> None:
        self.small = Lane(make_connection, name="small", **options)
        self.bulk = Lane(make_connection, name="bulk", **options)

    def __repr__(self) -> str:
        return f"<Lanes {self.small!r} {self.bulk!r}>"

    async def send(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` as one request on the lane its size calls for."""
        chunks = [pack(c) for c in commands]
        bulky = commands[0][0] == "MGET" or sum(len(c) for c in chunks) >= BULK_BYTES
        return await (self.bulk if bulky else self.small).submit(chunks)

    async def aclose(self) -> None:
        await self.small.aclose()
        await self.bulk.aclose()
