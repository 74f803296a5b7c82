"""Runs one mount: checks, opens the volume, serves FUSE, unmounts cleanly.

Written once for every event loop (anyio for tasks, signals and threads); only
the crossing to the backend differs (``loops.py``). Start-up acquires resources
in order and releases them in reverse, also on failure: the crossing (for trio,
trio-asyncio's asyncio loop), volume, FUSE session. SIGINT and SIGTERM end the
FUSE loop; buffered writes are flushed when the volume closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib.util
import logging
import os
import shutil
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pyfuse3

from ..backend import RedisOptions, open_volume
from ..errors import FSError
from . import loops, stackdump
from .crossing import Crossing
from .errors import EXIT_FUSE, EXIT_MOUNTPOINT, EXIT_USAGE, UsageError, startup_error
from .invalidate import KernelInvalidator
from .metrics import MountMetrics, log_metrics
from .operations import Operations

log = logging.getLogger(__name__)


@dataclass
class MountConfig:
    """Everything a mount needs, as parsed from the command line."""

    mountpoint: str
    redis: RedisOptions
    volume: str = "default"
    read_only: bool = False
    allow_other: bool = False
    fuse_options: list[str] = field(default_factory=list)
    attr_timeout: float = 1.0
    entry_timeout: float = 1.0
    negative_timeout: float = 0.0
    cache_bytes: int = 64 << 20
    write_buffer_bytes: int = 4 << 20
    max_tasks: int = 64
    session_timeout: float = 60.0
    read_ahead_kb: int = 1024
    quota_bytes: int | None = None
    """Set the volume's byte quota (0 removes it; None leaves it as it is)."""
    quota_inodes: int | None = None
    event_loop: str = loops.DEFAULT_EVENT_LOOP
    metrics_address: tuple[str, int] | None = None
    """Serve Prometheus metrics at this (host, port) (needs the metrics extra)."""
    log_metrics: float = 0.0
    """Log a summary of the counters every this many seconds (0: never)."""


def check_mountpoint(path: str) -> None:
    """Refuse a mountpoint that is missing, not a directory, or already mounted."""
    if not os.path.lexists(path):
        raise UsageError(f"mountpoint {path} does not exist", EXIT_MOUNTPOINT)
    if not os.path.isdir(path):
        raise UsageError(f"mountpoint {path} is not a directory", EXIT_MOUNTPOINT)
    if os.path.ismount(path):
        raise UsageError(f"{path} is already a mountpoint", EXIT_MOUNTPOINT)


def check_fuse() -> None:
    """Refuse to start without /dev/fuse or fusermount3."""
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing: load the fuse module or install fuse3", EXIT_FUSE)
    if shutil.which("fusermount3") is None:
        raise UsageError("fusermount3 is not installed (apt install fuse3)", EXIT_FUSE)


def check_event_loop(loop: str) -> None:
    """Refuse an unknown loop, or uvloop when it is not installed."""
    if loop not in loops.EVENT_LOOPS:
        raise UsageError(
            f"unknown event loop {loop!r}; choose one of {', '.join(loops.EVENT_LOOPS)}", EXIT_USAGE
        )
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise UsageError(
            "--event-loop uvloop needs uvloop: pip install 'redisfuse[fuse]'", EXIT_USAGE
        )


def fuse_option_set(config: MountConfig) -> set[str]:
    options = set(pyfuse3.default_options)
    options.add("subtype=redisfuse")
    if config.allow_other:
        options.add("allow_other")
    if config.read_only:
        options.add("ro")
    for raw in config.fuse_options:
        options |= {opt.strip() for opt in _split_unescaped(raw) if opt.strip()}
    if not any(opt.startswith("fsname=") for opt in options):
        options.add(f"fsname=redisfuse:{config.volume}")  # what df and /proc/mounts show
    return options


def _split_unescaped(raw: str) -> list[str]:
    """``-o`` options split at commas, except escaped ones (``\\,``, as libfuse reads them)."""
    parts = [""]
    escaped = False
    for char in raw:
        if escaped:
            parts[-1] += "\\" + char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("")
        else:
            parts[-1] += char
    return parts


