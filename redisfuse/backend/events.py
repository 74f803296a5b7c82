"""Change events: what a committed change tells other nodes, and the stream that hears them.

Every mutating operation publishes one message to each other live session's
own channel (``events:SID``), in the same pipeline as the script that commits
the change (so right after it, on the same connection). A node therefore never
wakes up for its own changes, and a lone mount publishes nothing at all. A new
session announces itself on the volume-wide channel ``events`` so that the
others add it to their peers at once. A message is the publishing session id
followed by records, separated by NUL bytes (names can hold neither NUL nor '/'):

    b"SID\\0i123\\0e45/name"     inode 123 changed; entry "name" of directory 45 changed

Pub/sub delivers at most once: messages sent while a subscriber is
disconnected are lost, so after every reconnect the stream yields ``Resync``
first, and consumers drop everything they cached.

On a Redis Cluster the channels are sharded (SPUBLISH/SSUBSCRIBE): the channel
names carry the volume's hash tag, so a message goes to the master of the
volume's slot, in the same per-node pipeline as the script it follows (the
order above holds), and is not broadcast over the whole cluster. A subscriber
follows the slot when it moves (the server ends the subscription; we
subscribe again at the slot's new master and yield ``Resync``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError, RedisError, ResponseError, TimeoutError

from .cancellation import raise_if_cancelled
from .cluster import is_cluster, node_client, still_subscribed

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InodeChanged:
    """Attributes, data or xattrs of ``ino`` changed."""

    ino: int


@dataclass(frozen=True, slots=True)
class EntryChanged:
    """The name ``name`` in directory ``parent`` was added, removed or repointed."""

    parent: int
    name: bytes


@dataclass(frozen=True, slots=True)
class PeerJoined:
    """Session ``sid`` started: changes must be sent to it from now on."""

    sid: int


@dataclass(frozen=True, slots=True)
class Resync:
    """Events may have been lost: drop every cached attribute, entry and map."""


@dataclass(frozen=True, slots=True)
class Stalled(Resync):
    """The subscription went silent: events may be missing from now on. Drop every
    cached attribute, entry and map, and cache nothing until the next plain Resync
    (a consumer that only knows Resync drops its caches, which is what matters)."""


Event = InodeChanged | EntryChanged | PeerJoined | Resync | Stalled

HELLO = b"hello"

KEEPALIVE = b"rf-keepalive"
"""Data of the PING a quiet subscription sends itself (its answer proves it alive)."""

RECONNECT_CAP_S = 2.0
"""Longest wait between two attempts to subscribe again."""

DEFAULT_SILENCE_S = 5.0
"""A subscription that hears nothing for this long is replaced (the mount passes its
``--redis-read-timeout``)."""


def publish_command(client: Redis) -> str:
    """PUBLISH, or SPUBLISH on a cluster (a channel in the volume's slot)."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


def encode(
    session: int, inodes: Iterable[int] = (), entries: Iterable[tuple[int, bytes]] = ()
) -> bytes:
    """The wire form of one operation's events."""
    parts = [str(session).encode()]
    parts += [b"i%d" % ino for ino in inodes if ino]
    parts += [b"e%d/%s" % (parent, name) for parent, name in entries]
    return b"\0".join(parts)


def decode(message: bytes) -> tuple[int, list[Event]]:
    """(publishing session, events) of one message; malformed records are skipped."""
    sid_raw, *records = message.split(b"\0")
    events: list[Event] = []
    for record in records:
        try:
            if record[:1] == b"i":
                events.append(InodeChanged(int(record[1:])))
            elif record[:1] == b"e":
                parent, _, name = record[1:].partition(b"/")
                events.append(EntryChanged(int(parent), name))
        except ValueError:
            log.warning("ignoring malformed change event record %r", record)
    try:
        sid = int(sid_raw)
    except ValueError:
        sid = 0
    return sid, events


class _CountingPubSub(PubSub):
    """A PubSub that counts its (re)connections, since redis-py resubscribes silently."""

    connects = 0

    async def on_connect(self, connection: Any) -> None:
        self.connects += 1
        await super().on_connect(connection)


@dataclass(slots=True)
class Watch:
    """How one stream watches its subscription, and the gap it is in (if any).

    A subscription that hears nothing for ``silence`` seconds, not even the
    answer to the PING it sends after ``silence / 3`` quiet seconds, is
    replaced: a connection a NAT or firewall stopped forwarding, or a server
    that stopped answering, looks exactly like a quiet volume otherwise. The
    stream says so in one WARNING when a gap starts (however many
    replacements it takes) and one INFO when a subscription is confirmed
    again; events sent in between are lost, hence Stalled and Resync.
    """

    silence: float
    address: str = ""
    """Where Redis is, for the log (never with a password)."""
    lost_since: float | None = None
    """When the gap under way started (monotonic); None while events flow."""
    caching: bool = False
    """Consumers cache (a Resync came, and no Stalled since)."""

    @property
    def keepalive(self) -> float:
        return self.silence / 3

    @property
    def poll(self) -> float:
        return min(1.0, self.keepalive)

    def _lost(self, since: float, warning: str, *args: object) -> None:
        """Start a gap at ``since`` (logging ``warning``) or note a step of the one under way."""
        if self.lost_since is None:
            self.lost_since = since
            log.warning(warning, *args)
        else:
            log.debug(warning, *args)

    def stalled(self, quiet: float) -> None:
        """The subscription heard nothing for ``quiet`` seconds."""
        self._lost(
            time.monotonic() - quiet,
            "change events: nothing heard from Redis at %s for %.1f s (not even the answer "
            "to a keep-alive PING); replacing the subscription, and caching no metadata "
            "until it is back",
            self.address,
            quiet,
        )

    def interrupted(self, exc: BaseException) -> None:
        self._lost(time.monotonic(), "change events interrupted (%s); reconnecting", exc)

    def cannot_subscribe(self, exc: BaseException) -> None:
        self._lost(time.monotonic(), "change events: cannot subscribe (%s); trying again", exc)

    def confirmed(self) -> None:
        """A subscription heard from Redis: a gap under way is over."""
        if self.lost_since is not None:
            log.info(
                "change events: subscribed again after %.1f s; cached metadata was dropped",
                time.monotonic() - self.lost_since,
            )
            self.lost_since = None


async def listen(
    client: Redis,
    channel: str,
    hello_channel: str,
    own_session: int,
    present: Callable[[], bool] = lambda: True,
    *,
    silence: float = DEFAULT_SILENCE_S,
    address: str = "",
) -> AsyncIterator[Event]:
    """Yield the events sent to this session, ``Resync`` whenever a subscription is
    confirmed (first, and after every reconnect), and ``Stalled`` when it goes silent.

    The first item is always ``Resync`` (nothing before the subscription is known).
    Announcements of new sessions on ``hello_channel`` come as ``PeerJoined``.
    A subscription silent for ``silence`` seconds is replaced (see :class:`Watch`).
    Runs until cancelled, also when a command lost the cancellation (cancellation.py).
    ``present`` says whether the volume's keys are in Redis (health.py): on a
    cluster, a slot without keys means the slot moved only while they are.
    """
    sharded = is_cluster(client)
    channels = (channel, hello_channel)
    watch = Watch(silence, address)
    delay = 0.05
    while True:
        raise_if_cancelled()
        try:
            # On a cluster: a plain client to the master of the volume's slot, found
            # afresh after the slot moved or its master failed.
            own = await node_client(client, channel, refresh=delay > 0.05) if sharded else None
        except (RedisError, OSError) as exc:
            watch.cannot_subscribe(exc)
            await _sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP_S)
            continue
        pubsub = _CountingPubSub((own or client).connection_pool)
        if own is not None:
            where = own.connection_pool.connection_kwargs
            log.debug("change events: subscribing at %s:%s", where.get("host"), where.get("port"))
        try:
            try:
                await _subscribe(pubsub, channels, sharded)
            except (RedisError, OSError) as exc:
                watch.cannot_subscribe(exc)
                await _sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP_S)
                continue

            serves = functools.partial(_serves, own, client, channel, present) if own else None
            async for event in _read(pubsub, channels, own_session, serves, watch):
                delay = 0.05
                yield event
            # The stream ended: the slot moved (re-read the slot map), or it went silent.
            delay = 0.1
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
            if own is not None:
                with contextlib.suppress(RedisError, OSError):
                    await own.aclose()


