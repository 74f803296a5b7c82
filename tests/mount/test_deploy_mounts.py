"""Real mounts over TLS and as a Redis ACL user confined to one volume.

The ACL mount runs at --debug with the password in REDISFUSE_REDIS_PASSWORD,
and the test greps its log and /proc/PID/cmdline for the password. Shortcuts:
one small file per mount; the Redis servers are private to each test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..deploy.conftest import TlsServer, start_tls_server
from ..deploy.servers import Servers
from ..deploy.test_acl import acl_denials, create_volume_user
from .mounting import Mount, start_mount, stop_mount


@pytest.fixture
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with Servers(tmp_path_factory) as started:
        yield started


def _mounted(tmp_path: Path, url: str, volume: str, args: list[str], **kw: object) -> Mount:
    return start_mount(tmp_path / "mnt", url, volume, tmp_path / "mount.log", args, **kw)  # type: ignore[arg-type]


def _write_read_rename_unlink(root: Path) -> None:
    data = secrets.token_bytes(300_000)
    (root / "d").mkdir()
    (root / "d" / "a").write_bytes(data)
    os.rename(root / "d" / "a", root / "d" / "b")
    assert (root / "d" / "b").read_bytes() == data
    os.unlink(root / "d" / "b")
    assert os.listdir(root / "d") == []


def test_a_mount_over_tls_writes_and_reads(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    tls: TlsServer = start_tls_server(servers, tmp_path_factory)
    volume = f"m-{secrets.token_hex(4)}"
    m = _mounted(tmp_path, tls.url, volume, tls.cli_args()[2:])
    try:
        _write_read_rename_unlink(m.path)
    finally:
        code = stop_mount(m)
    assert code == 0, m.log()


def test_a_mount_as_the_volume_user_never_shows_the_password(redis_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = redis_factory()
    volume, user, password = f"m-{secrets.token_hex(4)}", "fsuser", secrets.token_hex(16)
    create_volume_user(server.url, volume, user, password)
    url = f"redis://{user}@127.0.0.1:{server.port}/0"
    env = {"REDISFUSE_REDIS_PASSWORD": password}
    m = _mounted(tmp_path, url, volume, ["--debug"], env=env)
    try:
        _write_read_rename_unlink(m.path)
        cmdline = Path(f"/proc/{m.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline
    finally:
        code = stop_mount(m)
    assert code == 0, m.log()
    log = m.log()
    assert "DEBUG" in log and password not in log
    assert acl_denials(server.url, user) == []
