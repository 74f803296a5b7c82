"""Loads the Lua scripts and runs them, alone or inside a pipeline.

Each script in ``lua/`` starts with a header naming its KEYS, ARGV and return
value; ``lib.lua`` is prepended to all of them (after a first ``#!lua flags=...``
line, which Redis 7 reads as the script's flags: ``allow-oom`` marks the few
scripts that must run on a full Redis because they free space or only rewrite
what exists: release, unlink, setattr, and the session's own). Scripts are loaded once with
SCRIPT LOAD and called by EVALSHA; after a Redis restart forgets them
(NOSCRIPT) they are loaded again and the call repeated, which is safe because
a script that failed with NOSCRIPT did nothing. redis-py's own ``Script`` is not
used because inside a pipeline it costs an extra SCRIPT EXISTS round trip on
every execute.
"""

from __future__ import annotations

import errno
import hashlib
import os
from importlib import resources
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from ..errors import FSError, error_for
from .cluster import is_cluster, load_scripts

SCRIPT_NAMES = (
    "format",
    "lookup",
    "create",
    "link",
    "unlink",
    "rename",
    "setattr",
    "commit",
    "open",
    "release",
    "xattr_set",
    "read_map",
    "stat_many",
    "lock",
    "extend",
    "unlock",
    "heartbeat",
    "session_id",
    "register",
)

STALE = -1
"""Status a script returns when the caller's view of the namespace was out of date."""

FENCED = -2
"""Status a script returns when the caller's session was declared dead (and reclaimed)."""


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")


class Stale(Exception):
    """A script found that a name no longer points where the caller thought."""

    def __init__(self, detail: list[Any]) -> None:
        super().__init__("stale namespace view")
        self.detail = detail


ONCE_SCRIPTS = frozenset(
    {"create", "link", "unlink", "rename", "setattr", "commit", "open", "release", "xattr_set"}
)
"""Scripts that change the volume on behalf of a session: each call carries a
request id and is run at most once, and only for a live session (lib.lua's
once(); the caller appends the keys and arguments, see Context.prepare)."""


def _assemble(name: str, lib: str, own: str) -> str:
    """``lib`` + the script's own text, keeping a shebang (Redis 7 script flags) first,
    with the body of an ONCE_SCRIPTS script wrapped in once()."""
    shebang = ""
    if own.startswith("#!"):
        shebang, _, own = own.partition("\n")
        shebang += "\n"
    if name in ONCE_SCRIPTS:
        own = f"return once(function()\n{own}\nend)\n"
    return f"{shebang}{lib}\n{own}"


class Fenced(FSError):
    """This node's session was declared dead by another node, which released what it
    held: the request was refused (EIO), and the node must start a new session."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EIO, f"refused ({name}): this node's session was declared dead")


class Scripts:
    """The volume's Lua scripts, by name, with their SHA1 digests."""

    def __init__(self) -> None:
        lib = _source("lib")
        self.sources = {name: _assemble(name, lib, _source(name)) for name in SCRIPT_NAMES}
        self.shas = {n: hashlib.sha1(s.encode()).hexdigest() for n, s in self.sources.items()}

    async def load(self, client: Redis) -> None:
        """Load every script into Redis (after connect, and after NOSCRIPT); on a
        cluster into every master."""
        if is_cluster(client):
            await load_scripts(client, {self.shas[n]: src for n, src in self.sources.items()})
            return
        pipe = client.pipeline(transaction=False)
        for source in self.sources.values():
            pipe.script_load(source)
        await pipe.execute()

    async def call(
        self, client: Redis, name: str, keys: list[str], args: list[Any], *, check_: bool = True
    ) -> list[Any]:
        """Run one script and return its result, raising FSError for an errno status
        (unless ``check_`` is false: then the caller checks)."""
        try:
            result = await client.evalsha(self.shas[name], len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            result = await client.evalsha(self.shas[name], len(keys), *keys, *args)
        return check(name, result) if check_ else cast(list[Any], result)

    def queue(self, pipe: Pipeline, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue a script call on a pipeline; check its result with :func:`check`."""
        # execute_command: redis-py's cluster pipeline blocks its evalsha() method,
        # though it routes EVALSHA by the script's keys like any keyed command.
        pipe.execute_command("EVALSHA", self.shas[name], len(keys), *keys, *args)

    async def execute(
        self, client: Redis, pipe: Pipeline, *, raise_on_error: bool = True
    ) -> list[Any]:
        """Execute a pipeline holding script calls, reloading scripts on NOSCRIPT.

        With ``raise_on_error`` the first failed command's error is raised;
        without it, failed commands appear as exceptions among the results.
        """
        commands = _queued(pipe)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in results):
            await self.load(client)
            again = client.pipeline(transaction=False)
            for args, options in commands:
                again.execute_command(*args, **options)
            results = await again.execute(raise_on_error=False)
        if not raise_on_error:
            return results
        for r in results:
            if isinstance(r, Exception):
                raise r
        return results


def _queued(pipe: Pipeline) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """The commands queued on a pipeline (plain or cluster), to send them again."""
    if is_cluster(getattr(pipe, "cluster_client", None)):
        queue = pipe._execution_strategy._command_queue  # type: ignore[attr-defined]
        return [(tuple(c.args), dict(c.kwargs)) for c in queue]
    return [(tuple(args), dict(options)) for args, options in pipe.command_stack]


def check(name: str, result: list[Any]) -> list[Any]:
    """Turn a script's status into an exception; return the result on success."""
    status = int(result[0])
    if status == 0:
        return result
    if status == STALE:
        raise Stale(result[1:])
    if status == FENCED:
        raise Fenced(name)
    raise error_for(status, f"{os.strerror(status)} ({name})")
