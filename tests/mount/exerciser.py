"""A file exerciser in the manner of fsx: random operations on one file, each checked.

fsx (from xfstests and LTP) writes, reads, truncates, maps and reopens one file at
random offsets and compares every read with a copy kept in memory. This is the
same idea in Python, for the mount tests (no fsx package exists for Debian, and
fsx is not ours to copy): operations are drawn from a seeded generator, so a
failure names the seed and the step that reproduce it.

Shortcuts: one process, one file descriptor at a time (reopened now and then);
shared mappings are only read (a mapping written on one node is not coherent
with the mount's write buffer, see README); the page cache is dropped with
posix_fadvise, so that reads reach the mount rather than the kernel's copy.
"""

from __future__ import annotations

import mmap
import os
import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Exerciser:
    """Random writes, reads, truncates, syncs, cache drops, mapped reads and reopens."""

    path: Path
    seed: int
    max_size: int = 6 << 20
    """Writes and truncates stay below this offset."""
    max_write: int = 256 << 10
    model: bytearray = field(default_factory=bytearray)
    log: list[str] = field(default_factory=list)
    """The operations so far, newest last (shown when a check fails)."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def close(self) -> None:
        os.close(self.fd)

    def _fail(self, what: str) -> None:
        recent = "\n  ".join(self.log[-15:])
        raise AssertionError(f"seed {self.seed}, step {len(self.log)}: {what}\n  {recent}")

    def _check_size(self, size: int, how: str) -> None:
        if size != len(self.model):
            self._fail(f"{how} says {size} bytes, the model {len(self.model)}")

    def _check_bytes(self, got: bytes, offset: int, how: str) -> None:
        want = bytes(self.model[offset : offset + len(got)])
        if len(got) != len(want) or got != want:
            bad = next((i for i, (g, w) in enumerate(zip(got, want, strict=False)) if g != w), 0)
            self._fail(
                f"{how} at {offset}: {len(got)} bytes, byte {offset + bad} differs "
                f"(model holds {len(want)} there)"
            )

    def write(self) -> None:
        offset = self.rng.randrange(self.max_size - 1)
        length = self.rng.randrange(1, min(self.max_write, self.max_size - offset) + 1)
        data = self.rng.randbytes(length)
        self.log.append(f"write {offset} +{length}")
        os.pwrite(self.fd, data, offset)
        if len(self.model) < offset:
            self.model.extend(bytes(offset - len(self.model)))
        self.model[offset : offset + length] = data

    def read(self) -> None:
        if not self.model:
            return
        offset = self.rng.randrange(len(self.model))
        length = self.rng.randrange(1, self.max_write + 1)
        self.log.append(f"read {offset} +{length}")
        got = os.pread(self.fd, length, offset)
        if len(got) != min(length, len(self.model) - offset):
            self._fail(f"read at {offset} of {length} returned {len(got)} bytes")
        self._check_bytes(got, offset, "read")

    def truncate(self) -> None:
        size = self.rng.randrange(self.max_size)
        self.log.append(f"truncate {size}")
        os.ftruncate(self.fd, size)
        del self.model[size:]
        self.model.extend(bytes(size - len(self.model)))

    def stat(self) -> None:
        self.log.append("fstat and stat")
        self._check_size(os.fstat(self.fd).st_size, "fstat")
        self._check_size(os.stat(self.path).st_size, "stat")

    def sync(self) -> None:
        self.log.append("fsync")
        os.fsync(self.fd)

    def drop_cache(self) -> None:
        self.log.append("drop page cache")
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def mapread(self) -> None:
        if not self.model:
            return
        offset = self.rng.randrange(len(self.model)) & ~(mmap.ALLOCATIONGRANULARITY - 1)
        length = min(self.rng.randrange(1, self.max_write + 1), len(self.model) - offset)
        self.log.append(f"mapread {offset} +{length}")
        with mmap.mmap(self.fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset) as m:
            self._check_bytes(m[:], offset, "mapped read")

    def reopen(self) -> None:
        self.log.append("close and open")
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)

    def run(self, steps: int) -> None:
        """``steps`` operations, weighted towards writes and reads; a full check last."""
        ops = [self.write] * 6 + [self.read] * 5 + [self.stat] * 2
        ops += [self.truncate, self.sync, self.drop_cache, self.mapread, self.reopen]
        for _ in range(steps):
            self.rng.choice(ops)()
        self.stat()
        self.drop_cache()
        got = os.pread(self.fd, len(self.model) + 1, 0)
        self._check_size(len(got), "a read of everything")
        self._check_bytes(got, 0, "the final read")
