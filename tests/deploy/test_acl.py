"""``redisfuse acl``: a Redis user confined to one volume, on a real server.

The command list in backend/acl.py is checked two ways: a scan of the backend
sources for commands missing from it, and real runs of fsck, gc and status as
that user with the server's ACL LOG (which records every denial, even ones a
client swallows) empty afterwards. The mount side is tests/mount/test_deploy_acl.py.
"""

from __future__ import annotations

import errno
import re
import secrets
from importlib import resources
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import NoPermissionError

from redisfuse.backend import FSError, RedisOptions, open_volume
from redisfuse.backend import acl as acl_module
from redisfuse.backend.acl import COMMANDS
from redisfuse.backend.keys import Keys
from redisfuse.fuse.errors import EXIT_REDIS
from tests.cluster_redis import start_cluster

from .cli import redisfuse

#: redis-py methods the backend calls that send no command, or another name.
NOT_COMMANDS = {"aclose", "pipeline", "execute", "get_retry", "get_message", "execute_command"}
RENAMED = {
    "scan_iter": "scan",
    "script_load": "script|load",
    "script_exists": "script|exists",
    "delete": "del",
}
_CALL = re.compile(r"\b(?:client|pipe|again|pubsub)\.(\w+)\(\s*(\"\w+\")?")
_RAW = re.compile(r"execute_command\(\s*\"(\w+)\"")
_LUA = re.compile(r"redis\.p?call\(\s*['\"](\w+)")


def _sent_by_backend() -> dict[str, str]:
    """Every command the backend's Python and Lua sources send -> where it was seen."""
    found: dict[str, str] = {}
    package = Path(acl_module.__file__).parent
    for source in sorted(package.glob("*.py")):
        text = source.read_text()
        for m in _CALL.finditer(text):
            method, arg = m.group(1), m.group(2)
            if method in NOT_COMMANDS:
                continue
            name = RENAMED.get(method, method)
            if method == "object":
                name = f"object|{(arg or '').strip(chr(34))}"
            found.setdefault(name, source.name)
        for m in _RAW.finditer(text):
            found.setdefault(m.group(1).lower(), source.name)
        if "transaction=True" in text:
            found.setdefault("multi", source.name)
            found.setdefault("exec", source.name)
    for script in resources.files("redisfuse.backend").joinpath("lua").iterdir():
        if script.name.endswith(".lua"):
            for m in _LUA.finditer(script.read_text()):
                found.setdefault(m.group(1).lower(), script.name)
    return found


def test_the_rule_allows_every_command_the_backend_sends() -> None:
    sent = _sent_by_backend()
    assert len(sent) > 30, sent  # the scan itself works
    missing = {name: where for name, where in sent.items() if name not in COMMANDS}
    assert not missing, f"add these to backend/acl.py COMMANDS: {missing}"


