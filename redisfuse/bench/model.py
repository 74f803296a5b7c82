"""What the benchmark suite measures: the workload table, the sizes, and one figure's shape.

Pure data, shared by the workloads, the suite, the report and both command
lines (``redisfuse bench`` and ``benchmarks/run.py``); no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
POOL_BYTES = 32 * MIB
POOL_STRIDE = MIB + 4099
"""Offset step between successive requests taken from a pool (prime-ish, unaligned)."""
DEFAULT_TIME_LIMIT_S = 60.0
DROP_CACHES = "/proc/sys/vm/drop_caches"


@dataclass(frozen=True)
class Sizes:
    """How big each workload is; ``quick()`` scales the defaults down about 4-5x."""

    file_mib: int = 1024
    """Sequential write/read and random reads: one file of this size."""
    text_mib: int = 256
    """Compressible text: one file of this size, written then read cold."""
    request_kib: int = 1024
    """Request size of the sequential workloads."""
    random_reads: int = 10_000
    """Random 4 KiB reads (cold) over the big file."""
    small_files: int = 10_000
    """Small files (create, stat, ls -l, read, rename, unlink), all in one directory."""
    small_size: int = 4096
    dirs: int = 2_000
    """Directories made (then removed) in one directory."""
    tree_files: int = 0
    """Files of the tar archive (0: the whole tree)."""

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            file_mib=256,
            text_mib=64,
            random_reads=2_000,
            small_files=2_000,
            dirs=400,
            tree_files=1_000,
        )


@dataclass(frozen=True)
class Workload:
    """A row of the results: key, what it measures, and which way is better."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = True


WORKLOADS: tuple[Workload, ...] = (
    Workload("seq_write", "sequential write, incompressible", "MiB/s"),
    Workload("seq_read_cold", "sequential read, cold", "MiB/s"),
    Workload("seq_read_warm", "sequential read, warm", "MiB/s"),
    Workload("random_read_4k", "random 4 KiB reads, cold", "ops/s"),
    Workload("text_write", "sequential write, compressible text", "MiB/s"),
    Workload("text_read_cold", "sequential read of text, cold", "MiB/s"),
    Workload("create_4k", "small files: create+write 4 KiB", "ops/s"),
    Workload("stat", "small files: stat, names cached", "ops/s"),
    Workload("stat_cold", "small files: stat, cold (names dropped)", "ops/s"),
    Workload("ls_l", "ls -l of the small-file directory, cold", "s", higher_is_better=False),
    Workload("read_4k_cold", "small files: open+read+close, cold", "ops/s"),
    Workload("rename", "small files: rename", "ops/s"),
    Workload("unlink", "small files: unlink", "ops/s"),
    Workload("mkdir", "mkdir", "ops/s"),
    Workload("rmdir", "rmdir", "ops/s"),
    Workload("tar_extract", "tar -x of a source tree", "s", higher_is_better=False),
)
WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)


@dataclass
class Figure:
    """One measurement: ``value`` in ``unit`` over ``seconds`` for ``amount`` of work."""

    value: float | None
    unit: str
    seconds: float
    amount: float
    complete: bool = True
    """False when the workload stopped at its time limit (value covers what was done)."""
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
