"""The keyspace of a volume: the one place that formats Redis key names.

Every metadata key of volume ``VOL`` starts with ``rf:{VOL}:``; the ``{VOL}``
hash tag puts all of them in one Redis Cluster slot, so any set of them can
change in one Lua script. Nothing is keyed by path. The block objects have one
of two layouts, fixed when the volume is formatted (``setting.objects``):
``tagged`` (formatted on a single server, and every volume older than the
field): ``rf:{VOL}:o:OBJ``, in the volume's slot; ``spread`` (formatted on a
Redis Cluster): ``rf:VOL:o:{OBJ}``, hash-tagged by the object id, so that the
data is spread over every slot and every master. Scripts never see spread
objects (they live in other slots); see data.py and objects.py for how the
guarantees that need them are kept without a script. Numbers are decimal ASCII; times are
integer nanoseconds since the epoch, kept as strings inside Lua (doubles there
would lose precision).

Keys (type: what it holds, and its invariants):

``setting`` (hash)
    ``format``, ``block_size``, ``codec``, ``created``, ``uuid``, and
    ``objects`` (``spread``; absent means ``tagged``); written once by format.
``counter:ino``, ``counter:obj``, ``counter:sess`` (strings)
    Highest inode / object / session id handed out (INCRBY reserves ranges);
    the root directory is inode 1.
``i:INO`` (hash)
    ``mode uid gid nlink size rdev atime mtime ctime version bytes opens
    xattrs``, and for directories ``parent dseq``. ``nlink`` equals the number
    of entries naming the inode (directories: 2 + subdirectories); ``bytes``
    is the sum of the valid lengths in ``m:INO``; ``opens`` counts open
    handles over all sessions; ``xattrs`` is the number of fields of
    ``x:INO``; ``parent`` is the directory's parent; ``dseq`` its entry
    sequence counter; ``version`` grows with every change.
``d:INO`` (hash)
    Directory entries: name -> ``"CHILD:SEQ"``. SEQ is unique and increasing
    per directory and is the entry's stable readdir offset.
``s:INO`` (string)
    Symlink target.
``x:INO`` (hash)
    Extended attributes: name -> value.
``m:INO`` (hash)
    Block map: block index -> ``"OBJ:VALID"``; bytes of the block past VALID
    read as zeros. Never points at a deleted object.
``o:OBJ`` (string; ``rf:VOL:o:{OBJ}`` in the spread layout)
    An immutable block object: 1 codec byte + payload (see codec.py). Written
    once before any block map names it (the commit checks that it was stored:
    in the script for tagged objects, from the SET replies for spread ones),
    deleted only when no block map names it any more (trash, reclaim).
``o:{wN}`` (``rf:VOL:o:{wN}``; never seen: set and deleted in one script)
    The replica barrier on a Redis Cluster (cluster_replicas.py): a write that
    lands on one chosen master and leaves nothing behind; N picks the slot.
``usage`` (hash)
    ``inodes`` (live inodes) and ``bytes`` (sum of all ``i:INO.bytes``),
    changed by blind HINCRBY only.
``trash`` (zset)
    Object ids no longer referenced, scored by the time (ms) they were
    dropped; deleted after a grace period, so that readers holding an older
    block map still find them.
``reclaim`` (zset)
    Inodes whose metadata is gone but whose ``m:INO`` and objects must still
    be deleted, scored by time (ms).
``orphans`` (zset)
    Inodes with nlink 0 that are still open somewhere, scored by time (ms).
``sessions`` (zset)
    Session id -> the time (ms) its lease expires.
``sess:SID`` (hash)
    ``host pid mountpoint version event_loop started timeout`` of a session, and
    ``retries`` (commands its client retried), refreshed by its heartbeat.
``open:SID`` (hash)
    Inode -> number of handles session SID holds open on it; the sum over
    sessions equals ``i:INO.opens``.
``rq:SID`` (hash)
    Request id -> packed result of a successful mutating script of session
    SID whose reply the session has not yet confirmed receiving; a replay of
    that request (the reply was lost, the client retried) returns it instead
    of running again. Deleted as replies arrive, and with the session. Field
    ``acked``: how many of the session's mutating scripts succeeded (first
    runs only); the replica barrier compares it with the successes the
    session saw, which tells a failover that lost acknowledged writes.
``lock:NAME`` (string)
    A distributed lock: owner token with a TTL (see lock.py). ``NAME`` is
    ``i:INO`` for the inode locks the data path takes, ``user:INO`` for locks
    library users take on a path.
channel ``events:SID`` (pub/sub)
    Change notifications for session SID (see events.py); sharded pub/sub
    (SPUBLISH, in the volume's slot) on a cluster.
channel ``events`` (pub/sub)
    Announcements of new sessions.
"""

