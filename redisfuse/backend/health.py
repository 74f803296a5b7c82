"""Whether Redis can be trusted with the volume now; sends no command itself.

Two things make a Redis that answers every command still unfit to hold a
volume, and both come from outside RedisFUSE:

- A ``maxmemory-policy`` that evicts keys without a TTL (``allkeys-lru``,
  ``allkeys-lfu``, ``allkeys-random``): when memory runs short, Redis deletes
  keys of its choosing, directory entries and inodes among them, and files are
  lost without an error. A volume's keys carry no TTL, so ``noeviction`` and the
  ``volatile-*`` policies (which evict only keys with one) never touch them.
  Opening is refused on such a Redis (:func:`policy_refusal`); a policy changed
  to one while the volume is open stops its writes (EROFS) until it is safe
  again (:meth:`Health.note_policies`, fed by capacity.py's INFO reading).
- The volume vanishing under an open volume: its ``setting`` key gone
  (FLUSHALL, FLUSHDB, a failover to an empty replica, a restart without
  persistence) or carrying another volume's uuid. The session's housekeeping
  recognises it (volume.py) and marks it here: every request then fails with
  EIO before it reaches Redis, so nothing of the volume is written again, until
  the same volume (same uuid) is back.

The state lives here, in the backend; the request paths only read it
(``Context.guard`` and ``check_writable``: one attribute test each).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import ReadOnly, VolumeGone

log = logging.getLogger(__name__)

EVICTING_PREFIX = "allkeys-"
"""Policies that may evict any key, TTL or not: the ones a volume cannot live with."""

FIX = (
    "set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in its "
    "configuration file), or give RedisFUSE a Redis of its own"
)


def evicts(policy: str) -> bool:
    """Whether ``policy`` may evict the volume's keys (they carry no TTL)."""
    return policy.lower().startswith(EVICTING_PREFIX)


def _where(address: str, node: str) -> str:
    """ "Redis at ADDRESS", or on a cluster "master NODE of Redis at ADDRESS"."""
    if not node or node == address:
        return f"Redis at {address}"
    return f"master {node} of Redis at {address}"


def policies_of(memory: Mapping[str, Mapping[str, object]]) -> dict[str, str]:
    """Each server's ``maxmemory_policy`` from its ``INFO memory``, by server name."""
    return {name: str(info.get("maxmemory_policy", "")) for name, info in memory.items()}


def policy_refusal(address: str, policies: Mapping[str, str]) -> str | None:
    """The one line refusing a Redis whose policy (by node) may evict keys, or None."""
    for node, policy in sorted(policies.items()):
        if evicts(policy):
            return (
                f"{_where(address, node)} has maxmemory-policy {policy}, which deletes keys "
                f"without a TTL (the volume's) when memory runs short, losing files: {FIX}"
            )
    return None


class Health:
    """What this node knows of Redis' fitness to hold the volume, as of its last look."""

    def __init__(self, volume: str, address: str) -> None:
        self.volume = volume
        self.address = address
        self.policies: dict[str, str] = {}
        """maxmemory-policy by node, as last read (empty: not read yet)."""
        self.evicting: str | None = None
        """Why writes are refused while a node's policy may evict keys (None: safe)."""
        self.gone: str | None = None
        """Why the volume is missing from Redis (None: it is there, as far as we know)."""

    def __repr__(self) -> str:
        state = "gone" if self.gone else "evicting" if self.evicting else "ok"
        return f"<Health {self.volume!r} {state} policies={self.policies}>"

    def note_policies(self, policies: Mapping[str, str]) -> None:
        """Take a fresh reading of the policies; log (once) when writes stop or resume."""
        before = self.policies
        self.policies = dict(policies)
        bad = sorted((node, p) for node, p in policies.items() if evicts(p))
        if bad:
            node, policy = bad[0]
            where = _where(self.address, node)
            self.evicting = (
                f"{where} has maxmemory-policy {policy}, which may evict the volume's keys: "
                "refusing to write"
            )
            if not any(evicts(p) for p in before.values()):
                was = before.get(node)
                log.error(
                    "maxmemory-policy of %s changed %sto %s, which deletes keys without a TTL "
                    "(the volume's) when memory runs short: writes fail with EROFS until it is "
                    "safe again (CONFIG SET maxmemory-policy noeviction)",
                    where,
                    f"from {was} " if was else "",
                    policy,
                )
        elif self.evicting is not None:
            self.evicting = None
            log.info(
                "maxmemory-policy of %s is safe again (%s): writes resume",
                self.address,
                ", ".join(sorted(set(policies.values()))),
            )

    def check_writable(self) -> None:
        """Raise why nothing may be written now (EIO: gone; EROFS: an evicting policy)."""
        if self.gone is not None:
            raise VolumeGone(self.gone)
        if self.evicting is not None:
            raise ReadOnly(self.evicting)

    def vanished(self, detail: str = "") -> None:
        """The volume's keys are gone from Redis: say so once, in one line."""
        if self.gone is not None:
            return
        self.gone = (
            f"volume {self.volume!r} no longer exists in Redis at {self.address}: its keys "
            f"were deleted (FLUSHALL/FLUSHDB?) or the server was replaced by an empty one{detail}"
        )
        log.error(
            "%s; every request fails with EIO until the volume is back (redisfuse load of "
            "its dump), and nothing of it is written meanwhile",
            self.gone,
        )

    def returned(self) -> None:
        """The same volume (its uuid) is back in Redis: requests may reach it again."""
        self.gone = None
