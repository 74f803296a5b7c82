"""``mount -t fuse.redisfuse SOURCE DIR -o OPTS``: the mount(8) helper form of the CLI.

mount(8) runs ``/sbin/mount.fuse3`` for a type ``fuse.redisfuse``; that helper
drops the options meant for mount(8) itself (``_netdev``, ``noauto``,
``nofail``, ``user``...), adds ``dev,suid`` unless ``nodev``/``nosuid`` were
given, and runs ``/bin/sh -c "redisfuse SOURCE DIR -o OPTS"``. libmount starts
helpers without PATH, so that shell looks ``redisfuse`` up in its default
path (``/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin``). It
expects the program to return once the filesystem is mounted.

This module only translates: it turns SOURCE and the options into the
arguments of ``redisfuse mount DIR --background ...`` (which returns once the
mount is ready and leaves the filesystem running in the background). It owns
no mount logic.

SOURCE is one of (the README has the table):

- ``redis://[USER@]HOST[:PORT]/VOLUME`` or ``.../DB/VOLUME`` (``rediss://``
  too), a password in the URL is handed over in the environment, not on a
  command line ``ps`` shows;
- ``unix:///path/redis.sock`` (the volume as ``-o volume=NAME``);
- ``VOLUME@HOST[:PORT][/DB]``;
- ``VOLUME`` (Redis from the options, or the default the mount command uses).

Options named like the mount command's long options, with ``_`` or ``-``
(``event_loop=trio``, ``cache_size=128``, ``debug``, ``allow_other``,
``volume=V``, ``redis_url=U``...), become those options; ``log=PATH`` is
``--log-file``, ``ro`` is ``--read-only``, ``password_file=PATH`` reads the
Redis password from a file. Everything else goes to FUSE as ``-o`` (``noatime``,
``nodev``...), where an unknown option fails the mount with libfuse's message.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..backend.transport import redact
from .errors import EXIT_USAGE, UsageError

IGNORED = frozenset(
    {"", "defaults", "auto", "noauto", "user", "users", "nouser", "nofail", "_netdev", "rw"}
)
"""Options for mount(8) itself (mount.fuse3 drops most of them; we may be run directly)."""

IGNORED_PREFIXES = ("x-", "comment=", "setuid=")
ALIASES = {"ro": "read_only", "log": "log_file"}
"""Short option names for fstab lines, to the mount command's long ones."""

NOT_FROM_FSTAB = frozenset({"help", "background", "redis_password", "fuse_options"})
"""Mount options that make no sense in (or must not be written into) an fstab line."""

URL_SCHEMES = (
    "redis://", "rediss://", "unix://",
    "redis+sentinel://", "rediss+sentinel://", "redis+cluster://", "rediss+cluster://",
)  # fmt: skip
"""Sources that are a Redis URL; the volume is the path's last part (``redis``,
``rediss``), else ``?volume=V`` or the ``volume=`` mount option (a Sentinel
URL's path names the master and database; a cluster's has none)."""