async def _read(
    pubsub: _CountingPubSub,
    channels: tuple[str, ...],
    own_session: int,
    serves: Callable[[], Awaitable[bool]] | None,
    watch: Watch,
) -> AsyncIterator[Event]:
    """The events of one subscription; ends when a cluster ends it (slot moved, node gone)
    or when it stays silent (``watch.silence``).

    ``Resync`` comes once the subscription is confirmed (its first reply), so
    nothing cached after it can have missed an event. ``serves`` (on a cluster)
    is asked once a quiet second whether the master still serves the volume's
    slot and holds our subscription: one made while the slot was moving can end
    without a word.
    """
    sharded = serves is not None
    seen_connects = pubsub.connects
    heard = pinged = asked = time.monotonic()
    confirmed = False
    while True:
        raise_if_cancelled()  # one lost in a command sent since the last turn
        now = time.monotonic()
        if now - heard >= watch.silence:
            watch.stalled(now - heard)
            if watch.caching:
                watch.caching = False
                yield Stalled()
            return
        interrupted = False
        try:
            if now - max(heard, pinged) >= watch.keepalive:
                pinged = now
                await pubsub.ping(KEEPALIVE)  # its answer comes as a message
            message = await pubsub.get_message(timeout=watch.poll)
        except (ConnectionError, TimeoutError, OSError) as exc:
            watch.interrupted(exc)
            interrupted = True
            message = None
        except ResponseError as exc:
            if not sharded:
                raise
            # The subscription went to a master that does not serve the slot (the
            # slot map was read while the slot was moving): it answers MOVED, which
            # arrives here. Follow the slot again once the move has settled.
            log.info("change events: subscribed at the wrong master (%s); following", exc)
            await _sleep(0.1)
            return
        if interrupted:
            if watch.caching:
                watch.caching = False
                yield Stalled()
            if sharded:
                return
            await _resubscribe(pubsub, channels)
        now = time.monotonic()
        if pubsub.connects != seen_connects:
            seen_connects = pubsub.connects
            heard = now
            confirmed = False  # redis-py subscribed again: wait for its confirmation
        if message is None:
            if serves is not None and now - asked >= 1.0:
                asked = now
                try:
                    if not await serves():
                        log.info("change events: the volume's slot moved; following it")
                        return
                except (RedisError, OSError):
                    return
            continue
        heard = now
        if not confirmed:
            confirmed = True
            watch.confirmed()
            watch.caching = True
            yield Resync()
        kind = message.get("type")
        if kind == "sunsubscribe":
            log.info("change events: the volume's slot moved; following it")
            return
        if kind not in ("message", "smessage"):
            continue
        if message["data"].startswith(HELLO):
            sid = int(message["data"][len(HELLO) :] or 0)
            if sid != own_session:
                yield PeerJoined(sid)
            continue
        sid, events = decode(message["data"])
        if sid == own_session:
            continue
        for event in events:
            yield event


async def _serves(node: Redis, client: Redis, channel: str, present: Callable[[], bool]) -> bool:
    """still_subscribed(), but a volume that vanished leaves its slot empty without moving."""
    return not present() or await still_subscribed(node, client, channel)


async def _subscribe(pubsub: PubSub, channels: tuple[str, ...], sharded: bool) -> None:
    if sharded:
        await pubsub.ssubscribe(*channels)
    else:
        await pubsub.subscribe(*channels)


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


async def _resubscribe(pubsub: PubSub, channels: tuple[str, ...]) -> None:
    """Reconnect with capped backoff until the subscription is back."""
    delay = 0.05
    while True:
        try:
            await pubsub.subscribe(*channels)
            return
        except (ConnectionError, TimeoutError, OSError):
            await _sleep(delay)
            delay = min(delay * 2, RECONNECT_CAP_S)
