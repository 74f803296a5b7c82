"""URL redaction: the one function every address shown to a user goes through."""

from __future__ import annotations

import pytest

from redisfuse.backend import RedisOptions
from redisfuse.backend.transport import parse_sentinel_url, redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:s3cret@h:1/0", "redis://u:***@h:1/0"),
        ("rediss://:s3cret@h:1/0?ssl_ca_certs=/ca&x=1", "rediss://***@h:1/0?ssl_ca_certs=/ca&x=1"),
        (
            "redis+sentinel://h:1,h:2/m?sentinel_password=s3cret",
            "redis+sentinel://h:1,h:2/m?sentinel_password=***",
        ),
        ("unix:///run/r.sock?db=1&password=s3cret", "unix:///run/r.sock?db=1&password=***"),
        ("redis://h:1", "redis://h:1"),
    ],
)
def test_redact_removes_every_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert RedisOptions(url=url).address == shown


def test_a_sentinel_url_names_hosts_master_and_db() -> None:
    target = parse_sentinel_url("redis+sentinel://fs:pw@a:1,b:2/main/3?sentinel_password=x")
    assert target.sentinels == [("a", 1), ("b", 2)]
    assert (target.master, target.db, target.username, target.password) == ("main", 3, "fs", "pw")
    with pytest.raises(ValueError, match="MASTER"):
        parse_sentinel_url("redis+sentinel://a:1")
