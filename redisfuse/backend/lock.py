"""A distributed lock: owner token, TTL kept alive by its holder, safe release.

Serialises what optimistic scripts cannot: read-modify-write of a partly
written block by two nodes, and O_APPEND writes (the offset is read under the
lock). Offered to library users through ``Volume.lock(path)``.

The token lives on the lock object (``secrets.token_hex``); release and
renewal are Lua compare-and-act scripts, so a holder whose TTL ran out can
never release or extend someone else's lock. Waiting backs off exponentially
with jitter up to a cap; a holder that outlives ``ttl`` renews the lock from a
task while the ``async with`` body runs.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from types import TracebackType

import anyio

from ..errors import FSError
from .context import Context

log = logging.getLogger(__name__)


class LockLost(FSError):
    """The lock expired (or was taken over) while its holder still worked under it."""

    def __init__(self, message: str) -> None:
        import errno

        super().__init__(errno.EIO, message)


class LockTimeout(FSError):
    """The lock could not be acquired within the deadline (EAGAIN)."""

    def __init__(self, message: str) -> None:
        import errno

        super().__init__(errno.EAGAIN, message)


class Lock:
    """One lock in Redis; use as ``async with Lock(ctx, key):``."""

    def __init__(
        self,
        ctx: Context,
        key: str,
        *,
        ttl: float = 10.0,
        timeout: float = 30.0,
        renew: bool = True,
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.timeout = timeout
        self.renew = renew
        self.token: str | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def __repr__(self) -> str:
        state = "held" if self.token else "free"
        return f"<Lock {self.key} {state}>"

    async def acquire(self) -> None:
        """Take the lock, waiting with capped, jittered backoff; LockTimeout after ``timeout``."""
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.timeout
        delay = 0.001
        while True:
            res = await self.ctx.script("lock", [self.key], [token, self.ttl_ms])
            if int(res[1]) == 1:
                self.token = token
                return
            if time.monotonic() > deadline:
                raise LockTimeout(f"lock {self.key} still held by another owner")
            await anyio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)

    async def extend(self) -> None:
        """Renew the TTL; LockLost when the lock is no longer ours."""
        if self.token is None:
            raise LockLost(f"lock {self.key} is not held")
        res = await self.ctx.script("extend", [self.key], [self.token, self.ttl_ms])
        if int(res[1]) != 1:
            self.token = None
            raise LockLost(f"lock {self.key} expired while held")

    async def release(self) -> None:
        """Release the lock if still ours; the token is cleared only after success."""
        if self.token is None:
            return
        res = await self.ctx.script("unlock", [self.key], [self.token])
        self.token = None
        if int(res[1]) != 1:
            log.warning("lock %s had expired before it was released", self.key)

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self.ttl_ms / 3000)
            await self.extend()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        if self.renew:
            self._tg = anyio.create_task_group()
            await self._tg.__aenter__()
            self._tg.start_soon(self._keep_alive)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(None, None, None)
                self._tg = None
        finally:
            if exc is not None and self.ctx.outage:
                # The body failed because Redis stopped answering: the lock's TTL frees
                # it, and the caller's request fails now instead of waiting again.
                log.debug("lock %s left to expire: Redis is not answering", self.key)
                self.token = None
            else:
                with anyio.CancelScope(shield=True):
                    await self.release()
