"""Benchmark workloads over any directory: ``redisfuse bench DIR`` (and ``benchmarks/run.py``).

Each workload is a function over a directory path that returns a ``Figure``
(MiB/s, operations/s or seconds). ``run_suite`` runs them all in a fixed order
inside a scratch subdirectory, which it always removes. The module uses the
standard library only (no Redis, no FUSE), so the same code measures RedisFUSE,
the in-memory pyfuse3 filesystem of ``benchmarks/memfs.py``, tmpfs, or whatever
a user wants to compare them with.

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

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
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


def _rate(amount: float, seconds: float, unit: str, complete: bool = True, **detail: Any) -> Figure:
    return Figure(
        amount / seconds if seconds > 0 else None, unit, seconds, amount, complete, detail=detail
    )


class Deadline:
    """Stops a workload loop after ``limit`` seconds (cheap enough to test per operation)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.start = time.perf_counter()

    def expired(self) -> bool:
        return time.perf_counter() - self.start > self.limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# -- data and caches -------------------------------------------------------------


def random_pool(size: int = POOL_BYTES) -> bytes:
    """Incompressible bytes to write from."""
    return os.urandom(size)


def text_pool(size: int = POOL_BYTES) -> bytes:
    """Source code (the standard library's .py files) to write from: compresses about 4:1."""
    parts: list[bytes] = []
    total = 0
    for path in _tree_files(Path(sysconfig.get_paths()["stdlib"]), limit=0):
        if path.suffix == ".py":
            data = path.read_bytes()
            parts.append(data)
            total += len(data)
            if total >= size:
                break
    blob = b"".join(parts) or b"def f(x):\n    return x + 1\n"
    return (blob * (size // len(blob) + 1))[:size]


def _chunks(pool: bytes, request: int) -> Callable[[int], memoryview]:
    """Request ``i`` of ``request`` bytes from ``pool``, at offsets stepping by POOL_STRIDE."""
    view = memoryview(pool)
    span = len(pool) - request
    return lambda i: view[(i * POOL_STRIDE) % span :][:request]


def drop_caches(files: Iterable[Path | str] = ()) -> bool:
    """Drop the kernel's cached pages of ``files``, then all clean caches if we may.

    Returns True when the global drop (page cache, dentries, inodes) happened,
    False when only the files' pages could be dropped (not root).
    """
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    if not os.access(DROP_CACHES, os.W_OK):
        return False
    os.sync()
    try:
        with open(DROP_CACHES, "w", encoding="ascii") as knob:
            knob.write("3\n")
    except OSError:
        return False
    return True


# -- the workloads: each a function over paths, returning one Figure ---------------------


def seq_write(
    path: Path, size: int, pool: bytes, request: int = MIB, limit: float = DEFAULT_TIME_LIMIT_S
) -> Figure:
    """Write ``size`` bytes in ``request``-byte writes, then fsync and close: MiB/s."""
    chunk = _chunks(pool, request)
    clock = Deadline(limit)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    done = 0
    complete = True
    try:
        i = 0
        while done < size:
            if clock.expired():
                complete = False
                break
            done += os.write(fd, chunk(i)[: size - done])
            i += 1
        os.fsync(fd)
    finally:
        os.close(fd)
    return _rate(done / MIB, clock.elapsed(), "MiB/s", complete, bytes=done)


def seq_read(path: Path, request: int = MIB, limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """Read the whole file in ``request``-byte reads into one reused buffer: MiB/s."""
    buf = bytearray(request)
    clock = Deadline(limit)
    fd = os.open(path, os.O_RDONLY)
    done = 0
    complete = True
    try:
        while True:
            if clock.expired():
                complete = False
                break
            n = os.readv(fd, [buf])
            if n == 0:
                break
            done += n
    finally:
        os.close(fd)
    return _rate(done / MIB, clock.elapsed(), "MiB/s", complete, bytes=done)


def random_reads(
    path: Path, count: int, size: int = 4096, seed: int = 5, limit: float = DEFAULT_TIME_LIMIT_S
) -> Figure:
    """``count`` reads of ``size`` bytes at random aligned offsets of one open file: ops/s."""
    blocks = max(os.stat(path).st_size // size, 1)
    rng = random.Random(seed)
    offsets = [rng.randrange(blocks) * size for _ in range(count)]
    buf = bytearray(size)
    clock = Deadline(limit)
    fd = os.open(path, os.O_RDONLY)
    done = 0
    try:
        for off in offsets:
            if clock.expired():
                break
            os.preadv(fd, [buf], off)
            done += 1
    finally:
        os.close(fd)
    return _rate(done, clock.elapsed(), "ops/s", done == count, reads=done, read_size=size)


def create_files(
    directory: Path, count: int, size: int, pool: bytes, limit: float = DEFAULT_TIME_LIMIT_S
) -> tuple[Figure, list[str]]:
    """Create ``count`` files of ``size`` bytes (create, write, close): ops/s, and their paths."""
    chunk = _chunks(pool, size)
    paths = [str(directory / f"f{i:06d}") for i in range(count)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    clock = Deadline(limit)
    done = 0
    for i, path in enumerate(paths):
        if clock.expired():
            break
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, chunk(i))
        finally:
            os.close(fd)
        done += 1
    return _rate(done, clock.elapsed(), "ops/s", done == count, files=done), paths[:done]


def stat_files(paths: Sequence[str], limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """``os.stat`` each path once: ops/s."""
    clock = Deadline(limit)
    done = 0
    for path in paths:
        if clock.expired():
            break
        os.stat(path)
        done += 1
    return _rate(done, clock.elapsed(), "ops/s", done == len(paths), files=done)


def read_files(paths: Sequence[str], size: int, limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """Open, read whole and close each file, checking its length: ops/s."""
    clock = Deadline(limit)
    done = 0
    for path in paths:
        if clock.expired():
            break
        fd = os.open(path, os.O_RDONLY)
        try:
            got = len(os.read(fd, size + 1))
        finally:
            os.close(fd)
        if got != size:
            raise OSError(f"{path}: read {got} bytes, expected {size}")
        done += 1
    return _rate(done, clock.elapsed(), "ops/s", done == len(paths), files=done)


def rename_files(
    paths: Sequence[str],
    limit: float = DEFAULT_TIME_LIMIT_S,
) -> tuple[Figure, list[str]]:
    """Rename each file within its directory: ops/s, and the new paths (and those not renamed)."""
    clock = Deadline(limit)
    out: list[str] = []
    for path in paths:
        if clock.expired():
            break
        head, _, tail = path.rpartition("/")
        new = f"{head}/r{tail}"
        os.rename(path, new)
        out.append(new)
    done = len(out)
    return (
        _rate(done, clock.elapsed(), "ops/s", done == len(paths), files=done),
        out + list(paths[done:]),
    )


def unlink_files(paths: Sequence[str], limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """Unlink each file: ops/s."""
    clock = Deadline(limit)
    done = 0
    for path in paths:
        if clock.expired():
            break
        os.unlink(path)
        done += 1
    return _rate(done, clock.elapsed(), "ops/s", done == len(paths), files=done)


def make_dirs(
    directory: Path,
    count: int,
    limit: float = DEFAULT_TIME_LIMIT_S,
) -> tuple[Figure, list[str]]:
    """mkdir ``count`` directories in ``directory``: ops/s, and their paths."""
    clock = Deadline(limit)
    out: list[str] = []
    for i in range(count):
        if clock.expired():
            break
        path = str(directory / f"d{i:06d}")
        os.mkdir(path)
        out.append(path)
    return _rate(len(out), clock.elapsed(), "ops/s", len(out) == count, dirs=len(out)), out


def remove_dirs(paths: Sequence[str], limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """rmdir each (empty) directory: ops/s."""
    clock = Deadline(limit)
    done = 0
    for path in paths:
        if clock.expired():
            break
        os.rmdir(path)
        done += 1
    return _rate(done, clock.elapsed(), "ops/s", done == len(paths), dirs=done)


def _run_timed(argv: Sequence[str], limit: float, **detail: Any) -> Figure:
    """Run a program to completion (or kill it at ``limit``): seconds."""
    env = dict(os.environ, LC_ALL="C")
    start = time.perf_counter()
    try:
        subprocess.run(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            timeout=limit,
            check=True,
        )
    except subprocess.TimeoutExpired:
        elapsed = time.perf_counter() - start
        return Figure(elapsed, "s", elapsed, 1, complete=False, detail=detail)
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise OSError(f"{argv[0]} failed ({exc.returncode}): {message[0]}") from None
    elapsed = time.perf_counter() - start
    return Figure(elapsed, "s", elapsed, 1, detail=detail)


def ls_l(directory: Path, limit: float = DEFAULT_TIME_LIMIT_S) -> Figure:
    """``ls -l DIRECTORY`` (output discarded): seconds; scandir + lstat where ls is missing."""
    if shutil.which("ls") is None:
        start = time.perf_counter()
        for entry in os.scandir(directory):
            entry.stat(follow_symlinks=False)
        elapsed = time.perf_counter() - start
        return Figure(elapsed, "s", elapsed, 1, detail={"program": "scandir+lstat"})
    return _run_timed(["ls", "-l", str(directory)], limit, program="ls -l")


def build_archive(tree: Path, archive: Path, limit_files: int = 0) -> dict[str, int]:
    """Write an uncompressed tar of ``tree`` (its first ``limit_files`` files); returns counts."""
    files = 0
    size = 0
    dirs: set[Path] = set()
    with tarfile.open(archive, "w") as tar:
        for path in _tree_files(tree, limit_files):
            rel = path.relative_to(tree)
            for parent in reversed(rel.parents[:-1]):
                if parent not in dirs:
                    dirs.add(parent)
                    tar.add(tree / parent, arcname=str(parent), recursive=False)
            tar.add(path, arcname=str(rel), recursive=False)
            files += 1
            size += path.lstat().st_size
    return {"files": files, "dirs": len(dirs), "bytes": size}


def tar_extract(
    archive: Path, dest: Path, limit: float = DEFAULT_TIME_LIMIT_S, **detail: Any
) -> Figure:
    """``tar -xf ARCHIVE -C DEST`` (Python's tarfile when tar is missing): seconds."""
    dest.mkdir(exist_ok=True)
    if shutil.which("tar") is None:
        start = time.perf_counter()
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.12, and backported to 3.10.12/3.11.4
                tar.extractall(dest, filter="data")
            else:
                tar.extractall(dest)
        elapsed = time.perf_counter() - start
        return Figure(elapsed, "s", elapsed, 1, detail=dict(detail, program="tarfile"))
    return _run_timed(["tar", "-xf", str(archive), "-C", str(dest)], limit, program="tar", **detail)


_SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", "lib-dynload"}


def _tree_files(tree: Path, limit: int) -> list[Path]:
    """Regular files and symlinks of a source tree in a stable order, skipping build output."""
    out: list[Path] = []
    for root, dirnames, filenames in os.walk(tree):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("config-")
        )
        for name in sorted(filenames):
            out.append(Path(root) / name)
            if limit and len(out) >= limit:
                return out
    return out


# -- the suite -------------------------------------------------------------------


@dataclass
class Options:
    """Everything ``run_suite`` needs besides the directory."""

    sizes: Sizes = field(default_factory=Sizes)
    time_limit: float = DEFAULT_TIME_LIMIT_S
    drop: bool = True
    """Drop kernel caches before cold workloads (False: only label them cold)."""
    only: frozenset[str] | None = None
    tree: Path | None = None
    """Source tree for the tar workload (default: the Python standard library)."""
    progress: Callable[[str], None] | None = None


class Suite:
    """One pass of every workload inside a scratch directory under ``root``."""

    def __init__(self, root: Path, options: Options) -> None:
        self.root = root
        self.options = options
        self.sizes = options.sizes
        self.limit = options.time_limit
        self.results: dict[str, Figure] = {}
        self.caches_dropped = True
        self._random: bytes | None = None
        self._text: bytes | None = None

    @property
    def random_data(self) -> bytes:
        if self._random is None:
            self._random = random_pool()
        return self._random

    @property
    def text_data(self) -> bytes:
        if self._text is None:
            self._text = text_pool()
        return self._text

    def _wanted(self, *keys: str) -> bool:
        return self.options.only is None or any(k in self.options.only for k in keys)

    def _drop(self, *files: Path | str, many: bool = False) -> None:
        """Drop caches before a cold workload.

        With ``many`` (thousands of small files) the files are fadvised only when
        the global drop is impossible: opening each one would cost a lookup and
        an open per file on a FUSE mount, and re-cache the very names dropped.
        """
        if not self.options.drop:
            self.caches_dropped = False
            return
        if many and os.access(DROP_CACHES, os.W_OK):
            files = ()
        self.caches_dropped = drop_caches(files) and self.caches_dropped

    def _record(self, key: str, run: Callable[[], Figure]) -> Figure | None:
        """Run one workload unless excluded; record its figure or its error."""
        if self.options.only is not None and key not in self.options.only:
            return None
        try:
            figure = run()
        except OSError as exc:
            unit = next(w.unit for w in WORKLOADS if w.key == key)
            figure = Figure(None, unit, 0.0, 0, complete=False, error=str(exc))
        self.results[key] = figure
        if self.options.progress is not None:
            self.options.progress(_progress_line(key, figure))
        return figure

    def run(self) -> dict[str, Figure]:
        scratch = self.root / f"rfbench-{os.getpid()}-{secrets.token_hex(3)}"
        scratch.mkdir()
        archive_dir = Path(tempfile.mkdtemp(prefix="rfbench-tar-"))
        try:
            self._big_file(scratch)
            self._text_file(scratch)
            self._small_files(scratch)
            self._directories(scratch)
            self._tar(scratch, archive_dir)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(archive_dir, ignore_errors=True)
        return self.results

    def _big_file(self, scratch: Path) -> None:
        if not self._wanted("seq_write", "seq_read_cold", "seq_read_warm", "random_read_4k"):
            return
        big = scratch / "big.bin"
        size, request = self.sizes.file_mib * MIB, self.sizes.request_kib * 1024
        written = self._record(
            "seq_write", lambda: seq_write(big, size, self.random_data, request, self.limit)
        )
        if written is None:  # not asked for, but the reads need the file
            seq_write(big, size, self.random_data, request, self.limit)
        self._drop(big)
        self._record("seq_read_cold", lambda: seq_read(big, request, self.limit))
        self._record("seq_read_warm", lambda: seq_read(big, request, self.limit))
        self._drop(big)
        self._record(
            "random_read_4k", lambda: random_reads(big, self.sizes.random_reads, limit=self.limit)
        )
        big.unlink(missing_ok=True)

    def _text_file(self, scratch: Path) -> None:
        if not self._wanted("text_write", "text_read_cold"):
            return
        text = scratch / "text.txt"
        size, request = self.sizes.text_mib * MIB, self.sizes.request_kib * 1024
        if (
            self._record(
                "text_write", lambda: seq_write(text, size, self.text_data, request, self.limit)
            )
            is None
        ):
            seq_write(text, size, self.text_data, request, self.limit)
        self._drop(text)
        self._record("text_read_cold", lambda: seq_read(text, request, self.limit))
        text.unlink(missing_ok=True)

    def _small_files(self, scratch: Path) -> None:
        keys = ("create_4k", "stat", "stat_cold", "ls_l", "read_4k_cold", "rename", "unlink")
        if not self._wanted(*keys):
            return
        small = scratch / "small"
        small.mkdir()
        paths: list[str] = []

        def create() -> Figure:
            figure, made = create_files(
                small, self.sizes.small_files, self.sizes.small_size, self.random_data, self.limit
            )
            paths.extend(made)
            return figure

        if self._record("create_4k", create) is None:
            create()
        self._record("stat", lambda: stat_files(paths, self.limit))
        self._drop()
        self._record("stat_cold", lambda: stat_files(paths, self.limit))
        self._drop()
        self._record("ls_l", lambda: _with_detail(ls_l(small, self.limit), entries=len(paths)))
        self._drop(*paths, many=True)
        self._record("read_4k_cold", lambda: read_files(paths, self.sizes.small_size, self.limit))

        def rename() -> Figure:
            figure, renamed = rename_files(paths, self.limit)
            paths[:] = renamed
            return figure

        self._record("rename", rename)
        self._record("unlink", lambda: unlink_files(paths, self.limit))
        shutil.rmtree(small, ignore_errors=True)

    def _directories(self, scratch: Path) -> None:
        if not self._wanted("mkdir", "rmdir"):
            return
        parent = scratch / "dirs"
        parent.mkdir()
        made: list[str] = []

        def mkdir() -> Figure:
            figure, paths = make_dirs(parent, self.sizes.dirs, self.limit)
            made.extend(paths)
            return figure

        if self._record("mkdir", mkdir) is None:
            mkdir()
        self._record("rmdir", lambda: remove_dirs(made, self.limit))
        shutil.rmtree(parent, ignore_errors=True)

    def _tar(self, scratch: Path, archive_dir: Path) -> None:
        if not self._wanted("tar_extract"):
            return
        tree = self.options.tree or Path(sysconfig.get_paths()["stdlib"])
        archive = archive_dir / "tree.tar"
        counts = build_archive(tree, archive, self.sizes.tree_files)
        dest = scratch / "tree"
        self._record(
            "tar_extract", lambda: tar_extract(archive, dest, self.limit, tree=str(tree), **counts)
        )
        shutil.rmtree(dest, ignore_errors=True)


def _with_detail(figure: Figure, **detail: Any) -> Figure:
    figure.detail.update(detail)
    return figure


def format_value(value: float | None, unit: str) -> str:
    """A figure as printed in tables: seconds to the millisecond, rates to 3-4 digits."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _progress_line(key: str, figure: Figure) -> str:
    if figure.error is not None:
        return f"  {key:<16} ERROR {figure.error}"
    mark = "" if figure.complete else f"  STOPPED at the {figure.seconds:.0f} s limit"
    value = format_value(figure.value, figure.unit)
    return f"  {key:<16} {value:>12} {figure.unit:<6} ({figure.seconds:.2f} s){mark}"


def run_suite(root: Path | str, options: Options | None = None) -> dict[str, Figure]:
    """Run every workload (or ``options.only``) once in a scratch dir under ``root``."""
    return Suite(Path(root), options or Options()).run()


# -- repeats, summaries and the command line ---------------------------------------


def summarize(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median and noise: spread is (max - min) / median, in percent."""
    good = [v for v in values if v is not None]
    if not good:
        return {"median": None, "min": None, "max": None, "spread_pct": None}
    median = statistics.median(good)
    spread = (max(good) - min(good)) / median * 100 if median else None
    return {"median": median, "min": min(good), "max": max(good), "spread_pct": spread}


def run_repeated(root: Path | str, options: Options, repeat: int) -> dict[str, Any]:
    """Run the suite ``repeat`` times; return the JSON-ready report with medians and spreads."""
    runs: list[dict[str, Figure]] = []
    dropped = True
    for i in range(repeat):
        if options.progress is not None:
            options.progress(f"run {i + 1}/{repeat} in {root}")
        suite = Suite(Path(root), options)
        runs.append(suite.run())
        dropped = dropped and suite.caches_dropped
    workloads: dict[str, Any] = {}
    for w in WORKLOADS:
        figures = [r[w.key] for r in runs if w.key in r]
        if not figures:
            continue
        workloads[w.key] = {
            "label": w.label,
            "unit": w.unit,
            "higher_is_better": w.higher_is_better,
            "values": [f.value for f in figures],
            **summarize([f.value for f in figures]),
            "complete": all(f.complete for f in figures),
            "errors": [f.error for f in figures if f.error],
            "detail": figures[-1].detail,
        }
    return {
        "tool": "redisfuse bench",
        "directory": str(Path(root).resolve()),
        "repeat": repeat,
        "sizes": asdict(options.sizes),
        "time_limit_s": options.time_limit,
        "caches_dropped": dropped,
        "workloads": workloads,
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: median, unit and noise per workload."""
    lines = [f"{'workload':<40} {'median':>12} {'unit':<6} {'noise':>7}"]
    for row in report["workloads"].values():
        median = "error" if row["median"] is None else format_value(row["median"], row["unit"])
        noise = "-" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%"
        flag = "" if row["complete"] else "  (stopped at the time limit or failed)"
        lines.append(f"{row['label'][:40]:<40} {median:>12} {row['unit']:<6} {noise:>7}{flag}")
    if not report["caches_dropped"]:
        lines.append(
            "note: kernel caches could not be dropped (not root): 'cold' figures "
            "are only file-page cold"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``redisfuse bench`` (also used by ``python -m redisfuse.bench``)."""
    parser.add_argument(
        "directory", help="where to run (a scratch subdirectory is made and removed)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes: 256 MiB file, 2,000 small files ..."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="run everything N times and report medians (default 3)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=DEFAULT_TIME_LIMIT_S,
        metavar="S",
        help="stop any workload after S seconds and report what it did "
        f"(default {DEFAULT_TIME_LIMIT_S:.0f})",
    )
    parser.add_argument(
        "--only", metavar="KEY[,KEY]", help="run only these workloads: " + ", ".join(WORKLOAD_KEYS)
    )
    parser.add_argument(
        "--no-drop-caches",
        action="store_true",
        help="never drop kernel caches (cold figures are then not cold)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        metavar="DIR",
        help="source tree for the tar workload (default: Python's stdlib)",
    )
    sizes = parser.add_argument_group("sizes (override --quick and the defaults)")
    for name, help_text in (
        ("file-mib", "big file, MiB"),
        ("text-mib", "text file, MiB"),
        ("request-kib", "sequential request size, KiB"),
        ("random-reads", "random 4 KiB reads"),
        ("small-files", "small files"),
        ("small-size", "small file bytes"),
        ("dirs", "directories"),
        ("tree-files", "files in the tar archive (0: all)"),
    ):
        sizes.add_argument(f"--{name}", type=int, metavar="N", help=help_text)


def options_from_args(args: argparse.Namespace) -> Options:
    sizes = Sizes.quick() if args.quick else Sizes()
    overrides = {
        name: getattr(args, name) for name in asdict(sizes) if getattr(args, name, None) is not None
    }
    only = None
    if args.only:
        only = frozenset(k.strip() for k in args.only.split(",") if k.strip())
        unknown = only - set(WORKLOAD_KEYS)
        if unknown:
            raise SystemExit(f"redisfuse bench: unknown workload(s): {', '.join(sorted(unknown))}")
    return Options(
        sizes=replace(sizes, **overrides),
        time_limit=args.time_limit,
        drop=not args.no_drop_caches,
        only=only,
        tree=args.tree,
        progress=_to_stderr,
    )


def _to_stderr(line: str) -> None:
    """Progress goes to stderr so that stdout carries only the table."""
    print(line, file=sys.stderr, flush=True)  # noqa: T201


def run_from_args(args: argparse.Namespace) -> int:
    """``redisfuse bench``: run, print the table, write the JSON; 1 if a workload failed."""
    if not os.path.isdir(args.directory):
        print(f"redisfuse bench: {args.directory} is not a directory", file=sys.stderr)  # noqa: T201
        return 2
    report = run_repeated(args.directory, options_from_args(args), max(args.repeat, 1))
    print(format_table(report))  # noqa: T201
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    failed = any(row["errors"] or row["median"] is None for row in report["workloads"].values())
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m redisfuse.bench", description="Run the benchmark workloads in DIRECTORY."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
