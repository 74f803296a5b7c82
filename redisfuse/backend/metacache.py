"""This node's cache of attributes and directory entries, kept coherent by events.

Caching is on only while an event stream is running for the volume (see
Inodes.events); otherwise every lookup goes to Redis. Entries also expire after
``ttl`` seconds, the bound on staleness when an event is lost.

Besides single entries it keeps complete listings of directories whose every
name it knows (read in full, or created empty here and changed only here
since): a lookup of a name missing from such a listing is answered "no such
name" without a round trip, which is what creating many files costs most.
Any change event about a directory drops its listing.
"""

from __future__ import annotations

import time

from .model import Attr

MAX_MAP_ENTRIES = 1 << 16
"""Block map entries kept per inode (4 GiB of a file in 64 KiB blocks, about 6 MiB)."""


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
        self._listings: dict[int, tuple[set[bytes], float]] = {}
        self._maps: dict[int, tuple[dict[int, bytes | None], int, float]] = {}
        """Per inode: block map entries by index, the size they came with, when first read."""

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return (
            f"<MetaCache {state} attrs={len(self._attrs)} entries={len(self._entries)} "
            f"hits={self.hits} misses={self.misses}>"
        )

    def _fresh(self, stamp: float) -> bool:
        return time.monotonic() - stamp < self.ttl

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

    def put_attr(self, attr: Attr) -> None:
        if self.enabled:
            if len(self._attrs) >= self.max_items:
                self._attrs.clear()
            self._attrs[attr.ino] = (attr, time.monotonic())

    def put_entry(self, parent: int, name: bytes, attr: Attr) -> None:
        if self.enabled:
            if len(self._entries) >= self.max_items:
                self._entries.clear()
            self._entries[(parent, name)] = (attr.ino, time.monotonic())
            self.put_attr(attr)

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
        if self.enabled and (seen is None or seen == self.changes):
            if len(self._listings) >= self.max_items // 10:
                self._listings.clear()
            self._listings[parent] = (names, time.monotonic())

    def add_name(self, parent: int, name: bytes) -> None:
        item = self._listings.get(parent)
        if item is not None:
            item[0].add(name)

    def remove_name(self, parent: int, name: bytes) -> None:
        item = self._listings.get(parent)
        if item is not None:
            item[0].discard(name)

    def drop_listing(self, parent: int) -> None:
        self.changes += 1
        self._listings.pop(parent, None)

    def block_map(self, ino: int, first: int, last: int) -> tuple[list[bytes | None], int] | None:
        """Cached block map values for indexes first..last and the file size, if all cached."""
        item = self._maps.get(ino) if self.enabled else None
        if item is None or not self._fresh(item[2]):
            return None
        entries, size, _ = item
        try:
            return [entries[idx] for idx in range(first, last + 1)], size
        except KeyError:
            return None

    def put_block_map(self, ino: int, first: int, values: list[bytes | None], size: int) -> None:
        """Remember entries of ``m:INO`` from index ``first`` on (None: a hole).

        Windows read at different places of one file add up (a random reader
        soon has the map of the parts it reads), as long as the size they came
        with stays the same: a different size means the file changed and the
        older entries go. They all go with the inode's attributes, and expire
        ``ttl`` after the first of them was read.
        """
        if not self.enabled:
            return
        item = self._maps.get(ino)
        if item is None or item[1] != size or not self._fresh(item[2]):
            if len(self._maps) >= self.max_items // 10:
                self._maps.clear()
            item = ({}, size, time.monotonic())
            self._maps[ino] = item
        entries = item[0]
        if len(entries) + len(values) > MAX_MAP_ENTRIES:
            entries.clear()
        entries.update(enumerate(values, start=first))

    def drop_attr(self, ino: int) -> None:
        self._maps.pop(ino, None)
        self._attrs.pop(ino, None)

    def drop_entry(self, parent: int, name: bytes) -> None:
        self.changes += 1
        self._entries.pop((parent, name), None)

    def clear(self) -> None:
        self.changes += 1
        self._attrs.clear()
        self._entries.clear()
        self._listings.clear()
        self._maps.clear()
