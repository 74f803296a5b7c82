"""examples/webapp.py in process (httpx's ASGITransport) against the session's real Redis.

Shortcut: the app's lifespan is entered directly (``router.lifespan_context``),
because ASGITransport does not send lifespan events; test_webapp_uvicorn.py
runs the same app under a real uvicorn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
import pytest

from examples.webapp import Config, byte_range, create_app
from redisfuse.backend import open_volume

from ..conftest import RedisServer

BLOCK = 64 * 1024
DATA = os.urandom(3 * BLOCK + 1000)


@contextlib.asynccontextmanager
async def app_client(server: RedisServer, volume: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client speaking to it in process.

    A context manager used inside each test rather than a fixture: the lifespan's
    task group must be entered and left in one task, and pytest-asyncio runs a
    fixture's set-up and teardown in different ones.
    """
    app = create_app(Config(redis_url=server.url, volume=volume, cache_bytes=1 << 20))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def test_byte_range_parsing() -> None:
    assert byte_range("bytes=0-9", 100) == (0, 10)
    assert byte_range("bytes=90-", 100) == (90, 100)
    assert byte_range("bytes=-5", 100) == (95, 100)
    assert byte_range("bytes=-500", 100) == (0, 100)
    assert byte_range("bytes=50-1000", 100) == (50, 100)
    assert byte_range("bytes=100-", 100) == (100, 100)  # unsatisfiable
    assert byte_range("bytes=9-3", 100) == (100, 100)
    assert byte_range("bytes=0-1,5-6", 100) is None  # several ranges: whole file
    assert byte_range("items=0-1", 100) is None


async def test_put_get_ranges_and_etags(redis_server: RedisServer, volume_name: str) -> None:
    async with app_client(redis_server, volume_name) as client:
        await _test_put_get_ranges_and_etags(client)


async def _test_put_get_ranges_and_etags(client: httpx.AsyncClient) -> None:
    put = await client.put("/files/docs/a.bin", content=DATA)
    assert put.status_code == 201, put.text
    tag = put.headers["etag"]

    got = await client.get("/files/docs/a.bin")
    assert got.status_code == 200
    assert got.content == DATA
    assert got.headers["etag"] == tag
    assert got.headers["content-length"] == str(len(DATA))

    assert (
        await client.get("/files/docs/a.bin", headers={"If-None-Match": tag})
    ).status_code == 304

    # One range across a block boundary.
    part = await client.get(
        "/files/docs/a.bin", headers={"Range": f"bytes={BLOCK - 10}-{BLOCK + 9}"}
    )
    assert part.status_code == 206
    assert part.content == DATA[BLOCK - 10 : BLOCK + 10]
    assert part.headers["content-range"] == f"bytes {BLOCK - 10}-{BLOCK + 9}/{len(DATA)}"
    suffix = await client.get("/files/docs/a.bin", headers={"Range": "bytes=-7"})
    assert (suffix.status_code, suffix.content) == (206, DATA[-7:])
    beyond = await client.get("/files/docs/a.bin", headers={"Range": f"bytes={len(DATA)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(DATA)}"
    stale = await client.get(
        "/files/docs/a.bin", headers={"Range": "bytes=0-0", "If-Range": '"0.0"'}
    )
    assert (stale.status_code, len(stale.content)) == (200, len(DATA))

    head = await client.head("/files/docs/a.bin")
    assert (head.status_code, head.headers["content-length"]) == (200, str(len(DATA)))

    # Replacing the file changes the ETag; the old one no longer matches.
    again = await client.put("/files/docs/a.bin", content=b"new")
    assert again.status_code == 200
    assert again.headers["etag"] != tag
    fresh = await client.get("/files/docs/a.bin", headers={"If-None-Match": tag})
    assert (fresh.status_code, fresh.content) == (200, b"new")


async def test_listing_index_delete_and_conflicts(
    redis_server: RedisServer, volume_name: str
) -> None:
    async with app_client(redis_server, volume_name) as client:
        await _test_listing_index_delete_and_conflicts(client)


async def _test_listing_index_delete_and_conflicts(client: httpx.AsyncClient) -> None:
    assert (await client.put("/files/d/x.txt", content=b"x")).status_code == 201
    assert (await client.put("/files/d/sub/y.txt", content=b"yy")).status_code == 201

    listing = (await client.get("/files/d")).json()
    by_name = {e["name"]: e for e in listing["entries"]}
    assert set(by_name) == {"x.txt", "sub"}
    assert (by_name["x.txt"]["type"], by_name["x.txt"]["size"]) == ("file", 1)
    assert by_name["sub"]["type"] == "dir"

    page = await client.get("/", params={"dir": "/d"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<a href="/files/d/x.txt">x.txt</a>' in page.text
    assert '<a href="/?dir=/d/sub">sub/</a>' in page.text

    assert (await client.put("/files/d/x.txt/under", content=b"")).status_code == 409
    assert (await client.put("/files/d/sub", content=b"")).status_code == 409
    assert (await client.delete("/files/d/sub")).status_code == 409  # not empty
    assert (await client.delete("/files/d/sub/y.txt")).status_code == 204
    assert (await client.delete("/files/d/sub")).status_code == 204
    assert (await client.get("/files/d/sub/y.txt")).status_code == 404
    assert (await client.delete("/files/nothing")).status_code == 404
    assert (await client.get("/files/../etc")).status_code in (400, 404)


async def test_failed_upload_leaves_nothing(redis_server: RedisServer, volume_name: str) -> None:
    """A body that fails half way leaves neither the target nor its temporary file."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * BLOCK
        raise RuntimeError("client went away")

    async with app_client(redis_server, volume_name) as client:
        with pytest.raises(RuntimeError):
            await client.put("/files/up/broken.bin", content=broken())
    async with open_volume(redis_server.url, volume=volume_name) as vol:
        assert await vol.listdir("/up") == []
