"""``redisfuse flock LOCK -- COMMAND``: run a command under a volume's distributed lock.

Like flock(1), but the lock lives in the volume's Redis, so it excludes holders
on every machine, not just this one. Needs only the backend (no FUSE, no
mount): it opens the volume, takes the lock (renewed for as long as the
command runs), runs the command, forwards signals to it, releases the lock and
exits with the command's status. It holds no lock logic of its own
(``backend/lock.py`` does), and formats no key.

LOCK is either a path inside the volume (it starts with ``/``; the file is
created empty when missing, as flock(1) creates its lock file, and the lock is
the one ``Volume.lock(path)`` takes in the library) or a bare name (no file:
``Volume.named_lock(name)``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from ..backend import NotFound, RedisOptions, Volume, open_volume
from ..backend.lock import Lock, LockLost, LockTimeout
from ..errors import FSError
from .errors import EXIT_FAILURE, EXIT_USAGE, UsageError, startup_error

log = logging.getLogger(__name__)

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""Signals passed on to the command (SIGINT only when it did not come from the terminal)."""

STOP_GRACE_S = 5.0
"""How long a command whose lock was lost gets after SIGTERM before SIGKILL."""

EXIT_NOT_EXECUTABLE = 126
EXIT_NOT_FOUND = 127


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flock options (the Redis options are added by the CLI, as for other commands)."""
    parser.add_argument(
        "lock",
        metavar="LOCK",
        help="a path in the volume (starts with /; created empty if missing) or a lock name",
    )
    parser.add_argument(
        "argv", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run"
    )
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument(
        "-n",
        "--nonblock",
        action="store_true",
        help="fail (exit with the conflict code) at once if the lock is held",
    )
    wait.add_argument(
        "-w",
        "--timeout",
        type=float,
        metavar="S",
        help="fail (exit with the conflict code) if the lock is not taken within S seconds",
    )
    parser.add_argument(
        "-E",
        "--conflict-exit-code",
        type=int,
        default=1,
        metavar="N",
        help="exit code when the lock is busy (-n) or the wait timed out (-w); default 1",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=10.0,
        metavar="S",
        help="lease of the lock: renewed every S/3 while the command runs; if this "
        "process dies, others can take the lock S seconds later (default 10)",
    )


def command_of(args: argparse.Namespace) -> list[str]:
    """The command to run, without the ``--`` that separates it; a UsageError if none."""
    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError(
            "flock needs a command to run: redisfuse flock LOCK -- COMMAND", EXIT_USAGE
        )
    return command


@dataclass
class _Signals:
    """What the signal watcher knows: the running command, and a signal that came first."""

    proc: anyio.abc.Process | None = None
    early: int | None = None


def _from_terminal(signum: int) -> bool:
    """Whether a SIGINT was most likely typed at our terminal (the kernel then sent it
    to the whole foreground process group, the command included: not sent twice)."""
    if signum != signal.SIGINT:
        return False
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


async def _watch_signals(
    receiver: AsyncIterator[signal.Signals], state: _Signals, scope: anyio.CancelScope
) -> None:
    """Forward signals to the command; before it runs, a signal ends the wait for the lock."""
    async for signum in receiver:
        if state.proc is None:
            state.early = signum
            scope.cancel()
            return
        if state.proc.returncode is None and not _from_terminal(signum):
            log.debug("forwarding %s to the command", signal.Signals(signum).name)
            state.proc.send_signal(signum)


@contextlib.asynccontextmanager
async def _hold(vol: Volume, args: argparse.Namespace) -> AsyncIterator[Lock]:
    """Take the lock LOCK names, waiting as -n/-w say."""
    timeout = 0.0 if args.nonblock else (math.inf if args.timeout is None else args.timeout)
    name: str = args.lock
    if name.startswith("/"):
        try:
            await vol.stat(name, follow_symlinks=False)
        except NotFound:
            try:
                async with await vol.open(name, "ab"):
                    pass  # created empty, as flock(1) creates its lock file
            except FSError as exc:
                raise UsageError(f"cannot create lock file {name}: {exc.strerror}") from exc
        lock_cm = vol.lock(name, ttl=args.ttl, timeout=timeout)
    else:
        if not name:
            raise UsageError("the lock name is empty", EXIT_USAGE)
        lock_cm = vol.named_lock(name, ttl=args.ttl, timeout=timeout)
    async with lock_cm as held:
        yield held


async def _run_command(command: Sequence[str], state: _Signals) -> int:
    """Run the command with our stdin/stdout/stderr; its exit status (128+N if killed by N)."""
    try:
        proc = await anyio.open_process(list(command), stdin=None, stdout=None, stderr=None)
    except FileNotFoundError:
        sys.stderr.write(f"redisfuse flock: {command[0]}: command not found\n")
        return EXIT_NOT_FOUND
    except PermissionError:
        sys.stderr.write(f"redisfuse flock: {command[0]}: permission denied\n")
        return EXIT_NOT_EXECUTABLE
    state.proc = proc
    try:
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            # Cancelled: the lock was lost (or Redis failed) while the command ran.
            with anyio.CancelScope(shield=True):
                proc.terminate()
                with anyio.move_on_after(STOP_GRACE_S):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    return code if code >= 0 else 128 - code


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``exc`` or the first exception of type ``kind`` inside (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _find(inner, kind)
        if found is not None:
            return found
    return None


async def _locked(args: argparse.Namespace, options: RedisOptions, command: list[str]) -> int:
    state = _Signals()
    code = EXIT_FAILURE
    with anyio.open_signal_receiver(*FORWARDED) as receiver:
        async with open_volume(volume=args.volume, options=options) as vol:
            async with anyio.create_task_group() as tasks:
                # The session heartbeat, as a mount runs it, so a long command's
                # session is not taken for dead by the other nodes.
                tasks.start_soon(vol.inodes.maintain)
                tasks.start_soon(_watch_signals, receiver, state, tasks.cancel_scope)
                async with _hold(vol, args):
                    code = await _run_command(command, state)
                tasks.cancel_scope.cancel()
    if state.early is not None:
        return 128 + state.early
    return code


async def run(args: argparse.Namespace, options: RedisOptions, command: list[str]) -> int:
    """Take the lock, run the command, release; the command's exit status."""
    try:
        return await _locked(args, options, command)
    except BaseException as exc:
        if _find(exc, LockTimeout) is not None:
            waited = "is held" if args.nonblock else f"was not free within {args.timeout:g} s"
            sys.stderr.write(f"redisfuse flock: lock {args.lock} {waited}\n")
            return int(args.conflict_exit_code)
        lost = _find(exc, LockLost)
        if lost is not None:
            raise UsageError(
                f"lost lock {args.lock} while the command ran (it was stopped): {lost}",
                EXIT_FAILURE,
            ) from exc
        usage = _find(exc, UsageError)
        if isinstance(usage, UsageError):
            raise usage from exc
        failed = _find(exc, FSError)
        if isinstance(failed, FSError):
            raise startup_error(failed) from exc
        raise
