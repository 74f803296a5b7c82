"""A size-bounded LRU of decoded block objects.

Objects never change once written, so an entry never needs invalidating; the
only question is memory, which ``capacity`` bytes bounds.
"""

from __future__ import annotations

from collections import OrderedDict


class ObjectCache:
    """Decoded blocks by object id, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.size = 0
        self.hits = 0
        self.misses = 0
        self.hit_bytes = 0
        self._items: OrderedDict[int, bytes] = OrderedDict()

    def __repr__(self) -> str:
        return (
            f"<ObjectCache {len(self._items)} objects {self.size}/{self.capacity} bytes "
            f"hits={self.hits} misses={self.misses}>"
        )

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, obj: object) -> bool:
        """Whether ``obj`` is cached (not counted as a hit or a miss)."""
        return obj in self._items

    def get(self, obj: int) -> bytes | None:
        data = self._items.get(obj)
        if data is None:
            self.misses += 1
            return None
        self.hits += 1
        self.hit_bytes += len(data)
        self._items.move_to_end(obj)
        return data

    def put(self, obj: int, data: bytes) -> None:
        if len(data) > self.capacity:
            return
        old = self._items.pop(obj, None)
        if old is not None:
            self.size -= len(old)
        self._items[obj] = data
        self.size += len(data)
        while self.size > self.capacity:
            _, evicted = self._items.popitem(last=False)
            self.size -= len(evicted)

    def clear(self) -> None:
        """Drop every object: their ids may name other contents now (a volume that
        vanished came back restored, its objects numbered afresh)."""
        self._items.clear()
        self.size = 0
