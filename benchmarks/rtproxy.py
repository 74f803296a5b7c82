"""A TCP proxy in front of Redis that counts the commands and round trips of its clients.

Redis' own statistics (``INFO commandstats``) count commands, including those
a Lua script runs, but nothing on the server counts round trips: a pipeline of
16 commands and 16 sequential commands look alike there. This proxy sits
between one mount and Redis, parses RESP in both directions, and counts per
connection:

- commands: top-level requests the client sent (EVALSHA and MULTI/EXEC count as
  sent, not what they run);
- round trips: how often the client started a new request while it had no
  reply outstanding, i.e. how many times it had to wait for Redis. A pipeline
  is one round trip however many commands it carries.

Shortcut: if Redis has already answered every complete command of a large
pipeline while the client is still sending the rest, and a read of the client's
bytes happens to end exactly on a command boundary, that pipeline counts twice.
It needs both at once, and only lengthens the count; the benchmark reports
commands next to round trips so that this stays visible.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

BUFSIZE = 1 << 18
NAME_MAX = 256
"""Request arguments up to this long are kept (command name and first key)."""


class RespCounter:
    """Counts complete top-level RESP messages in a byte stream, fed in arbitrary pieces.

    Bulk payloads are skipped without being copied into the buffer, so a 1 MiB
    SET costs a few slices. For requests (``keep_args``) the first two bulk
    strings of each top-level array are kept: the command name and its first key.
    """

    def __init__(self, keep_args: bool = False) -> None:
        self.keep_args = keep_args
        self.buf = bytearray()
        self.skip = 0
        self.stack: list[int] = []
        self.args: list[bytes] = []
        self.done: list[list[bytes]] = []

    def idle(self) -> bool:
        """True between messages (nothing partial buffered)."""
        return not self.buf and self.skip == 0 and not self.stack

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Consume ``data``; return the kept arguments of each message it completed."""
        self.done = []
        view = memoryview(data)
        if self.skip:
            n = min(self.skip, len(view))
            self.skip -= n
            view = view[n:]
            if self.skip == 0:
                self._element_done()
        self.buf += view
        pos = 0
        buf = self.buf
        while pos < len(buf):
            if self.skip:
                n = min(self.skip, len(buf) - pos)
                pos += n
                self.skip -= n
                if self.skip:
                    break
                self._element_done()
                continue
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            kind = buf[pos]
            header = bytes(buf[pos + 1 : end])
            if kind in b"$=!":
                length = int(header)
                if length < 0:
                    pos = end + 2
                    self._element_done()
                    continue
                if self._want_arg() and length <= NAME_MAX:
                    if len(buf) - end - 2 < length + 2:
                        break  # wait for the whole (short) argument
                    self.args.append(bytes(buf[end + 2 : end + 2 + length]))
                    pos = end + 2 + length + 2
                    self._element_done()
                    continue
                pos = end + 2
                self.skip = length + 2
                continue
            pos = end + 2
            if kind in b"*~>%|":
                count = int(header) * (2 if kind in b"%|" else 1)
                if count <= 0:
                    self._element_done()
                else:
                    self.stack.append(count)
                continue
            self._element_done()  # + - : _ , # ( simple types
        del buf[:pos]
        return self.done

    def _want_arg(self) -> bool:
        return self.keep_args and len(self.stack) == 1 and len(self.args) < 2

    def _element_done(self) -> None:
        while self.stack:
            self.stack[-1] -= 1
            if self.stack[-1] > 0:
                return
            self.stack.pop()
        self.done.append(self.args)
        self.args = []


@dataclass
class Command:
    """One request as seen by the proxy."""

    at: float
    conn: int
    name: str
    key: str


@dataclass
class _Conn:
    ident: int
    requests: RespCounter = field(default_factory=lambda: RespCounter(keep_args=True))
    replies: RespCounter = field(default_factory=RespCounter)
    outstanding: int = 0


class CountingProxy:
    """Listens on 127.0.0.1 (a free port) and forwards every connection to ``target``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.commands = 0
        self.round_trips = 0
        self.log: list[Command] = []
        self._sockets: list[socket.socket] = []
        self._next = 0
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def snapshot(self) -> tuple[int, int, int]:
        """(commands, round trips, log length) so far."""
        with self.lock:
            return self.commands, self.round_trips, len(self.log)

    def since(self, mark: int) -> list[Command]:
        with self.lock:
            return list(self.log[mark:])

    def wait_for(self, predicate: Callable[[Command], bool], timeout: float) -> bool:
        """Wait until a command matching ``predicate`` passes (True) or ``timeout`` (False)."""
        mark = self.snapshot()[2]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(c) for c in self.since(mark)):
                return True
            time.sleep(0.002)
        return False

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self.lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self._next += 1
                conn = _Conn(self._next)
                self._sockets += [client, server]
            threading.Thread(
                target=self._pump, args=(conn, client, server, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(conn, server, client, False), daemon=True
            ).start()

    def _pump(self, conn: _Conn, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        """Forward one direction, counting before forwarding (so counts are causal)."""
        try:
            while True:
                data = src.recv(BUFSIZE)
                if not data:
                    break
                with self.lock:
                    if upstream:
                        self._count_request(conn, data)
                    else:
                        done = len(conn.replies.feed(data))
                        conn.outstanding = max(0, conn.outstanding - done)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _count_request(self, conn: _Conn, data: bytes) -> None:
        if conn.requests.idle() and conn.outstanding == 0:
            self.round_trips += 1
        now = time.monotonic()
        for args in conn.requests.feed(data):
            conn.outstanding += 1
            self.commands += 1
            name = args[0].decode(errors="replace").upper() if args else "?"
            key = args[1].decode(errors="replace") if len(args) > 1 else ""
            self.log.append(Command(now, conn.ident, name, key))
