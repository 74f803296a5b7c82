"""Encodes and decodes block objects: one codec byte, then the payload.

Pure and synchronous (no Redis, no event loop): callers move big batches to a
thread. Blocks up to ``MIN_COMPRESS`` bytes, and blocks whose sample shows they
will not shrink, are stored raw, so incompressible data costs one cheap probe.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

RAW = 0
ZLIB = 1

CODECS = {"raw": RAW, "zlib": ZLIB}
MIN_COMPRESS = 1024
"""Blocks of this many bytes or fewer are stored raw (the seed compresses blocks over 1 KiB)."""

PROBE_SIZE = 4096
PROBE_RATIO = 0.92
"""A block whose first PROBE_SIZE bytes do not shrink below this ratio is stored raw."""


class CorruptObject(ValueError):
    """An object in Redis could not be decoded (unknown codec byte or bad payload)."""


def encode(data: bytes, codec: int = ZLIB, level: int = 1) -> bytes:
    """Return the stored form of ``data``: compressed when that saves space, else raw."""
    if codec == ZLIB and len(data) > MIN_COMPRESS and _worth_compressing(data, level):
        packed = zlib.compress(data, level)
        if len(packed) < len(data):
            return bytes((ZLIB,)) + packed
    return bytes((RAW,)) + data


def _worth_compressing(data: bytes, level: int) -> bool:
    """Probe a sample: random data is recognised at the cost of 4 KiB, not 64 KiB."""
    if len(data) <= PROBE_SIZE * 2:
        return True
    sample = data[:PROBE_SIZE]
    return len(zlib.compress(sample, level)) < PROBE_SIZE * PROBE_RATIO


def decode(stored: bytes) -> bytes:
    """Return the logical bytes of a stored object; raise CorruptObject when unreadable."""
    if not stored:
        raise CorruptObject("empty object")
    kind = stored[0]
    if kind == RAW:
        return stored[1:]
    if kind == ZLIB:
        try:
            return zlib.decompress(stored[1:])
        except zlib.error as exc:
            raise CorruptObject(f"zlib payload does not decompress: {exc}") from exc
    raise CorruptObject(f"unknown codec byte {kind}")


def encode_many(blocks: Sequence[bytes], codec: int, level: int) -> list[bytes]:
    """Encode a batch (one thread hop for a whole flush)."""
    return [encode(b, codec, level) for b in blocks]


def decode_many(stored: Sequence[bytes]) -> list[bytes | CorruptObject]:
    """Decode a batch; a corrupt object becomes its exception instead of failing the batch."""
    out: list[bytes | CorruptObject] = []
    for item in stored:
        try:
            out.append(decode(item))
        except CorruptObject as exc:
            out.append(exc)
    return out
