"""The command line: ``redisfuse COMMAND`` and ``python -m redisfuse.fuse MOUNTPOINT``.

User mistakes raise UsageError; ``main`` prints its one line to stderr and exits
with its code (listed in the README). Tracebacks go to the DEBUG log only.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from .. import bench
from . import flock_cmd, fstab, stats_view
from .errors import EXIT_FAILURE, EXIT_FUSE, EXIT_MOUNTPOINT, EXIT_USAGE, UsageError
from .loops import DEFAULT_EVENT_LOOP, EVENT_LOOPS

log = logging.getLogger("redisfuse")

MIB = 1 << 20
BACKGROUND_READY_S = 30.0


def _add_redis_arguments(parser: argparse.ArgumentParser, volume_option: bool = True) -> None:
    redis = parser.add_argument_group("Redis")
    redis.add_argument(
        "--redis-url",
        help="redis://, rediss:// (TLS), unix:// or redis+sentinel://H:P[,H:P]/MASTER[/DB] "
        "URL (overrides host/port/db); put no password in it (ps shows it): see "
        "REDISFUSE_REDIS_PASSWORD",
    )
    redis.add_argument("--redis-host", help="Redis host (default localhost)")
    redis.add_argument("--redis-port", type=int, help="Redis port (default 6379)")
    redis.add_argument("--redis-db", type=int, help="Redis database number (default 0)")
    redis.add_argument("--redis-user", help="Redis ACL user (default: the URL's, or 'default')")
    redis.add_argument(
        "--redis-password",
        help="Redis password; visible to every user in ps, so prefer "
        "$REDISFUSE_REDIS_PASSWORD (or $REDIS_PASSWORD) or --redis-password-file; never logged",
    )
    redis.add_argument(
        "--redis-password-file", metavar="PATH", help="read the Redis password from this file"
    )
    redis.add_argument("--redis-tls-ca", metavar="PATH", help="CA file to verify a TLS server with")
    redis.add_argument(
        "--redis-tls-cert", metavar="PATH", help="client certificate for TLS (with --redis-tls-key)"
    )
    redis.add_argument("--redis-tls-key", metavar="PATH", help="the client certificate's key")
    if volume_option:
        redis.add_argument(
            "--volume", default="default", help="volume name inside Redis (default: default)"
        )
    redis.add_argument(
        "--redis-read-timeout",
        "--redis-timeout",
        dest="redis_read_timeout",
        type=_positive,
        default=5.0,
        metavar="S",
        help="a Redis request with no reply for this long is sent again, as after a lost "
        "connection (default 5; --redis-timeout is its old name)",
    )
    redis.add_argument(
        "--redis-retry-deadline",
        type=float,
        default=30.0,
        metavar="S",
        help="while Redis is unreachable or not answering, a request retries this long, "
        "then fails with EIO: no request waits longer than this plus one read timeout "
        "(default 30)",
    )


def _positive(text: str) -> float:
    """A number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def parse_size(text: str) -> int:
    """``10G``, ``512M``, ``1.5T`` or plain bytes (binary units, an optional ``iB``/``B``)."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1:] if raw[-1:] in _SIZE_UNITS and raw[-1:] else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 10G or 512M)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a size cannot be negative: {text!r}")
    return int(value * _SIZE_UNITS[unit])


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``:PORT`` (every interface) or ``PORT`` (127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r} (try 127.0.0.1:9567)")
    return host or "0.0.0.0", number


def _add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mountpoint", help="existing empty directory to mount the volume on")
    _add_redis_arguments(parser)
    fuse = parser.add_argument_group("mount")
    fuse.add_argument("--read-only", action="store_true", help="mount read-only")
    fuse.add_argument(
        "--replicas",
        type=int,
        default=0,
        metavar="N",
        help="fsync and close return once the writes reached N Redis replicas "
        "(Redis WAIT; default 0: acknowledged by the master only, see README)",
    )
    fuse.add_argument(
        "--replica-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="with --replicas, fsync/close fail with EIO after waiting this long (default 10)",
    )
    fuse.add_argument("--allow-other", action="store_true", help="let other users access the mount")
    fuse.add_argument(
        "-o",
        dest="fuse_options",
        action="append",
        default=[],
        metavar="OPT[,OPT]",
        help="raw FUSE mount options (repeatable)",
    )
    fuse.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=DEFAULT_EVENT_LOOP,
        help="event loop serving FUSE requests: trio (the backend reached through "
        "trio-asyncio), asyncio or uvloop (backend awaited directly); default "
        f"{DEFAULT_EVENT_LOOP}, see README",
    )
    fuse.add_argument(
        "--background",
        action="store_true",
        help="detach once the mount is ready (default: stay in the foreground)",
    )
    tuning = parser.add_argument_group("caches and timeouts")
    tuning.add_argument(
        "--attr-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds attributes may be cached when a change event is lost "
        "(events invalidate sooner; default 10)",
    )
    tuning.add_argument(
        "--entry-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds names may be cached when a change event is lost (default 10)",
    )
    tuning.add_argument(
        "--negative-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds 'no such name' may be cached when an event is lost "
        "(default 10; 0 turns negative caching off)",
    )
    tuning.add_argument(
        "--read-ahead",
        type=int,
        default=1024,
        metavar="KIB",
        help="kernel read-ahead for the mount in KiB, set when running as root (default 1024)",
    )
    tuning.add_argument(
        "--session-timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="a mount silent this long is declared dead and its open files "
        "released by other mounts (default 60)",
    )
    tuning.add_argument(
        "--cache-size",
        type=int,
        default=64,
        metavar="MIB",
        help="size of the block cache in MiB (default 64)",
    )
    tuning.add_argument(
        "--write-buffer",
        type=int,
        default=4,
        metavar="MIB",
        help="buffered writes per file before a commit, in MiB (default 4)",
    )
    tuning.add_argument(
        "--quota",
        type=parse_size,
        metavar="SIZE",
        help="set the volume's size limit, kept in Redis for every mount (e.g. 10G; "
        "0 removes it); df reports it, writes past it fail with ENOSPC",
    )
    tuning.add_argument(
        "--inode-quota",
        type=int,
        metavar="N",
        help="set the volume's limit on files and directories (0 removes it)",
    )
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--debug",
        action="store_true",
        help="log at DEBUG, tracing every FUSE request with its result and latency",
    )
    logs.add_argument("--log-file", metavar="PATH", help="also write the log to this file")
    logs.add_argument(
        "--metrics",
        type=parse_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (PORT alone: on "
        "127.0.0.1, :PORT on every interface; needs the metrics extra); redisfuse stats "
        "works without it",
    )
    logs.add_argument(
        "--log-metrics",
        type=float,
        default=0.0,
        metavar="S",
        help="log a one-line summary of the mount's counters every S seconds",
    )


def mount_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Mount a RedisFUSE volume (all data and metadata live in Redis)."
    )
    _add_mount_arguments(parser)
    return parser


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="redisfuse", description="RedisFUSE: a filesystem in Redis."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    mount = sub.add_parser(
        "mount", help="mount a volume", description=mount_parser("x").description
    )
    _add_mount_arguments(mount)
    umount = sub.add_parser("umount", help="unmount a mounted volume (flushes buffered writes)")
    umount.add_argument("mountpoint")
    umount.add_argument("--lazy", "-z", action="store_true", help="detach even if busy")
    status = sub.add_parser("status", help="show the volume's sessions, usage and settings")
    _add_redis_arguments(status)
    gc = sub.add_parser("gc", help="reclaim dead sessions, freed inodes and replaced objects")
    _add_redis_arguments(gc)
    gc.add_argument(
        "--session-timeout",
        type=float,
        default=None,
        metavar="S",
        help="also count sessions silent this long as dead (default: only "
        "sessions past their own declared timeout)",
    )
    gc.add_argument(
        "--grace",
        type=float,
        default=60.0,
        metavar="S",
        help="delete replaced data older than this (default 60: a reader may still "
        "hold an older block map); 0 frees all of it now, when space is short",
    )
    stats_view.add_arguments(
        sub.add_parser(
            "stats",
            help="show a mount's operations, latency, Redis round trips, cache hits and "
            "throughput per second, live",
        )
    )
    acl = sub.add_parser(
        "acl", help="print the Redis ACL rule of a user that can use exactly one volume"
    )
    acl.add_argument("volume", help="the volume the user may use")
    acl.add_argument("--user", help="ACL user name (default: redisfuse-VOLUME)")
    bench.add_arguments(sub.add_parser("bench", help="run the benchmark workloads in a directory"))
    fsck = sub.add_parser("fsck", help="check the volume's consistency (and repair it)")
    _add_redis_arguments(fsck)
    fsck.add_argument(
        "--repair", action="store_true", help="fix what is found (run it while the volume is quiet)"
    )
    dump = sub.add_parser(
        "dump",
        help="write a volume to a file (docs/dump-format.md)",
        description="Write VOLUME to FILE ('-': stdout); each file is consistent even "
        "while the volume is in use.",
    )
    dump.add_argument("volume", metavar="VOLUME", help="volume name inside Redis")
    dump.add_argument("file", metavar="FILE", help="dump file to write, or - for stdout")
    _add_redis_arguments(dump, volume_option=False)
    load = sub.add_parser(
        "load",
        help="restore a dump into an empty volume",
        description="Restore FILE ('-': stdin) into VOLUME, which must be empty (or new).",
    )
    load.add_argument("file", metavar="FILE", help="dump file to read, or - for stdin")
    load.add_argument("volume", metavar="VOLUME", help="volume name inside Redis")
    _add_redis_arguments(load, volume_option=False)
    flock = sub.add_parser(
        "flock",
        help="run a command holding one of the volume's distributed locks (like flock(1))",
        description="Run COMMAND while holding the volume's distributed lock LOCK, "
        "renewed while it runs and released when it exits; exits with its status.",
    )
    flock_cmd.add_arguments(flock)
    _add_redis_arguments(flock)
    return parser


def setup_logging(debug: bool, log_file: str | None) -> None:
    """INFO (or DEBUG) to stderr, plus a file if asked; the library itself adds no handlers."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as exc:
            raise UsageError(
                f"cannot open log file {log_file}: {exc.strerror}", EXIT_USAGE
            ) from exc
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    if not debug:
        logging.getLogger("trio_asyncio").setLevel(logging.WARNING)
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)