async def _serve(config: MountConfig) -> None:
    async with contextlib.AsyncExitStack() as stack:
        crossing = await stack.enter_async_context(loops.open_crossing(config.event_loop))
        stackdump.set_backend_loop(await crossing.call(_running_loop))
        volume_cm = open_volume(
            volume=config.volume,
            options=config.redis,
            read_only=config.read_only,
            cache_bytes=config.cache_bytes,
            write_buffer_bytes=config.write_buffer_bytes,
            mountpoint=config.mountpoint,
            session_timeout=config.session_timeout,
            metadata_ttl=config.attr_timeout,
            quota_bytes=config.quota_bytes,
            quota_inodes=config.quota_inodes,
            event_loop=config.event_loop,
        )
        try:
            volume = await crossing.call(volume_cm.__aenter__)
        except FSError as exc:
            raise startup_error(exc) from exc
        stack.push_async_exit(_shielded_exit(crossing, volume_cm))
        ops = Operations(
            volume.inodes,
            crossing,
            attr_timeout=config.attr_timeout,
            entry_timeout=config.entry_timeout,
            negative_timeout=config.negative_timeout,
        )
        invalidator = KernelInvalidator(volume.inodes, ops.boundary, ops.known)
        metrics = MountMetrics(
            config.mountpoint, config.volume, config.event_loop, volume.inodes, invalidator
        )
        ops.stats_source = metrics.encoded
        if config.metrics_address is not None:
            from . import prometheus

            stack.callback(prometheus.serve(metrics, *config.metrics_address))
        try:
            pyfuse3.init(ops, config.mountpoint, fuse_option_set(config))
        except RuntimeError as exc:
            raise UsageError(f"could not mount {config.mountpoint}: {exc}", EXIT_FUSE) from exc
        log.info(
            "mounted volume %r at %s on the %s event loop",
            config.volume,
            config.mountpoint,
            config.event_loop,
        )
        log.debug("event loop: %s", loops.describe(config.event_loop))
        unmounted = False
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_stop_on_signal)
                tasks.start_soon(invalidator.run)
                tasks.start_soon(ops.boundary.call, volume.inodes.maintain)
                if config.log_metrics > 0:
                    tasks.start_soon(log_metrics, metrics, config.log_metrics)
                tasks.start_soon(_set_read_ahead, config.mountpoint, config.read_ahead_kb)
                await pyfuse3.main(max_tasks=config.max_tasks)
                unmounted = True
                tasks.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)
            log.info("unmounted %s%s", config.mountpoint, "" if unmounted else " after a signal")


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def _shielded_exit(
    crossing: Crossing, cm: contextlib.AbstractAsyncContextManager[Any]
) -> Callable[..., Awaitable[bool | None]]:
    """Close the volume (flushing buffered writes) even while the mount is being cancelled."""

    async def exit_(*exc_info: Any) -> bool | None:
        with anyio.CancelScope(shield=True):
            suppress: bool | None = await crossing.call(cm.__aexit__, *exc_info)
        return suppress

    return exit_


def _write_read_ahead(mountpoint: str, kib: int) -> None:
    dev = os.stat(mountpoint).st_dev
    path = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"
    with open(path, "w", encoding="ascii") as f:
        f.write(str(kib))


async def _set_read_ahead(mountpoint: str, kib: int) -> None:
    """Let the kernel read ahead ``kib`` KiB (1 MiB requests); needs root, else left alone.

    Runs in a thread once the mount serves requests: the stat of the mountpoint
    it needs is itself a request to this process.
    """
    if kib <= 0:
        return
    try:
        await anyio.to_thread.run_sync(_write_read_ahead, mountpoint, kib, abandon_on_cancel=True)
    except OSError as exc:
        log.debug("could not set read_ahead_kb of %s: %s", mountpoint, exc)


async def _stop_on_signal() -> None:
    """End the FUSE loop on SIGINT/SIGTERM so the mount unmounts and flushes."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


class AbandonedReplyFilter(logging.Filter):
    """Logs pyfuse3's "fuse_reply_* failed with ENOENT" at DEBUG instead of ERROR.

    A reply fails with ENOENT when the kernel no longer waits for it: the caller
    was interrupted, or the file system was unmounted while this process still
    answered an asynchronous request (the RELEASE that follows a close(), say).
    libfuse reports nothing then ("ENOENT means the operation was interrupted",
    fuse_lowlevel.c); pyfuse3 logs an ERROR. The request was served either way.
    """

    ENOENT = os.strerror(errno.ENOENT)

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno >= logging.ERROR
            and "fuse_reply_* failed" in str(record.msg)
            and isinstance(record.args, tuple)
            and [str(a) for a in record.args] == [self.ENOENT]
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg = f"{record.msg} (the kernel no longer waited for it)"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def _usage_error_in(exc: BaseException) -> UsageError | None:
    """The UsageError inside (possibly nested) exception groups from task groups."""
    if isinstance(exc, UsageError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _usage_error_in(inner)
        if found is not None:
            return found
    return None


def run(config: MountConfig) -> None:
    """Mount and serve until unmounted or signalled (blocking)."""
    check_fuse()
    check_event_loop(config.event_loop)
    check_mountpoint(config.mountpoint)
    stackdump.install()
    pyfuse3_log = logging.getLogger("pyfuse3")
    if not any(isinstance(f, AbandonedReplyFilter) for f in pyfuse3_log.filters):
        pyfuse3_log.addFilter(AbandonedReplyFilter())
    if config.metrics_address is not None:
        from . import prometheus

        prometheus.require()
    try:
        loops.run(config.event_loop, _serve, config)
    except BaseException as exc:
        usage = _usage_error_in(exc)
        if usage is not None and usage is not exc:
            raise usage from None
        raise