from __future__ import annotations

from typing import NewType

Ino = NewType("Ino", int)
ObjId = NewType("ObjId", int)
SessionId = NewType("SessionId", int)

ROOT_INO = Ino(1)


TAGGED = "tagged"
"""Object layout: objects in the volume's slot (single servers, and older volumes)."""

SPREAD = "spread"
"""Object layout: each object hash-tagged by its id, spread over the cluster's slots."""


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\{}" else c for c in text)


class Keys:
    """Builds the key names of one volume; the only formatter of key names."""

    __slots__ = ("_obj_prefix", "layout", "prefix", "volume")

    def __init__(self, volume: str, layout: str = TAGGED) -> None:
        if not volume or any(c in volume for c in "{}:") or not volume.isprintable():
            raise ValueError(f"invalid volume name {volume!r}: use printable text without {{ }} :")
        if layout not in (TAGGED, SPREAD):
            raise ValueError(f"unknown object layout {layout!r}")
        self.volume = volume
        self.layout = layout
        self.prefix = f"rf:{{{volume}}}:"
        self._obj_prefix = f"{self.prefix}o:" if layout == TAGGED else f"rf:{volume}:o:"

    def __repr__(self) -> str:
        return f"<Keys {self.prefix!r} objects={self.layout}>"

    @property
    def spread(self) -> bool:
        """Whether objects live outside the volume's slot (scripts cannot see them)."""
        return self.layout == SPREAD

    def with_layout(self, layout: str) -> Keys:
        """The same volume's keys with the object layout its ``setting`` records."""
        return Keys(self.volume, layout)

    def owns(self, key: str) -> bool:
        """Whether ``key`` belongs to this volume (carries its hash tag)."""
        return key.startswith(self.prefix)

    @property
    def setting(self) -> str:
        return self.prefix + "setting"

    @property
    def counter_ino(self) -> str:
        return self.prefix + "counter:ino"

    @property
    def counter_obj(self) -> str:
        return self.prefix + "counter:obj"

    @property
    def counter_sess(self) -> str:
        return self.prefix + "counter:sess"

    @property
    def usage(self) -> str:
        return self.prefix + "usage"

    @property
    def trash(self) -> str:
        return self.prefix + "trash"

    @property
    def reclaim(self) -> str:
        return self.prefix + "reclaim"

    @property
    def orphans(self) -> str:
        return self.prefix + "orphans"

    @property
    def sessions(self) -> str:
        return self.prefix + "sessions"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    def inode(self, ino: int) -> str:
        return f"{self.prefix}i:{ino}"

    def dirents(self, ino: int) -> str:
        return f"{self.prefix}d:{ino}"

    def symlink(self, ino: int) -> str:
        return f"{self.prefix}s:{ino}"

    def xattrs(self, ino: int) -> str:
        return f"{self.prefix}x:{ino}"

    def blockmap(self, ino: int) -> str:
        return f"{self.prefix}m:{ino}"

    def obj(self, obj: int) -> str:
        if self.layout == SPREAD:
            return f"{self._obj_prefix}{{{obj}}}"
        return f"{self._obj_prefix}{obj}"

    def barrier(self, n: int) -> str:
        """A key in the objects' pattern (so a volume's ACL user may write it) whose
        slot depends on ``n``: the replica barrier picks ``n`` to reach one master."""
        return f"rf:{self.volume}:o:{{w{n}}}"

    @property
    def object_pattern(self) -> str:
        """SCAN pattern for every object of the volume (in either layout)."""
        return _glob_escape(self._obj_prefix) + "*"

    def object_id(self, key: bytes | str) -> int:
        """The object id of an object key (ValueError when it is not one)."""
        text = key.decode() if isinstance(key, bytes) else key
        if not text.startswith(self._obj_prefix):
            raise ValueError(f"not an object key of volume {self.volume!r}: {text!r}")
        return int(text[len(self._obj_prefix) :].strip("{}"))

    def lock(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def inode_lock(self, ino: int) -> str:
        return self.lock(f"i:{ino}")

    def events_for(self, sid: int) -> str:
        """The channel session ``sid`` hears other sessions' changes on."""
        return f"{self.prefix}events:{sid}"

    def session(self, sid: int) -> str:
        return f"{self.prefix}sess:{sid}"

    def open_files(self, sid: int) -> str:
        return f"{self.prefix}open:{sid}"

    def requests(self, sid: int) -> str:
        """Results of session ``sid``'s requests still in flight (replayed, not rerun)."""
        return f"{self.prefix}rq:{sid}"

    def pattern(self, kind: str) -> str:
        """SCAN pattern for every key of one kind (``i``, ``d``, ``m`` ...)."""
        return self.prefix.replace("{", "\\{").replace("}", "\\}") + kind + ":*"
