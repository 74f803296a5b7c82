"""How the mount(8) helper form reads SOURCE and -o options (no mount: pure translation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from redisfuse.backend import RedisOptions
from redisfuse.fuse import fstab
from redisfuse.fuse.cli import main, mount_parser
from redisfuse.fuse.errors import UsageError
from redisfuse.fuse.mount import MountConfig, fuse_option_set


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("redis://127.0.0.1:6380/vol", ("redis://127.0.0.1:6380/0", None, "vol")),
        ("redis://:secret@h:1/3/vol", ("redis://h:1/3", "secret", "vol")),
        ("rediss://u:pw@h/vol", ("rediss://u@h/0", "pw", "vol")),
        ("vol@h:6380", ("redis://h:6380/0", None, "vol")),
        ("vol@h:6380/2", ("redis://h:6380/2", None, "vol")),
        ("vol", (None, None, "vol")),
        ("unix:///run/r.sock?volume=v&db=1", ("unix:///run/r.sock?db=1", None, "v")),
        ("redis://h", ("redis://h/0", None, None)),
        (
            "redis+sentinel://u:pw@a:1,b:2/mymaster/2?volume=v",
            ("redis+sentinel://u@a:1,b:2/mymaster/2", "pw", "v"),
        ),
        ("rediss+cluster://a:1,b:2?volume=v", ("rediss+cluster://a:1,b:2", None, "v")),
        ("redis+cluster://a:1", ("redis+cluster://a:1", None, None)),
    ],
)
def test_sources(source: str, expected: tuple[str | None, str | None, str | None]) -> None:
    assert fstab.parse_source(source) == expected


@pytest.mark.parametrize("source", ["redis://h/a/b", "redis://h/a/b/c", "@h", "/dev/sda1"])
def test_bad_sources(source: str) -> None:
    with pytest.raises(UsageError):
        fstab.parse_source(source)


def test_options_map_to_mount_arguments(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    opts = (
        "rw,nodev,noatime,_netdev,noauto,x-systemd.automount,event_loop=trio,debug,"
        f"allow_other,log=/tmp/l,cache-size=8,ro,suid,password_file={secret}"
    )
    t = fstab.translate(["v@h:1", "/mnt/x", "-o", opts], mount_parser("redisfuse"))
    assert t.argv == [
        "/mnt/x", "--background", "--redis-url", "redis://h:1/0", "--volume", "v",
        "--event-loop", "trio", "--debug", "--allow-other", "--log-file", "/tmp/l",
        "--cache-size", "8", "--read-only", "-o", "nodev,noatime,suid,fsname=v@h:1",
    ]  # fmt: skip
    assert t.env == {"REDIS_PASSWORD": "s3cret"}


@pytest.mark.parametrize(
    ("source", "fsname"),
    [
        ("redis://h:1/vol", "redis://h:1/vol"),
        ("redis://:secret@h:1/vol", "redis://***@h:1/vol"),
        ("redis+sentinel://a:1,b:2/m?volume=v", "redis+sentinel://a:1\\,b:2/m?volume=v"),
    ],
)
def test_the_mount_is_named_by_its_fstab_source(source: str, fsname: str) -> None:
    """/proc/mounts then shows the fstab line's source (so ``mount -a`` finds it
    mounted), never a password, with commas escaped for libfuse."""
    t = fstab.translate([source, "/mnt/x"], mount_parser("redisfuse"))
    assert t.argv[-2:] == ["-o", f"fsname={fsname}"]


def test_split_options_keeps_escaped_commas() -> None:
    config = MountConfig(
        mountpoint="/mnt/x",
        redis=RedisOptions(),
        volume="v",
        fuse_options=["ro,fsname=a\\,b,noatime"],
    )
    options = fuse_option_set(config)
    assert {"ro", "fsname=a\\,b", "noatime"} <= options
    assert not any(o.startswith("fsname=redisfuse:") for o in options)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ("redis_password=x", "password_file"),
        ("debug=1", "takes no value"),
        ("cache_size", "needs a value"),
    ],
)
def test_option_mistakes_are_one_line(
    opts: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vol", "/mnt/x", "-o", opts]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