def _redis_options(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ..backend import RedisOptions
    from ..backend.private_server import ensure_private_redis, tcp_answers

    explicit = any(
        v is not None for v in (args.redis_url, args.redis_host, args.redis_port, args.redis_db)
    )
    host = args.redis_host or "localhost"
    port = args.redis_port if args.redis_port is not None else 6379
    url = args.redis_url
    if not explicit and not tcp_answers(host, port):
        url, started = ensure_private_redis()
        log.info(
            "no Redis on %s:%d: %s private redis-server at %s (append-only file kept there)",
            host,
            port,
            "started a" if started else "using the",
            url,
        )
    replica_timeout = getattr(args, "replica_timeout", 10.0)
    return RedisOptions(
        url=url,
        host=host,
        port=port,
        db=args.redis_db or 0,
        username=args.redis_user,
        password=_redis_password(args),
        read_timeout=args.redis_read_timeout,
        retry_deadline=args.redis_retry_deadline,
        tls_ca=args.redis_tls_ca,
        tls_cert=args.redis_tls_cert,
        tls_key=args.redis_tls_key,
        replicas=getattr(args, "replicas", 0),
        replica_timeout=replica_timeout,
    )


PASSWORD_ENV = ("REDISFUSE_REDIS_PASSWORD", "REDIS_PASSWORD")


def _redis_password(args: argparse.Namespace) -> str | None:
    """The password from --redis-password-file, the environment, or (discouraged) argv."""
    if args.redis_password_file:
        try:
            with open(args.redis_password_file, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(
                f"cannot read password file {args.redis_password_file}: {exc.strerror}",
                EXIT_USAGE,
            ) from exc
    if args.redis_password is not None:
        log.warning(
            "--redis-password is visible to every local user (ps); "
            "use $REDISFUSE_REDIS_PASSWORD or --redis-password-file"
        )
        return str(args.redis_password)
    return next((os.environ[k] for k in PASSWORD_ENV if os.environ.get(k)), None)


def _background(argv: Sequence[str], mountpoint: str) -> int:
    """Start the mount as a detached child and return once it is mounted (or failed)."""
    child_argv = [sys.executable, "-m", "redisfuse.fuse", *(a for a in argv if a != "--background")]
    child = subprocess.Popen(
        child_argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + BACKGROUND_READY_S
    while time.monotonic() < deadline:
        if os.path.ismount(mountpoint):
            if child.stderr is not None:
                child.stderr.close()
            return 0
        code = child.poll()
        if code is not None:
            err = child.stderr.read().decode(errors="replace") if child.stderr else ""
            sys.stderr.write(err)
            return code or EXIT_FAILURE
        time.sleep(0.05)
    raise UsageError(
        f"mount at {mountpoint} was not ready after {BACKGROUND_READY_S:.0f} s", EXIT_FAILURE
    )


def _mount(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.metrics is not None:
        from . import prometheus

        prometheus.require()
    try:
        from . import mount
    except ImportError as exc:
        raise UsageError(
            f"the FUSE frontend needs the fuse extra ({exc.name} is missing): "
            "pip install 'redisfuse[fuse]'",
            EXIT_FUSE,
        ) from exc
    if args.background:
        mount.check_fuse()
        mount.check_mountpoint(args.mountpoint)
        return _background(argv, args.mountpoint)
    setup_logging(args.debug, args.log_file)
    config = mount.MountConfig(
        mountpoint=os.path.abspath(args.mountpoint),
        redis=_redis_options(args),
        volume=args.volume,
        read_only=args.read_only,
        allow_other=args.allow_other,
        fuse_options=args.fuse_options,
        attr_timeout=args.attr_timeout,
        entry_timeout=args.entry_timeout,
        negative_timeout=args.negative_timeout,
        cache_bytes=args.cache_size * MIB,
        write_buffer_bytes=args.write_buffer * MIB,
        session_timeout=args.session_timeout,
        read_ahead_kb=args.read_ahead,
        quota_bytes=args.quota,
        quota_inodes=args.inode_quota,
        event_loop=args.event_loop,
        metrics_address=args.metrics,
        log_metrics=args.log_metrics,
    )
    mount.run(config)
    return 0


def _umount(args: argparse.Namespace) -> int:
    if not os.path.ismount(args.mountpoint):
        raise UsageError(f"{args.mountpoint} is not mounted", EXIT_MOUNTPOINT)
    cmd = ["fusermount3", "-u", *(["-z"] if args.lazy else []), args.mountpoint]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise UsageError(
            result.stderr.strip() or f"fusermount3 failed ({result.returncode})", EXIT_MOUNTPOINT
        )
    return 0


def _run(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        return int(fn(*args))
    except UsageError as exc:
        log.debug("usage error", exc_info=True)
        print(f"redisfuse: {exc.message}", file=sys.stderr)  # noqa: T201
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _volume_command(args: argparse.Namespace) -> int:
    """status, gc, fsck, dump and load: backend work on plain asyncio, no FUSE needed."""
    import asyncio

    from . import admin, backup

    setup_logging(False, None)
    if args.command in ("dump", "load"):
        command = backup.dump if args.command == "dump" else backup.load
        return asyncio.run(command(args, _redis_options(args)))
    return asyncio.run(admin.run(args.command, args, _redis_options(args)))


def _flock(args: argparse.Namespace) -> int:
    """The command runs on plain asyncio beside the lock's renewal; no FUSE needed."""
    import asyncio

    command = flock_cmd.command_of(args)
    setup_logging(False, None)
    logging.getLogger().setLevel(logging.WARNING)  # its output is the command's
    return asyncio.run(flock_cmd.run(args, _redis_options(args), command))


def fuse_main(argv: Sequence[str] | None = None) -> int:
    """``python -m redisfuse.fuse MOUNTPOINT [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = mount_parser("python -m redisfuse.fuse").parse_args(argv)
    return _run(_mount, args, argv)


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _helper_mount(argv: Sequence[str]) -> int:
    """``redisfuse SOURCE DIR -o OPTS``, as mount(8) runs it through mount.fuse3 (fstab.py)."""
    translation = fstab.translate(argv, mount_parser("redisfuse"))
    fstab.apply_env(translation.env)
    args = mount_parser("redisfuse").parse_args(translation.argv)
    return _mount(args, translation.argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``redisfuse COMMAND ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = main_parser()
    if fstab.is_helper_call(argv, _commands(parser)):
        return _run(_helper_mount, argv)
    args = parser.parse_args(argv)
    if args.command == "mount":
        return _run(_mount, args, argv[1:])
    if args.command == "umount":
        return _run(_umount, args)
    if args.command == "flock":
        return _run(_flock, args)
    if args.command == "bench":
        return bench.run_from_args(args)
    if args.command == "stats":
        return _run(stats_view.run, args)
    if args.command == "acl":
        from . import admin

        return _run(admin.print_acl, args, os.environ.get(PASSWORD_ENV[0]))
    return _run(_volume_command, args)
