"""This node's cache of attributes and directory entries, kept coherent by events.

Caching is on only while an event stream is running for the volume (see
Inodes.events); otherwise every lookup goes to Redis. Entries also expire after
``ttl`` seconds, the bound on staleness when an event is lost.

Besides single entries it keeps complete listings of directories whose every
name it knows (read in full, or created empty here and changed only here
since): a lookup of a name missing from such a listing is answered "no such
name" without a round trip, which is what creating many files costs most.
Any change event about a directory drops its listing; a change this node
makes keeps it (adding or removing the name) and counts as seeing it anew, so
that unpacking an archive into a new directory of any size, however long it
takes, pays no lookup per file. Listings hold at most ``MAX_LISTED_NAMES``
names in all (about 100 bytes each: 25 MB); past that the oldest go.

What may fill it (docs/architecture.md, "Which value wins"): a reply can be
older than a change this node already heard of, because replies and change
events come on different connections and a reply to a request sent before a
change can arrive after the event that announced it. So every fill carries a
*ticket*, taken when its request was sent, and every drop is recorded: a fill
whose key was dropped after its ticket was taken is refused (its reply may
predate the change). Attributes and block map windows also carry the inode's
version (bumped by every change in Redis): an older version never replaces a
newer one. A change this node makes drops what it changes when the request is
sent and again when the reply arrives (a read that overtook it may have filled
in between), and its own ticket stays allowed to fill those keys with the
reply, unless a drop from elsewhere came in between.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Iterable
from typing import Any

from .model import Attr

MAX_MAP_ENTRIES = 1 << 16
"""Block map entries kept per inode (4 GiB of a file in 64 KiB blocks, about 6 MiB)."""

MAX_LISTED_NAMES = 250_000
"""Names kept in complete directory listings, over all directories (about 25 MB)."""


class MetaCache:
    """Attributes by inode and child inode by (parent, name), with a TTL."""

    def __init__(self, ttl: float, max_items: int = 100_000) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self.enabled = False
        self.hits = 0
        self.misses = 0
        self.changes = 0
        """Counts every dropped entry or listing: a listing read before a change is not kept."""
        self._attrs: dict[int, tuple[Attr, float]] = {}
        self._entries: dict[tuple[int, bytes], tuple[int, float]] = {}
        self._listings: dict[int, list[Any]] = {}
        """Per directory: [its names, when this node last read or changed them]; oldest first."""
        self._listed = 0
        """Names in all listings (bounded by MAX_LISTED_NAMES)."""
        self._maps: dict[int, tuple[dict[int, bytes | None], int, int, float]] = {}
        """Per inode: block map entries by index, the size and the inode version they
        came with, when first read."""
        self._clock = 0
        """Counts tickets and drops: the order in which this node sent requests and heard
        of changes."""
        self._floor = 0
        """Fills with a ticket below this are refused (everything was dropped then)."""
        self._drops: dict[Hashable, int] = {}
        """Clock of the last drop of each key (an inode, or a (parent, name) entry)."""
        self._exempt: dict[Hashable, int] = {}
        """The one ticket that may still fill a key after its last drop: that of the
        change of this node which dropped it (see :meth:`changing`)."""

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return (
            f"<MetaCache {state} attrs={len(self._attrs)} entries={len(self._entries)} "
            f"hits={self.hits} misses={self.misses}>"
        )

    def _fresh(self, stamp: float) -> bool:
        return time.monotonic() - stamp < self.ttl

    # -- tickets and drops -------------------------------------------------------

    def ticket(self) -> int:
        """A ticket for a request about to be sent: what its reply may fill."""
        self._clock += 1
        return self._clock

    def _dropped(self, key: Hashable, exempt: int = 0) -> None:
        self._clock += 1
        if len(self._drops) >= self.max_items:
            # Forget the log, and with it every ticket issued so far.
            self._drops.clear()
            self._exempt.clear()
            self._floor = self._clock
        self._drops[key] = self._clock
        if exempt:
            self._exempt[key] = exempt
        else:
            self._exempt.pop(key, None)

    def _may_fill(self, key: Hashable, ticket: int) -> bool:
        if ticket < self._floor:
            return False
        dropped = self._drops.get(key)
        return dropped is None or dropped < ticket or self._exempt.get(key) == ticket

    def changing(
        self, ticket: int, inodes: Iterable[int], entries: Iterable[tuple[int, bytes]]
    ) -> None:
        """A change of this node to ``inodes`` and ``entries`` is being sent, or its
        reply just arrived: drop them (again), keeping ``ticket`` (the change's own,
        taken before the first call) allowed to fill them with the change's reply,
        unless something else dropped them since."""
        for ino in inodes:
            self.drop_attr(ino, ticket if self._may_fill(ino, ticket) else 0)
        for parent, name in entries:
            exempt = ticket if self._may_fill((parent, name), ticket) else 0
            self.drop_entry(parent, name, exempt)

    # -- reads -------------------------------------------------------------------

    def attr(self, ino: int) -> Attr | None:
        item = self._attrs.get(ino) if self.enabled else None
        if item is not None and self._fresh(item[1]):
            self.hits += 1
            return item[0]
        self.misses += 1
        return None

    def entry(self, parent: int, name: bytes) -> Attr | None:
        """The cached attributes of ``name`` in ``parent`` (both must be cached and fresh)."""
        item = self._entries.get((parent, name)) if self.enabled else None
        if item is None or not self._fresh(item[1]):
            self.misses += 1
            return None
        return self.attr(item[0])

    def child(self, parent: int, name: bytes) -> int | None:
        item = self._entries.get((parent, name)) if self.enabled else None
        if item is None or not self._fresh(item[1]):
            return None
        return item[0]

    def holds(self, attr: Attr) -> bool:
        """Whether ``attr`` is what the cache holds for its inode now (same version):
        only such attributes may be cached by the kernel too."""
        item = self._attrs.get(attr.ino) if self.enabled else None
        return item is not None and item[0].version == attr.version and self._fresh(item[1])

    def holds_entry(self, parent: int, name: bytes, ino: int) -> bool:
        """Whether the cache holds ``name`` in ``parent`` as naming ``ino`` now."""
        item = self._entries.get((parent, name)) if self.enabled else None
        return item is not None and item[0] == ino and self._fresh(item[1])

    def put_attr(self, attr: Attr, ticket: int) -> bool:
        """Keep ``attr``, read with ``ticket``, unless it may be older than what this
        node knows (see the module docstring); returns whether it was kept."""
        if not self.enabled:
            return False
        item = self._attrs.get(attr.ino)
        if not self._may_fill(attr.ino, ticket):
            if item is not None and item[0].version < attr.version:
                # Too late to be kept, but it proves what is kept out of date.
                self._attrs.pop(attr.ino, None)
                self._maps.pop(attr.ino, None)
            return False
        if item is not None and item[0].version > attr.version:
            return False
        mapped = self._maps.get(attr.ino)
        if mapped is not None and mapped[2] != attr.version:
            del self._maps[attr.ino]
        if len(self._attrs) >= self.max_items:
            self._attrs.clear()
        self._attrs[attr.ino] = (attr, time.monotonic())
        return True

    def put_entry(self, parent: int, name: bytes, attr: Attr, ticket: int) -> None:
        """Keep ``name`` in ``parent`` naming ``attr``'s inode, and the attributes, each
        unless it may be out of date (read with ``ticket``)."""
        self.put_attr(attr, ticket)
        if self.enabled and self._may_fill((parent, name), ticket):
            if len(self._entries) >= self.max_items:
                self._entries.clear()
            self._entries[(parent, name)] = (attr.ino, time.monotonic())

    def absent(self, parent: int, name: bytes) -> bool:
        """Whether ``name`` is known not to exist in ``parent`` (complete listing, fresh)."""
        item = self._listings.get(parent) if self.enabled else None
        if item is None or not self._fresh(item[1]):
            return False
        return name not in item[0]

    def put_listing(self, parent: int, names: set[bytes], seen: int | None = None) -> None:
        """Record every name of ``parent``, as a full readdir (or an mkdir) showed it.

        ``seen`` is :attr:`changes` when the request that read the names was
        sent: if any entry changed since (an event, or a change of this node's,
        may have overtaken the reply), the names may be stale and are not kept.
        """
        if not self.enabled or (seen is not None and seen != self.changes):
            return
        if len(names) > MAX_LISTED_NAMES:
            self.drop_listing(parent)
            return
        self._forget_listing(parent)
        listings = self._listings
        while listings and (
            self._listed + len(names) > MAX_LISTED_NAMES or len(listings) >= self.max_items // 10
        ):
            self._forget_listing(next(iter(listings)))  # the oldest
        listings[parent] = [names, time.monotonic()]
        self._listed += len(names)

    def _forget_listing(self, parent: int) -> None:
        item = self._listings.pop(parent, None)
        if item is not None:
            self._listed -= len(item[0])

    def _touch_listing(self, parent: int) -> set[bytes] | None:
        """The names of ``parent`` if listed, now seen anew (newest in the order)."""
        item = self._listings.pop(parent, None)
        if item is None:
            return None
        item[1] = time.monotonic()
        self._listings[parent] = item
        names: set[bytes] = item[0]
        return names

    def add_name(self, parent: int, name: bytes) -> None:
        """This node made ``name`` in ``parent``: a listing of it stays complete."""
        names = self._touch_listing(parent)
        if names is not None and name not in names:
            while self._listed >= MAX_LISTED_NAMES:
                oldest = next(iter(self._listings))
                self._forget_listing(oldest)
                if oldest == parent:
                    return
            names.add(name)
            self._listed += 1

    def remove_name(self, parent: int, name: bytes) -> None:
        """This node removed ``name`` from ``parent``: a listing of it stays complete."""
        names = self._touch_listing(parent)
        if names is not None and name in names:
            names.discard(name)
            self._listed -= 1

    def drop_listing(self, parent: int) -> None:
        self.changes += 1
        self._forget_listing(parent)

    def block_map(self, ino: int, first: int, last: int) -> tuple[list[bytes | None], int] | None:
        """Cached block map values for indexes first..last and the file size, if all cached."""
        item = self._maps.get(ino) if self.enabled else None
        if item is None or not self._fresh(item[3]):
            return None
        entries, size, _, _ = item
        try:
            return [entries[idx] for idx in range(first, last + 1)], size
        except KeyError:
            return None

    def put_block_map(
        self,
        ino: int,
        first: int,
        values: list[bytes | None],
        size: int,
        version: int,
        ticket: int,
    ) -> None:
        """Remember entries of ``m:INO`` from index ``first`` on (None: a hole), read
        with the inode's ``size`` and ``version`` by a request sent with ``ticket``.

        Windows read at different places of one file add up (a random reader
        soon has the map of the parts it reads), as long as the version they
        came with stays the same: a newer version means the file changed and
        the older entries go (an older one is not kept). They all go with the
        inode's attributes, and expire ``ttl`` after the first of them was read.
        """
        if not self.enabled or not self._may_fill(ino, ticket):
            return
        known = self._attrs.get(ino)
        if known is not None and known[0].version > version:
            return
        item = self._maps.get(ino)
        if item is not None and item[2] > version:
            return
        if item is None or item[2] != version or not self._fresh(item[3]):
            if len(self._maps) >= self.max_items // 10:
                self._maps.clear()
            item = ({}, size, version, time.monotonic())
            self._maps[ino] = item
        entries = item[0]
        if len(entries) + len(values) > MAX_MAP_ENTRIES:
            entries.clear()
        entries.update(enumerate(values, start=first))

    def drop_attr(self, ino: int, exempt: int = 0) -> None:
        """``ino`` changed: its attributes and map go, and replies to requests sent
        before now may not bring them back (but for the one with ticket ``exempt``)."""
        self._dropped(ino, exempt)
        self._maps.pop(ino, None)
        self._attrs.pop(ino, None)

    def drop_entry(self, parent: int, name: bytes, exempt: int = 0) -> None:
        """As :meth:`drop_attr`, for the entry ``name`` in ``parent``."""
        self.changes += 1
        self._dropped((parent, name), exempt)
        self._entries.pop((parent, name), None)

    def clear(self) -> None:
        self.changes += 1
        self._clock += 1
        self._floor = self._clock
        self._drops.clear()
        self._exempt.clear()
        self._attrs.clear()
        self._entries.clear()
        self._listings.clear()
        self._listed = 0
        self._maps.clear()
