"""Sessions: each open volume registers, heartbeats, and reclaims what dead ones held.

A session is ``sess:SID`` (host, pid, mountpoint, version, event loop, start
time, its timeout) plus its score in ``sessions``: the time (ms) its lease expires, that
is its last heartbeat plus its own timeout. Each session declares its own
timeout, so mounts configured differently still agree on who is dead. A
session past its expiry is dead: any node (and ``redisfuse gc``) drops its
open handles (freeing files that were unlinked while it held them open) and
its session keys. Locks need no reclaim: their TTL ends them.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import cast

from .. import __version__
from .connect import retry_stats
from .context import Context, now_ns
from .events import HELLO, publish_command
from .keys import SessionId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One registered session, as ``redisfuse status`` shows it."""

    sid: int
    host: str
    pid: int
    mountpoint: str
    version: str
    started_ns: int
    heartbeat_ms: int
    open_inodes: int
    event_loop: str = ""
    retries: int = 0
    """Redis commands the session's client retried, as of its last heartbeat."""
    """What the mount said it runs on (``trio``, ``asyncio``...); empty if not a mount."""


def _now_ms() -> int:
    return now_ns() // 1_000_000


class Sessions:
    """Registration, heartbeat and reclaim of the volume's sessions."""

    def __init__(self, ctx: Context, timeout: float) -> None:
        self.ctx = ctx
        self.keys = ctx.keys
        self.timeout = timeout
        self.last_beat = time.monotonic()
        self.mountpoint = ""
        self.event_loop = ""
        self.back_ms = 0
        """When (wall ms) this node's heartbeats got through again after a gap (0: none)."""

    def __repr__(self) -> str:
        return f"<Sessions own={self.ctx.session} timeout={self.timeout}s>"

    @property
    def lease_valid(self) -> bool:
        """Whether our own heartbeat is recent enough that others still count us alive."""
        return time.monotonic() - self.last_beat < self.timeout

    async def register(self, mountpoint: str, event_loop: str = "") -> SessionId:
        """Register this node's session (also on a full Redis: see register.lua)."""
        self.mountpoint = mountpoint
        self.event_loop = event_loop
        res = await self.ctx.script("session_id", [self.keys.counter_sess], [])
        sid = SessionId(int(res[1]))
        fields = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mountpoint": mountpoint,
            "version": __version__,
            "event_loop": event_loop,
            "started": now_ns(),
            "timeout": self.timeout_ms,
        }
        await self.ctx.script(
            "register",
            [self.keys.session(sid), self.keys.sessions],
            [sid, _now_ms() + self.timeout_ms, *(x for kv in fields.items() for x in kv)],
        )
        self.ctx.session = sid
        self.last_beat = time.monotonic()
        await self.refresh_peers()
        return sid

    async def announce(self) -> None:
        """Tell the live sessions that this one exists (they send it their changes)."""
        with self.ctx.guard():
            await self.ctx.client.execute_command(  # type: ignore[no-untyped-call]
                publish_command(self.ctx.client),
                self.keys.events,
                HELLO + str(self.ctx.session).encode(),
            )

    async def refresh_peers(self) -> None:
        """Re-read which other sessions are alive: they are sent this node's change events."""
        with self.ctx.guard():
            live = cast(
                list[bytes],
                await self.ctx.client.zrangebyscore(self.keys.sessions, _now_ms(), "+inf"),
            )
        self.ctx.peers = tuple(int(s) for s in live if int(s) != self.ctx.session)

    def add_peer(self, sid: int) -> None:
        if sid != self.ctx.session and sid not in self.ctx.peers:
            self.ctx.peers = (*self.ctx.peers, sid)

    def retries(self) -> int:
        """Redis commands this node's client retried so far (lost connections, timeouts)."""
        stats = retry_stats(self.ctx.client)
        return stats.total if stats is not None else 0

    async def heartbeat(self) -> bool:
        """Renew our lease, also on a full Redis (heartbeat.lua says why); False when
        this session was declared dead meanwhile (the caller renews it)."""
        res = await self.ctx.script(
            "heartbeat",
            [self.keys.sessions, self.keys.session(self.ctx.session)],
            [self.ctx.session, _now_ms() + self.timeout_ms, self.retries()],
        )
        self.last_beat = time.monotonic()
        return bool(int(res[1]))

    @property
    def timeout_ms(self) -> int:
        return int(self.timeout * 1000)

    def back_after_gap(self) -> None:
        """This node's heartbeats went through again after a gap (see :meth:`dead`)."""
        self.back_ms = _now_ms()
        log.debug("heartbeats go through again: other sessions get a grace of their timeout")

    async def dead(self, silent_for: float | None = None) -> list[int]:
        """Sessions whose lease expired, or (``silent_for``) whose last heartbeat is that old.

        After a gap in this node's own heartbeats (``back_ms``), an expired session
        counts as dead only once its own timeout has passed since: a Redis that
        stopped answering (or a network cut off from it) stopped every node's
        heartbeats, and without the grace the first node to get through would
        declare all the others dead, failing their open files. A session really
        dead stays dead and is reclaimed a timeout later.
        """
        with self.ctx.guard():
            if silent_for is None:
                now = _now_ms()
                raw = cast(
                    list[bytes],
                    await self.ctx.client.zrangebyscore(self.keys.sessions, "-inf", now),
                )
                sids = [int(s) for s in raw if int(s) != self.ctx.session]
                if sids and self.back_ms:
                    pipe = self.ctx.client.pipeline(transaction=False)
                    for sid in sids:
                        pipe.hget(self.keys.session(sid), "timeout")
                    timeouts = await pipe.execute()
                    sids = [
                        sid
                        for sid, timeout in zip(sids, timeouts, strict=True)
                        if now >= self.back_ms + int(timeout or self.timeout_ms)
                    ]
            else:
                sids = [
                    sess.sid
                    for sess in await self.list()
                    if sess.heartbeat_ms <= _now_ms() - int(silent_for * 1000)
                ]
        return [s for s in sids if s != self.ctx.session]

    async def reclaim(self, sid: int) -> list[int]:
        """Release everything dead session ``sid`` held open; return inodes freed with data.

        Another node's session is fenced first (dropped from ``sessions``): every
        script checks its caller is there, so a node that was only paused and
        wakes up now cannot change anything with that session any more. Each
        release is the same script a live close runs, and releases only what is
        still held, so two nodes may reclaim the same session at once.
        """
        open_key = self.keys.open_files(sid)
        with self.ctx.guard():
            if sid != self.ctx.session:
                await self.ctx.client.zrem(self.keys.sessions, str(sid))
            held = await self.ctx.client.hgetall(open_key)
        freed: list[int] = []
        for ino_raw, count in held.items():
            ino = int(ino_raw)
            res = await self.ctx.script(
                "release",
                self.ctx.release_keys(ino, sid),
                [ino, int(count), _now_ms()],
                changed=(ino,),
            )
            if int(res[1]) == 2:
                freed.append(ino)
        with self.ctx.guard():
            pipe = self.ctx.client.pipeline(transaction=True)
            pipe.execute_command(  # a cluster pipeline runs delete() at once
                "DEL", self.keys.session(sid), open_key, self.keys.requests(sid)
            )
            pipe.zrem(self.keys.sessions, str(sid))
            await pipe.execute()
        log.log(
            logging.DEBUG if sid == self.ctx.session else logging.INFO,
            "reclaimed session %d: %d open inodes released, %d freed",
            sid,
            len(held),
            len(freed),
        )
        return freed

    async def list(self) -> list[SessionInfo]:
        with self.ctx.guard():
            scored = cast(
                list[tuple[bytes, float]],
                await self.ctx.client.zrange(self.keys.sessions, 0, -1, withscores=True),
            )
            pipe = self.ctx.client.pipeline(transaction=False)
            for sid, _ in scored:
                pipe.hgetall(self.keys.session(int(sid)))
                pipe.hlen(self.keys.open_files(int(sid)))
            details = await pipe.execute()
        out = []
        for i, (sid, score) in enumerate(scored):
            info, nopen = details[2 * i], details[2 * i + 1]
            timeout = int(info.get(b"timeout", 0))
            out.append(
                SessionInfo(
                    sid=int(sid),
                    host=info.get(b"host", b"?").decode(errors="replace"),
                    pid=int(info.get(b"pid", 0)),
                    mountpoint=info.get(b"mountpoint", b"").decode(errors="replace"),
                    version=info.get(b"version", b"?").decode(errors="replace"),
                    started_ns=int(info.get(b"started", 0)),
                    heartbeat_ms=int(score) - timeout,
                    open_inodes=int(nopen),
                    event_loop=info.get(b"event_loop", b"").decode(errors="replace"),
                    retries=int(info.get(b"retries", 0)),
                )
            )
        return out