def test_the_acl_command_prints_one_pasteable_line() -> None:
    done = redisfuse("acl", "vol*1", "--user", "fs1", env={"REDISFUSE_REDIS_PASSWORD": "pw1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(r"ACL SETUSER fs1 reset on >pw1 ~rf:{vol\*1}:* ")
    assert r"~rf:vol\*1:o:* &rf:{vol\*1}:events &rf:{vol\*1}:events:* -@all +ping " in done.stdout


def create_volume_user(url: str, volume: str, user: str, password: str) -> None:
    """Paste ``redisfuse acl``'s output into the server, as an administrator would."""
    done = redisfuse("acl", volume, "--user", user, env={"REDISFUSE_REDIS_PASSWORD": password})
    assert done.returncode == 0, done.stderr
    with Redis.from_url(url) as admin:
        admin.execute_command(*done.stdout.split())


def acl_denials(url: str, user: str) -> list[object]:
    """What the server refused ``user`` so far (ACL LOG keeps even swallowed denials)."""
    with Redis.from_url(url) as admin:
        return [e for e in admin.acl_log() if e.get("username") == user]


@pytest.fixture
def acl_server(redis_factory):  # type: ignore[no-untyped-def]
    """A fresh server whose ACL log holds only this test's denials."""
    return redis_factory()


async def test_fsck_gc_and_status_run_as_the_volume_user(acl_server) -> None:  # type: ignore[no-untyped-def]
    volume, user, password = f"t-{secrets.token_hex(4)}", "fsuser", secrets.token_hex(16)
    create_volume_user(acl_server.url, volume, user, password)
    as_user = RedisOptions(
        url=f"redis://127.0.0.1:{acl_server.port}/0", username=user, password=password
    )
    async with open_volume(volume=volume, options=as_user):
        pass  # the user formats it (the tools do not: they inspect what is there)
    url = f"redis://{user}@127.0.0.1:{acl_server.port}/0"
    env = {"REDISFUSE_REDIS_PASSWORD": password}
    for command in ("fsck", "gc", "status"):
        done = redisfuse(command, "--redis-url", url, "--volume", volume, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert password not in done.stdout + done.stderr
    assert acl_denials(acl_server.url, user) == []


async def test_the_user_cannot_touch_another_volume(acl_server) -> None:  # type: ignore[no-untyped-def]
    mine, other = f"t-{secrets.token_hex(4)}", f"t-{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    async with open_volume(acl_server.url, volume=other) as vol:
        await vol.write_file("/secret", b"not yours")
    create_volume_user(acl_server.url, mine, "fsuser", password)
    as_user = RedisOptions(
        url=f"redis://127.0.0.1:{acl_server.port}/0", username="fsuser", password=password
    )
    async with open_volume(volume=mine, options=as_user) as vol:
        await vol.write_file("/mine", b"yours")
    with Redis(port=acl_server.port, username="fsuser", password=password) as raw:
        assert raw.hget(Keys(mine).setting, "format") is not None
        with pytest.raises(NoPermissionError):
            raw.hgetall(Keys(other).setting)
        with pytest.raises(NoPermissionError):
            raw.set(Keys(other).obj(999999), b"x")
        with pytest.raises(NoPermissionError):
            raw.publish(Keys(other).events, b"x")
    with pytest.raises(FSError) as caught:
        async with open_volume(volume=other, options=as_user):
            pass
    assert caught.value.errno == errno.EACCES
    assert "\n" not in str(caught.value.strerror)
    assert password not in str(caught.value)
    done = redisfuse(
        "status", "--redis-url", f"redis://fsuser@127.0.0.1:{acl_server.port}/0",
        "--volume", other, env={"REDISFUSE_REDIS_PASSWORD": password},
    )  # fmt: skip
    assert done.returncode == EXIT_REDIS
    assert done.stderr.count("\n") == 1 and "denied" in done.stderr, done.stderr


async def test_a_wrong_password_in_the_url_never_shows(acl_server) -> None:  # type: ignore[no-untyped-def]
    volume = f"t-{secrets.token_hex(4)}"
    create_volume_user(acl_server.url, volume, "fsuser", secrets.token_hex(16))
    wrong = secrets.token_hex(16)
    url = f"redis://fsuser:{wrong}@127.0.0.1:{acl_server.port}/0?password={wrong}"
    with pytest.raises(FSError) as caught:
        async with open_volume(url, volume=volume):
            pass
    message = str(caught.value)
    assert "refused the password" in message
    assert wrong not in message and "fsuser:***@127.0.0.1" in message
    done = redisfuse("status", "--redis-url", url, "--volume", volume)
    assert done.returncode == EXIT_REDIS
    assert done.stderr.count("\n") == 1 and wrong not in done.stderr, done.stderr


async def test_the_volume_user_on_a_cluster_with_replicas(redis_factory) -> None:  # type: ignore[no-untyped-def]
    """On a cluster the rule goes to every node (replicas too: one may be promoted).
    A volume's user then mounts with ``--replicas 1`` (objects spread over every
    master, a WAIT per master), runs fsck, gc and status, and no node logged a
    denial."""
    cluster = start_cluster(redis_factory, replicas=1)
    volume, user, password = f"t-{secrets.token_hex(4)}", "fsuser", secrets.token_hex(16)
    for port in cluster.ports:
        create_volume_user(f"redis://127.0.0.1:{port}/0", volume, user, password)
    options = RedisOptions(url=cluster.url, username=user, password=password, replicas=1)
    data = secrets.token_bytes(24 * 65536)
    async with open_volume(volume=volume, options=options) as vol:
        await vol.write_file("/f", data)
        await vol.rename("/f", "/g")
        assert await vol.read_file("/g") == data
    url = f"redis+cluster://{user}@" + ",".join(cluster.nodes)
    env = {"REDISFUSE_REDIS_PASSWORD": password}
    for command in ("fsck", "gc", "status"):
        done = redisfuse(command, "--redis-url", url, "--volume", volume, env=env)
        assert done.returncode == 0, f"{command}: {done.stderr}"
    for port in cluster.ports:
        assert acl_denials(f"redis://127.0.0.1:{port}/0", user) == [], port
