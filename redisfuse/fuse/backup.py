"""``redisfuse dump|load``: copy a volume to a file (or stdout) and back, with progress.

The work is the backend's (backend/dump.py, backend/load.py); this module
opens files and the volume, shows progress on stderr and turns every failure
a user can meet (no such file, a damaged dump, a non-empty volume, Redis
unreachable) into one line and an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO

from ..backend import RedisOptions, open_volume
from ..backend.dump import dump_volume
from ..backend.dumpformat import DumpFormatError
from ..backend.load import load_volume, read_header
from ..backend.streams import AsyncReader, AsyncWriter
from ..errors import BackendUnavailable, FormatError, FSError, UnsafeRedis
from .errors import EXIT_FAILURE, EXIT_USAGE, UsageError, startup_error
from .progress import Progress, human_bytes

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _open(path: str, mode: str) -> Iterator[IO[bytes]]:
    """The dump file, or stdin/stdout for ``-``; a one-line error when it cannot be opened."""
    if path == "-":
        stream = sys.stdout.buffer if mode == "wb" else sys.stdin.buffer
        if mode == "wb" and stream.isatty():
            raise UsageError("refusing to write a dump to a terminal; redirect it", EXIT_USAGE)
        yield stream
        return
    try:
        f = open(path, mode)
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}", EXIT_FAILURE) from exc
    with f:
        yield f


def _size(f: IO[bytes]) -> int | None:
    """The size of a regular file (for a load's progress), None for a pipe."""
    try:
        st = os.fstat(f.fileno())
    except (OSError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _failure(exc: Exception, path: str) -> UsageError:
    if isinstance(exc, (BackendUnavailable, FormatError, UnsafeRedis)):
        return startup_error(exc)
    if isinstance(exc, DumpFormatError):
        return UsageError(f"{path}: {exc}", EXIT_FAILURE)
    if isinstance(exc, OSError) and not isinstance(exc, FSError):
        return UsageError(f"{path}: {exc.strerror or exc}", EXIT_FAILURE)
    return UsageError(str(exc.strerror if isinstance(exc, FSError) else exc), EXIT_FAILURE)


async def dump(args: argparse.Namespace, options: RedisOptions) -> int:
    with _open(args.file, "wb") as f:
        try:
            async with open_volume(volume=args.volume, options=options, read_only=True) as vol:
                usage = await vol.inodes.statfs()
                with Progress("dump", usage.inodes_used, "inodes") as bar:
                    stats = await dump_volume(
                        vol.inodes.ctx,
                        AsyncWriter(f),
                        lambda inodes, written: bar.update(inodes, human_bytes(written)),
                    )
        except (FSError, DumpFormatError, OSError) as exc:
            raise _failure(exc, "stdout" if args.file == "-" else args.file) from exc
    log.info(
        "dumped volume %r: %d inodes, %d more links, %d blocks, %s",
        args.volume,
        stats.inodes,
        stats.links,
        stats.blocks,
        human_bytes(stats.bytes),
    )
    return 0


async def load(args: argparse.Namespace, options: RedisOptions) -> int:
    with _open(args.file, "rb") as f:
        try:
            src = AsyncReader(f)
            header = await read_header(src)
            # A volume formatted by this load takes the dump's codec, and at the end
            # its uuid, so that dumping it again gives the same bytes.
            async with open_volume(volume=args.volume, options=options, codec=header.codec) as vol:
                with Progress("load", _size(f), "B") as bar:
                    stats = await load_volume(
                        vol.inodes.ctx,
                        src,
                        header.block_size,
                        lambda inodes, consumed: bar.update(consumed, f"{inodes} inodes"),
                        header.uuid,
                    )
        except (FSError, DumpFormatError, OSError) as exc:
            raise _failure(exc, "stdin" if args.file == "-" else args.file) from exc
    log.info(
        "loaded volume %r: %d inodes, %d more links, %d blocks",
        args.volume,
        stats.inodes,
        stats.links,
        stats.blocks,
    )
    return 0
