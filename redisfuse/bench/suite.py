"""Running the suite on a directory: every workload in a fixed order, once or repeated.

A pass happens inside a scratch subdirectory that is always removed; kernel
caches are dropped before the cold workloads; a failing workload is recorded
with its error and the pass goes on. ``run_repeated`` turns several passes into
the JSON-ready report (medians and noise) that ``report.format_table`` prints.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .model import DEFAULT_TIME_LIMIT_S, DROP_CACHES, MIB, WORKLOADS, Figure, Sizes
from .report import progress_line, summarize
from .workloads import (
    build_archive,
    create_files,
    drop_caches,
    ls_l,
    make_dirs,
    random_pool,
    random_reads,
    read_files,
    remove_dirs,
    rename_files,
    seq_read,
    seq_write,
    stat_files,
    tar_extract,
    text_pool,
    unlink_files,
)


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
    edges: Callable[[str, str], None] | None = None
    """Called as ``edges("begin", key)`` right before a workload and ``edges("end", key)``
    right after it (not after a workload that raised anything but OSError), outside
    any cache dropping: another process measures its own figures over exactly that
    window (``benchmarks/run.py``: the mount's and Redis's CPU)."""


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
        edges = self.options.edges
        if edges is not None:
            edges("begin", key)
        try:
            figure = run()
        except OSError as exc:
            unit = next(w.unit for w in WORKLOADS if w.key == key)
            figure = Figure(None, unit, 0.0, 0, complete=False, error=str(exc))
        if edges is not None:
            edges("end", key)
        self.results[key] = figure
        if self.options.progress is not None:
            self.options.progress(progress_line(key, figure))
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


def run_suite(root: Path | str, options: Options | None = None) -> dict[str, Figure]:
    """Run every workload (or ``options.only``) once in a scratch dir under ``root``."""
    return Suite(Path(root), options or Options()).run()


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
