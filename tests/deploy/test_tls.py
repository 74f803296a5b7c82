"""TLS to Redis: a volume over rediss:// against a real TLS-only redis-server.

The server requires client certificates (``tls-auth-clients yes``), so every
success here also proves the client certificate is presented. Shortcuts: one
server per module, one volume per test.
"""

from __future__ import annotations

import pytest

from redisfuse.backend import BackendUnavailable, RedisOptions, open_volume
from redisfuse.fuse.errors import EXIT_REDIS

from .certs import make_ca
from .cli import redisfuse
from .conftest import TlsServer


def _options(tls: TlsServer, **changes: object) -> RedisOptions:
    fields: dict[str, object] = {
        "url": tls.url,
        "tls_ca": str(tls.files.ca),
        "tls_cert": str(tls.files.client_cert),
        "tls_key": str(tls.files.client_key),
        "retry_deadline": 2.0,
    }
    fields.update(changes)
    return RedisOptions(**fields)  # type: ignore[arg-type]


async def test_a_volume_works_over_tls(tls_server: TlsServer, volume_name: str) -> None:
    async with open_volume(volume=volume_name, options=_options(tls_server)) as vol:
        await vol.mkdir("/d")
        await vol.write_file("/d/a", b"over tls " * 1000)
        await vol.rename("/d/a", "/d/b")
        assert await vol.read_file("/d/b") == b"over tls " * 1000
        await vol.remove("/d/b")
        assert await vol.listdir("/d") == []


async def test_tls_files_can_come_as_url_query_parameters(
    tls_server: TlsServer, volume_name: str
) -> None:
    f = tls_server.files
    url = (
        f"{tls_server.url}?ssl_ca_certs={f.ca}&ssl_certfile={f.client_cert}"
        f"&ssl_keyfile={f.client_key}"
    )
    async with open_volume(volume=volume_name, options=RedisOptions(url=url)) as vol:
        await vol.write_file("/q", b"query")
        assert await vol.read_file("/q") == b"query"


async def test_a_wrong_ca_is_one_clear_error(
    tls_server: TlsServer, volume_name: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    other_ca, _ = make_ca(tmp_path, "some-other-ca")
    with pytest.raises(BackendUnavailable) as caught:
        async with open_volume(
            volume=volume_name, options=_options(tls_server, tls_ca=str(other_ca))
        ):
            pass
    message = str(caught.value.strerror)
    assert "\n" not in message
    assert message.startswith(
        f"TLS with Redis at {tls_server.url} failed: the server's certificate"
    )
    assert "--redis-tls-ca" in message


async def test_without_a_client_certificate_the_server_refuses_clearly(
    tls_server: TlsServer, volume_name: str
) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        async with open_volume(
            volume=volume_name, options=_options(tls_server, tls_cert=None, tls_key=None)
        ):
            pass
    message = str(caught.value.strerror)
    assert "\n" not in message
    assert "requires a client certificate" in message, message


async def test_tls_files_with_a_plain_url_are_refused(volume_name: str, redis_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackendUnavailable, match="not rediss://"):
        async with open_volume(
            volume=volume_name, options=RedisOptions(url=redis_server.url, tls_ca="/nonexistent")
        ):
            pass


async def test_status_and_fsck_work_over_tls(tls_server: TlsServer, volume_name: str) -> None:
    async with open_volume(volume=volume_name, options=_options(tls_server)):
        pass  # formats the volume (the tools do not: they inspect what is there)
    args = ["--volume", volume_name, *tls_server.cli_args()]
    fsck = redisfuse("fsck", *args)
    assert fsck.returncode == 0, fsck.stderr
    assert "volume is consistent" in fsck.stdout
    status = redisfuse("status", *args)
    assert status.returncode == 0, status.stderr
    assert f"volume      {volume_name}" in status.stdout


def test_the_cli_reports_a_wrong_ca_in_one_line(
    tls_server: TlsServer, volume_name: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    other_ca, _ = make_ca(tmp_path, "some-other-ca")
    args = [*tls_server.cli_args(), "--redis-tls-ca", str(other_ca)]
    done = redisfuse("status", "--volume", volume_name, *args)
    assert done.returncode == EXIT_REDIS
    assert done.stderr.count("\n") == 1, done.stderr
    assert "certificate is not trusted" in done.stderr
    assert "Traceback" not in done.stderr