@dataclass
class Translation:
    """What an fstab mount becomes: ``redisfuse mount`` arguments and its environment."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _long_options(parser: argparse.ArgumentParser) -> dict[str, tuple[str, bool]]:
    """``name -> (--option, takes a value)`` for every long option of the mount command."""
    found: dict[str, tuple[str, bool]] = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                name = flag[2:].replace("-", "_")
                if name not in NOT_FROM_FSTAB:
                    found[name] = (flag, action.nargs != 0)
    return found


def parse_source(source: str) -> tuple[str | None, str | None, str | None]:
    """Split SOURCE into (Redis URL without password, password, volume); None: not given."""
    if source in ("", "none", "redisfuse"):
        return None, None, None
    if source.startswith(URL_SCHEMES):
        return _parse_url(source)
    if "@" in source:
        volume, _, address = source.rpartition("@")
        if not volume or not address:
            raise UsageError(f"bad source {source!r}: expected VOLUME@HOST[:PORT][/DB]", EXIT_USAGE)
        return _parse_url(f"redis://{address}", volume)
    if "/" in source or ":" in source:
        raise UsageError(
            f"bad source {source!r}: expected redis://HOST:PORT/VOLUME, VOLUME@HOST:PORT "
            "or a volume name",
            EXIT_USAGE,
        )
    return None, None, source


def _parse_url(url: str, volume: str | None = None) -> tuple[str, str | None, str | None]:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    volume = query.pop("volume", volume)
    path = parts.path
    if parts.scheme in ("redis", "rediss"):
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) == 2 or (len(segments) == 1 and volume is not None):
            db, segments = segments[0], segments[1:]
        else:
            db = "0"
        if len(segments) > 1 or not db.isdigit():
            raise UsageError(f"bad source {url!r}: the path is /VOLUME or /DB/VOLUME", EXIT_USAGE)
        if segments:
            volume = segments[0]
        path = f"/{db}"
    password = parts.password
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.scheme == "unix":  # urlunsplit would drop the empty host: unix:/path
        clean = f"unix://{netloc}{path}" + (f"?{urlencode(query)}" if query else "")
    else:
        clean = urlunsplit((parts.scheme, netloc, path, urlencode(query), ""))
    return clean, password, volume


def _split_options(raw: Sequence[str]) -> list[str]:
    """mount.fuse3's ``-o`` groups, split at commas (a comma in an fstab option value
    cannot be told apart; none of ours takes one)."""
    return [opt.strip() for group in raw for opt in group.split(",")]


def translate(argv: Sequence[str], parser: argparse.ArgumentParser) -> Translation:
    """``SOURCE DIR [-o OPTS]`` (as mount.fuse3 calls us) to ``redisfuse mount`` arguments.

    ``parser`` is the mount command's parser, whose long options the fstab
    options may name.
    """
    args = _helper_parser().parse_args(list(argv))
    if args.mountpoint.startswith("/dev/fd/"):
        raise UsageError(
            "the drop_privileges option (a pre-opened /dev/fd/N) is not supported", EXIT_USAGE
        )
    url, password, volume = parse_source(args.source)
    known = _long_options(parser)
    out = [args.mountpoint, "--background"]
    env: dict[str, str] = {}
    if url is not None:
        out += ["--redis-url", url]
    if password:
        env["REDIS_PASSWORD"] = password
    if volume is not None:
        out += ["--volume", volume]
    fuse: list[str] = []
    for opt in _split_options(args.options):
        name, has_value, value = opt.partition("=")
        key = ALIASES.get(name, name.replace("-", "_"))
        if opt in IGNORED or opt.startswith(IGNORED_PREFIXES):
            continue
        if key == "password_file":
            env["REDIS_PASSWORD"] = _read_password(value)
        elif key in ("redis_password", "password"):
            raise UsageError(
                "do not write the Redis password into fstab (it is world-readable): "
                "use password_file=PATH",
                EXIT_USAGE,
            )
        elif key in known:
            flag, takes_value = known[key]
            if takes_value != bool(has_value):
                need = "needs a value" if takes_value else "takes no value"
                raise UsageError(f"mount option {name} {need}", EXIT_USAGE)
            out += [flag, value] if takes_value else [flag]
        else:
            fuse.append(opt)
    # The source as written in fstab (commas escaped for libfuse's option parser),
    # so that /proc/mounts matches the line and ``mount -a`` skips it once mounted.
    fuse.append("fsname=" + redact(args.source).replace("\\", "\\\\").replace(",", "\\,"))
    out += ["-o", ",".join(fuse)]
    return Translation(out, env)


def _read_password(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read password_file {path}: {exc.strerror}", EXIT_USAGE) from exc


def _helper_parser() -> argparse.ArgumentParser:
    """The helper's command line; mount's own flags (-n, -s, -v, -t TYPE) are accepted
    and ignored, as mount.fuse3 does."""
    parser = argparse.ArgumentParser(
        prog="redisfuse SOURCE",
        description="mount(8) helper form: redisfuse SOURCE MOUNTPOINT [-o OPTIONS]",
    )
    parser.add_argument("source")
    parser.add_argument("mountpoint")
    parser.add_argument("-o", dest="options", action="append", default=[])
    for flag in ("-n", "-s", "-v", "-f"):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-t", dest="fstype", help=argparse.SUPPRESS)
    return parser


def is_helper_call(argv: Sequence[str], commands: Sequence[str]) -> bool:
    """Whether ``redisfuse ARGS`` is the mount helper form (its first word is no command)."""
    return len(argv) >= 2 and argv[0] not in commands and not argv[0].startswith("-")


def apply_env(env: dict[str, str]) -> None:
    """Hand the password to the background mount through its environment."""
    os.environ.update(env)
