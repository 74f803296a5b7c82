"""Benchmark workloads over any directory: ``redisfuse bench DIR`` (and ``benchmarks/run.py``).

Each workload is a function over a directory path that returns a ``Figure``
(MiB/s, operations/s or seconds). ``run_suite`` runs them all in a fixed order
inside a scratch subdirectory, which it always removes. The package uses the
standard library only (no Redis, no FUSE), so the same code measures RedisFUSE,
the in-memory pyfuse3 filesystem of ``benchmarks/memfs.py``, tmpfs, or whatever
a user wants to compare them with.

Where things are: ``model.py`` (the workload table, sizes, ``Figure``),
``workloads.py`` (the workload functions, data pools, cache dropping),
``suite.py`` (a pass over a directory, repeats), ``report.py`` (medians, noise,
the table), ``cli.py`` (the command line).

What the figures mean, and the choices behind them:

- Writes are timed up to and including ``fsync`` and ``close``: a filesystem
  that buffers must be charged for committing what it buffered.
- "Cold" reads first drop the kernel's caches: ``posix_fadvise(DONTNEED)`` on
  the files, then ``sync`` and ``echo 3 > /proc/sys/vm/drop_caches`` when that
  is writable (root); without root only file pages are dropped, names and
  attributes stay cached, and the result says ``caches_dropped: false``. A
  filesystem's own caches (RedisFUSE's block cache) are not dropped: that is
  part of what is measured. tmpfs keeps its data in the page cache, so its
  "cold" reads are warm by nature.
- Data comes from pools built once per process: 32 MiB of random bytes
  (incompressible) and 32 MiB of the Python standard library's sources
  (text that compresses about 4:1). Successive requests start at offsets
  stepping by a prime number of bytes, so no two 1 MiB requests are equal.
- Every workload stops at ``time_limit`` seconds; a stopped figure is the rate
  over what was done and is marked incomplete, so a pathological case is
  reported instead of waited for. A failing workload (an OSError) is recorded
  with its error and the suite goes on.
"""

from __future__ import annotations

from .cli import add_arguments, main, options_from_args, run_from_args
from .model import (
    DEFAULT_TIME_LIMIT_S,
    DROP_CACHES,
    MIB,
    WORKLOAD_KEYS,
    WORKLOADS,
    Figure,
    Sizes,
    Workload,
)
from .report import format_table, format_value, summarize
from .suite import Options, Suite, run_repeated, run_suite
from .workloads import drop_caches, random_pool, seq_read, seq_write, text_pool

__all__ = [
    "DEFAULT_TIME_LIMIT_S",
    "DROP_CACHES",
    "MIB",
    "WORKLOADS",
    "WORKLOAD_KEYS",
    "Figure",
    "Options",
    "Sizes",
    "Suite",
    "Workload",
    "add_arguments",
    "drop_caches",
    "format_table",
    "format_value",
    "main",
    "options_from_args",
    "random_pool",
    "run_from_args",
    "run_repeated",
    "run_suite",
    "seq_read",
    "seq_write",
    "summarize",
    "text_pool",
]
