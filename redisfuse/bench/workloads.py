"""The workloads: each a function over paths that does one kind of I/O and returns a Figure.

Also the data they write (random and text pools) and the kernel cache drop
that makes a read "cold". Standard library only: no Redis, no FUSE, so the
same functions measure any directory. The order they run in, and the scratch
directory around them, belong to ``suite.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sysconfig
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .model import DEFAULT_TIME_LIMIT_S, DROP_CACHES, MIB, POOL_BYTES, POOL_STRIDE, Figure


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
