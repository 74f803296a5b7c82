"""examples/webapp.py under a real uvicorn subprocess, over real HTTP on a free port.

A file four times the server's block cache is uploaded and downloaded in
streams, two uploads run at once, and SIGTERM must shut the server down with
its volume closed (its session gone from Redis). Shortcut: the peak memory
check reads the server's VmHWM from /proc (Linux only), before and after.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from redisfuse.backend import open_volume

from ..conftest import RedisServer

REPO = Path(__file__).resolve().parents[2]
CACHE_MB = 1
BIG = 16 * CACHE_MB << 20  # sixteen times the block cache
WARM = 4 << 20
CHUNK = 256 * 1024
READY_DEADLINE_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log


@pytest.fixture
def server(redis_server: RedisServer, volume_name: str, tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    env = dict(
        os.environ,
        REDISFUSE_REDIS_URL=redis_server.url,
        REDISFUSE_VOLUME=volume_name,
        REDISFUSE_CACHE_MB=str(CACHE_MB),
    )
    log = tmp_path / "uvicorn.log"
    argv = [sys.executable, "-m", "uvicorn", "examples.webapp:app", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    srv = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + READY_DEADLINE_S
        while True:
            try:
                if httpx.get(srv.url + "/files/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start:\n{log.read_text()}", pytrace=False)
            time.sleep(0.05)
        yield srv
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _chunks(data: bytes, pause: float = 0.0) -> Iterator[bytes]:
    for i in range(0, len(data), CHUNK):
        if pause:
            time.sleep(pause)
        yield data[i : i + CHUNK]


def test_big_file_concurrent_uploads_and_clean_shutdown(
    server: Server, redis_server: RedisServer, volume_name: str
) -> None:
    big = os.urandom(BIG)
    with httpx.Client(base_url=server.url, timeout=60) as http:
        # Warm-up at a quarter of the size: what the server allocates once (buffers,
        # threads, lazily imported modules) is then in the baseline.
        warm = os.urandom(WARM)
        assert http.put("/files/big/warm.bin", content=_chunks(warm)).status_code == 201
        assert http.get("/files/big/warm.bin").content == warm
        assert http.delete("/files/big/warm.bin").status_code == 204
        before_kib = _peak_rss_kib(server.proc.pid)
        began = time.monotonic()
        put = http.put("/files/big/blob.bin", content=_chunks(big))
        assert put.status_code == 201, put.text
        uploaded = time.monotonic()
        after_put_kib = _peak_rss_kib(server.proc.pid)
        digest = hashlib.sha256()
        size = 0
        with http.stream("GET", "/files/big/blob.bin") as got:
            assert got.status_code == 200
            assert got.headers.get("content-length") == str(BIG)
            for chunk in got.iter_bytes():
                digest.update(chunk)
                size += len(chunk)
        downloaded = time.monotonic()
        assert (size, digest.hexdigest()) == (BIG, hashlib.sha256(big).hexdigest())
        part = http.get("/files/big/blob.bin", headers={"Range": "bytes=3000000-3000099"})
        assert (part.status_code, part.content) == (206, big[3_000_000:3_000_100])
        assert part.headers["content-range"] == f"bytes 3000000-3000099/{BIG}"
    # Streamed by block: the upload's peak is bounded by the write buffer (4 MiB)
    # and the download's by a few blocks, not by the file.
    put_kib = after_put_kib - before_kib
    get_kib = _peak_rss_kib(server.proc.pid) - after_put_kib
    print(  # noqa: T201
        f"{BIG >> 20} MiB: PUT {uploaded - began:.2f} s (peak RSS +{put_kib} KiB), "
        f"GET {downloaded - uploaded:.2f} s (peak RSS +{get_kib} KiB)"
    )
    assert put_kib * 1024 < BIG
    assert get_kib * 1024 < BIG // 4

    # Two uploads at once (paced, so they overlap), one to a new path and one
    # replacing the big file; both complete whole.
    bodies = {"/files/c/one.bin": os.urandom(2 << 20), "/files/big/blob.bin": os.urandom(2 << 20)}
    results: dict[str, int] = {}

    def upload(path: str) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            results[path] = http.put(path, content=_chunks(bodies[path], 0.02)).status_code

    threads = [threading.Thread(target=upload, args=(p,)) for p in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {"/files/c/one.bin": 201, "/files/big/blob.bin": 200}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for path, body in bodies.items():
            assert http.get(path).content == body
        names = {e["name"] for e in http.get("/files/big").json()["entries"]}
        assert names == {"blob.bin"}  # no temporary upload left behind

    server.proc.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM), server.log.read_text()
    assert "Application shutdown complete" in server.log.read_text()

    async def sessions_left() -> list[str]:
        async with open_volume(redis_server.url, volume=volume_name) as vol:
            mine = vol.inodes.ctx.session
            return [s.mountpoint for s in await vol.inodes.sessions.list() if s.sid != mine]

    assert asyncio.run(sessions_left()) == []
