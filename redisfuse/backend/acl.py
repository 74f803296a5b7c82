"""The Redis ACL rule for a user confined to one volume; knows commands, not connections.

``redisfuse acl VOLUME`` prints it. The command list is derived from the code:
every method the backend calls on a client or pipeline, every ``redis.call``
in ``lua/*.lua``, and what redis-py itself sends on a connection. Two tests
keep it from rotting: one scans the sources for commands missing here, one
runs a mount, fsck, gc and status as that user and checks the server's
``ACL LOG`` stays empty.
"""

from __future__ import annotations

import re

from .keys import SPREAD, Keys

COMMANDS: dict[str, str] = {
    # redis-py on every connection (connect.py turns its CLIENT SETINFO off).
    "ping": "first PING, health checks, pub/sub keep-alive",
    "select": "a URL or --redis-db naming a database other than 0",
    # Opening a volume.
    "info": "server version and eviction policy at open, memory figures and policy for statfs",
    "script|load": "the Lua scripts, at open and after NOSCRIPT",
    "evalsha": "every mutating operation (lua/*.lua)",
    "eval": "--replicas on a cluster: the barrier on each master (cluster_replicas.py)",
    "multi": "pipelines with transaction=True (fsck, data reads)",
    "exec": "pipelines with transaction=True",
    # Keys read and written directly.
    "get": "symlinks, objects",
    "mget": "objects",
    "set": "objects",
    "exists": "xattrs, fsck",
    "del": "lua: deletions",
    "unlink": "objects, gc, fsck repair",
    "incr": "lua: counters",
    "incrby": "id ranges; a zero increment before WAIT (replicas.py)",
    "hget": "inodes, settings",
    "hmget": "inodes",
    "hgetall": "inodes, directories, block maps",
    "hkeys": "xattr names",
    "hvals": "fsck",
    "hlen": "directories",
    "hset": "settings, sessions",
    "hdel": "sessions, entries",
    "hexists": "lua",
    "hincrby": "lua: usage, nlink, opens",
    "zadd": "sessions, trash, reclaim, orphans",
    "zrem": "sessions, trash, reclaim, orphans",
    "zscore": "lua: session liveness",
    "zrange": "sessions",
    "zrangebyscore": "dead sessions, trash past its grace",
    "pexpire": "lua: lock renewal",
    "pttl": "lua: locks",
    "setnx": "lua: locks",
    "scan": "fsck, gc",
    "object|idletime": "fsck: age of unreferenced objects",
    # Change events.
    "publish": "change events to other sessions",
    "subscribe": "this session's change events",
    "zcard": "load: refuses a volume with other sessions",
    # Redis Cluster (redis+cluster:// URLs; cluster.py).
    "cluster": "the slot map (CLUSTER SLOTS), and whether events still reach us",
    "command": "redis-py's cluster client reads the command table to route commands",
    "script|exists": "scripts already on every master at open",
    "spublish": "change events (sharded pub/sub, in the volume's slot)",
    "ssubscribe": "this session's change events (sharded)",
    "pubsub": "whether the sharded subscription is still there",
    # Durability.
    "wait": "--replicas: fsync and close wait for replicas",
}
"""Every command a mount, fsck, gc and status send, and why (ACL names, lower case)."""

_GLOB = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    return _GLOB.sub(r"\\\1", text)


def acl_rule(volume: str, user: str, password: str) -> str:
    """``ACL SETUSER`` for ``user``: the volume's keys and channels, those commands only.

    ``reset`` first, so pasting it again over an existing user leaves nothing
    of an older rule behind; ``resetchannels`` is implied by ``reset``.
    """
    prefix = _glob_escape(Keys(volume).prefix)
    objects = Keys(volume, SPREAD).object_pattern  # a cluster's objects (keys.py)
    commands = " ".join(f"+{name}" for name in COMMANDS)
    return (
        f"ACL SETUSER {user} reset on >{password} "
        f"~{prefix}* ~{objects} &{prefix}events &{prefix}events:* -@all {commands}"
    )
