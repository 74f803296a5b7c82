"""A node declared dead while it was only paused: its late requests change nothing.

Another node reclaims the paused node's session (as it does once the session's
lease has expired); the paused node's requests are then refused inside every
script, its buffered writes are reported and dropped, and it carries on in a
new session. Shortcut: the reclaim is called directly instead of waiting out a
lease, and the paused node is a second Volume in the same process.
"""

from __future__ import annotations

import errno
import logging

import pytest
from redis.asyncio import Redis

from redisfuse.backend import FSError, Volume, open_volume
from redisfuse.backend.fsck import fsck


async def test_a_node_declared_dead_cannot_overwrite_what_others_did(
    vol: Volume,
    redis_server,
    volume_name: str,
    raw: Redis,
    caplog: pytest.LogCaptureFixture,  # type: ignore[no-untyped-def]
) -> None:
    await vol.write_file("/f", b"original")
    await vol.write_file("/g", b"unlinked while open")
    async with open_volume(redis_server.url, volume=volume_name) as paused:
        f = await paused.open("/f", "r+b")
        await f.write(b"from the paused node")  # buffered, not yet committed
        g = await paused.open("/g", "rb")
        await vol.remove("/g")  # g lives on while the paused node holds it

        # The other node declares the paused one dead and reclaims what it held.
        dead = paused.inodes.ctx.session
        await vol.inodes.sessions.reclaim(dead)
        await vol.inodes.reclaim_pending()
        await vol.write_file("/f", b"from the live node")

        # The paused node wakes up: its commit is refused inside the script.
        with pytest.raises(FSError) as caught:
            await f.flush()
        assert caught.value.errno == errno.EIO
        assert paused.inodes.ctx.declared_dead
        with caplog.at_level(logging.ERROR):
            await paused.inodes.renew_session()
        assert paused.inodes.ctx.session != dead
        assert any("declared dead" in r.getMessage() for r in caplog.records)

        # Its old handles fail; what the live node did stands; new requests work.
        with pytest.raises(FSError) as caught:
            await g.read()
        assert caught.value.errno == errno.EIO
        await f.close()
        await g.close()
        assert await paused.read_file("/f") == b"from the live node"
        assert await vol.read_file("/f") == b"from the live node"
        assert not await vol.exists("/g")
        await paused.write_file("/h", b"after the new session")
    assert await vol.read_file("/h") == b"after the new session"
    report = await fsck(raw, volume_name)
    assert report.ok, str(report)


async def test_a_heartbeat_sent_twice_still_finds_its_session_alive(
    vol: Volume, vol2: Volume
) -> None:
    """A heartbeat replayed after a lost reply sets the same score: still alive."""
    ctx = vol.inodes.ctx
    keys = [ctx.keys.sessions, ctx.keys.session(ctx.session)]
    args = [ctx.session, 10**13, 0]
    assert (await ctx.script("heartbeat", keys, args))[1] == 1
    assert (await ctx.script("heartbeat", keys, args))[1] == 1
    assert await vol.inodes.sessions.heartbeat()
    await vol2.inodes.sessions.reclaim(ctx.session)
    assert not await vol.inodes.sessions.heartbeat()
    await vol.inodes.renew_session()
    assert await vol.inodes.sessions.heartbeat()
