"""Opening a volume where Redis refuses: one clear FSError, never a raw Redis error.

Each case runs its own redis-server configured the way a user might meet it: a
read-only replica, a command renamed away, an ACL user without a command.
"""

from __future__ import annotations

import asyncio
import errno
import secrets
import time

import pytest
from redis.asyncio import Redis

from redisfuse.backend import BackendUnavailable, FSError, ReadOnly, open_volume


async def _wait_replicating(url: str) -> None:
    replica = Redis.from_url(url)
    try:
        deadline = time.monotonic() + 10
        while (await replica.info("replication")).get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            await asyncio.sleep(0.05)
    finally:
        await replica.aclose()


async def test_a_read_only_replica_is_refused_in_one_line(redis_factory) -> None:  # type: ignore[no-untyped-def]
    master = redis_factory()
    replica = redis_factory("--replicaof", master.host, str(master.port))
    await _wait_replicating(replica.url)
    name = f"t-{secrets.token_hex(4)}"
    async with open_volume(master.url, volume=name):
        pass  # formatted on the master
    await _wait_replicating(replica.url)
    for volume in (name, f"new-{name}"):
        with pytest.raises(ReadOnly) as caught:
            async with open_volume(replica.url, volume=volume):
                pass
        message = str(caught.value.strerror)
        assert "read-only replica" in message and "\n" not in message


async def test_a_renamed_command_is_named_in_one_line(redis_factory) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory("--rename-command", "EVALSHA", "")
    with pytest.raises(BackendUnavailable) as caught:
        async with open_volume(server.url, volume=f"t-{secrets.token_hex(4)}"):
            pass
    message = str(caught.value.strerror)
    assert "lacks a command" in message and "evalsha" in message.lower()


async def test_a_command_denied_by_acl_is_eacces(redis_factory) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory()
    admin = Redis.from_url(server.url)
    try:
        await admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=["+secret-pw"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", "-evalsha"],
        )
    finally:
        await admin.aclose()
    url = f"redis://limited:secret-pw@{server.host}:{server.port}/0"
    with pytest.raises(FSError) as caught:
        async with open_volume(url, volume=f"t-{secrets.token_hex(4)}"):
            pass
    assert caught.value.errno == errno.EACCES
    message = str(caught.value.strerror)
    assert "denied a command" in message and "secret-pw" not in message
