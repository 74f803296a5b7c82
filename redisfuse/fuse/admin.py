"""``redisfuse status|gc|fsck``: volume administration on plain asyncio (no mount needed).

Prints human-readable results on stdout; errors become UsageError (one line).
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import sys

from ..backend import RedisOptions, open_volume
from ..backend.acl import acl_rule
from ..backend.fsck import fsck
from ..errors import FSError
from .errors import EXIT_FAILURE, EXIT_USAGE, UsageError, startup_error
from .progress import Progress


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


async def run(command: str, args: argparse.Namespace, options: RedisOptions) -> int:
    try:
        # None of them formats a volume that is not there (a mistyped name, or a
        # volume that vanished): they say so (exit code 6).
        async with open_volume(
            volume=args.volume, options=options, read_only=command == "status", create=False
        ) as vol:
            fs = vol.inodes
            if command == "status":
                return await _status(vol.name, fs)
            if command == "gc":
                dead = await fs.sessions.dead(args.session_timeout)
                # A bar on a terminal only: the plain output below stays as it was.
                with Progress("gc", len(dead) + 1, "steps", plain=False) as bar:
                    for n, sid in enumerate(dead, 1):
                        await fs.sessions.reclaim(sid)
                        bar.update(n, f"reclaimed session {sid}")
                    purged = await fs.gc(grace_ms=int(args.grace * 1000))
                    bar.update(len(dead) + 1)
                _out(f"reclaimed {len(dead)} dead sessions, deleted {purged} replaced objects")
                return 0
            with Progress("fsck", None, "inodes", plain=False) as bar:
                report = await fsck(
                    fs.ctx.client,
                    vol.name,
                    repair=args.repair,
                    progress=lambda done, total: _advance(bar, done, total),
                )
            _out(str(report))
            if report.ok:
                _out("volume is consistent")
                return 0
            if args.repair:
                after = await fsck(fs.ctx.client, vol.name)
                _out("after repair: " + ("consistent" if after.ok else str(after)))
                return 0 if after.ok else EXIT_FAILURE
            return EXIT_FAILURE
    except FSError as exc:
        raise startup_error(exc) from exc


def _advance(bar: Progress, done: int, total: int) -> None:
    bar.set_total(total)  # known once fsck has listed the inodes
    bar.update(done)


async def _status(name: str, fs) -> int:  # type: ignore[no-untyped-def]
    settings = fs.settings
    usage = await fs.statfs()
    _out(f"volume      {name}")
    _out(f"uuid        {settings.uuid}")
    _out(
        f"format      {settings.format_version}, block size {settings.block_size}, "
        f"codec {settings.codec}"
    )
    _out(f"created     {_when(settings.created_ns // 1_000_000)}")
    _out(f"usage       {usage.inodes_used} inodes, {usage.bytes_used} bytes")
    quota = f" (quota {usage.quota_bytes} bytes)" if usage.quota_bytes else ""
    _out(f"room        {usage.bytes_free} of {usage.bytes_total} bytes free{quota}")
    if usage.quota_inodes:
        _out(f"inodes      quota {usage.quota_inodes}")
    sessions = [s for s in await fs.sessions.list() if s.sid != fs.ctx.session]
    _out(f"sessions    {len(sessions)}")
    for s in sessions:
        _out(
            f"  {s.sid:>5}  {s.host}:{s.pid}  {s.mountpoint or '-'}  v{s.version}  "
            f"loop {s.event_loop or '-'}  "
            f"heartbeat {_when(s.heartbeat_ms)}  open {s.open_inodes}  retries {s.retries}"
        )
    return 0


def print_acl(args: argparse.Namespace, password: str | None) -> int:
    """``redisfuse acl VOLUME``: the ACL SETUSER line, with $REDISFUSE_REDIS_PASSWORD or a
    fresh random password (print it once, hand it to the mounts through the environment)."""
    user = args.user or f"redisfuse-{args.volume}"
    if any(c.isspace() for c in user) or (password and any(c.isspace() for c in password)):
        raise UsageError("the user name and password cannot contain white space", EXIT_USAGE)
    try:
        _out(acl_rule(args.volume, user, password or secrets.token_urlsafe(24)))
    except ValueError as exc:
        raise UsageError(str(exc), EXIT_USAGE) from exc
    return 0
