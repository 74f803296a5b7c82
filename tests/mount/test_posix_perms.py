"""Permission checks through a real mount, as an unprivileged user (uid/gid 65534).

The mount uses ``--allow-other`` (a root mount is otherwise closed to other
users) and lives in a world-traversable tmp directory: pytest's own tmp tree
is private to root. Each check runs a tiny script as 65534 in a subprocess and
reports the errno it failed with. Shortcuts: the subprocess runs the system
python (the project's interpreter lives under /root, out of 65534's reach);
the module skips if no interpreter is usable by that user.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .mounting import Mount, start_mount, stop_mount

NOBODY = 65534


def _python_for_nobody() -> str | None:
    """An interpreter uid 65534 can run, or None."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if not candidate or not os.path.exists(candidate):
            continue
        done = subprocess.run(
            [candidate, "-I", "-c", "pass"],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return candidate
    return None


@pytest.fixture(scope="module")
def python() -> str:
    found = _python_for_nobody()
    if found is None:
        pytest.skip("no python interpreter that uid 65534 can run")
    return found


@pytest.fixture(scope="module")
def shared(redis_server) -> Iterator[Mount]:  # type: ignore[no-untyped-def]
    """A mount with --allow-other, at a path every user can reach."""
    base = Path(tempfile.mkdtemp(prefix="redisfuse-perms-"))
    base.chmod(0o755)
    volume = f"p-{secrets.token_hex(6)}"
    m = start_mount(base / "mnt", redis_server.url, volume, base / "mount.log", ["--allow-other"])
    try:
        yield m
    finally:
        code = stop_mount(m)
        log = m.log()
        if not os.path.ismount(m.path):  # never delete through a live mount
            shutil.rmtree(base, ignore_errors=True)
        if code not in (0, None):
            pytest.fail(f"mount exited with {code}:\n{log}", pytrace=False)


@pytest.fixture
def d(shared: Mount, request: pytest.FixtureRequest) -> Path:
    """A fresh directory for one test: root's, mode 0755."""
    path = shared.path / f"{request.node.name[:60]}-{secrets.token_hex(3)}"
    path.mkdir()
    path.chmod(0o755)
    return path


def as_nobody(python: str, code: str, *paths: Path) -> str:
    """Run ``code`` (paths in ``p``) as uid/gid 65534; "OK" or the errno name it failed with."""
    script = (
        "import os, sys\n"
        "p = sys.argv[1:]\n"
        "try:\n"
        + "".join(f"    {line}\n" for line in code.splitlines())
        + "except OSError as exc:\n"
        "    print(exc.errno)\n"
        "else:\n"
        "    print(0)\n"
    )
    done = subprocess.run(
        [python, "-I", "-c", script, *map(str, paths)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    code_ = int(done.stdout.split()[-1])
    return "OK" if code_ == 0 else errno.errorcode.get(code_, str(code_))


def make_file(path: Path, mode: int, data: bytes = b"root's data") -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


# -- reading and searching -----------------------------------------------------------


def test_other_user_reads_a_world_readable_file(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o644)
    assert as_nobody(python, "assert open(p[0], 'rb').read() == b\"root's data\"", f) == "OK"


def test_private_directory_cannot_be_listed(python: str, d: Path) -> None:
    os.mkdir(d / "private", 0o700)
    assert as_nobody(python, "os.listdir(p[0])", d / "private") == "EACCES"


def test_private_directory_cannot_be_searched(python: str, d: Path) -> None:
    os.mkdir(d / "private", 0o700)
    make_file(d / "private" / "f", 0o644)
    assert as_nobody(python, "os.stat(p[0])", d / "private" / "f") == "EACCES"


def test_private_file_cannot_be_read(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o600)
    assert as_nobody(python, "open(p[0], 'rb')", f) == "EACCES"


def test_read_only_file_cannot_be_written(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o644)
    assert as_nobody(python, "os.open(p[0], os.O_WRONLY)", f) == "EACCES"
    assert f.read_bytes() == b"root's data"


def test_read_only_file_cannot_be_truncated(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o644)
    assert as_nobody(python, "os.truncate(p[0], 0)", f) == "EACCES"
    assert f.read_bytes() == b"root's data"


# -- creating and removing -----------------------------------------------------------


def test_no_create_in_a_directory_without_write_permission(python: str, d: Path) -> None:
    assert as_nobody(python, "open(p[0], 'wb')", d / "new") == "EACCES"
    assert os.listdir(d) == []


def test_no_unlink_in_a_directory_without_write_permission(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o666)
    assert as_nobody(python, "os.unlink(p[0])", f) == "EACCES"
    assert f.exists()


def test_world_writable_directory_allows_create_owned_by_caller(python: str, d: Path) -> None:
    d.chmod(0o777)
    code = "open(p[0], 'wb').write(b'mine')\nos.mkdir(p[1])"
    assert as_nobody(python, code, d / "new", d / "newdir") == "OK"
    for name in ("new", "newdir"):
        st = os.stat(d / name)
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
    assert (d / "new").read_bytes() == b"mine"


def test_sticky_directory_protects_other_users_files(python: str, d: Path) -> None:
    d.chmod(0o1777)
    f = make_file(d / "f", 0o666)
    assert as_nobody(python, "os.unlink(p[0])", f) == "EPERM"
    assert as_nobody(python, "os.rename(p[0], p[1])", f, d / "moved") == "EPERM"
    assert sorted(os.listdir(d)) == ["f"]


def test_sticky_directory_lets_owners_remove_their_files(python: str, d: Path) -> None:
    d.chmod(0o1777)
    code = "open(p[0], 'wb').close()\nos.rename(p[0], p[1])\nos.unlink(p[1])"
    assert as_nobody(python, code, d / "mine", d / "mine2") == "OK"
    assert os.listdir(d) == []


def test_without_sticky_bit_others_files_can_be_removed(python: str, d: Path) -> None:
    d.chmod(0o777)
    f = make_file(d / "f", 0o644)
    assert as_nobody(python, "os.unlink(p[0])", f) == "OK"
    assert os.listdir(d) == []


# -- attribute changes ---------------------------------------------------------------


def test_write_by_another_user_clears_setuid(python: str, d: Path) -> None:
    d.chmod(0o777)
    f = make_file(d / "f", 0o4777)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o4777
    code = "fd = os.open(p[0], os.O_WRONLY)\nos.write(fd, b'X')\nos.close(fd)"
    assert as_nobody(python, code, f) == "OK"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert f.read_bytes() == b"Xoot's data"


def test_write_by_another_user_clears_setgid_on_group_executable(python: str, d: Path) -> None:
    d.chmod(0o777)
    f = make_file(d / "f", 0o2777)
    code = "fd = os.open(p[0], os.O_WRONLY)\nos.write(fd, b'X')\nos.close(fd)"
    assert as_nobody(python, code, f) == "OK"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777


def test_chmod_by_non_owner_is_eperm(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o666)
    assert as_nobody(python, "os.chmod(p[0], 0o777)", f) == "EPERM"
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o666


def test_owner_may_chmod_its_own_file(python: str, d: Path) -> None:
    d.chmod(0o777)
    code = "open(p[0], 'wb').close()\nos.chmod(p[0], 0o600)"
    assert as_nobody(python, code, d / "mine") == "OK"
    assert stat.S_IMODE(os.stat(d / "mine").st_mode) == 0o600


def test_chown_by_non_root_is_eperm(python: str, d: Path) -> None:
    d.chmod(0o777)
    code = "open(p[0], 'wb').close()\nos.chown(p[0], 0, 0)"
    assert as_nobody(python, code, d / "mine") == "EPERM"
    assert os.stat(d / "mine").st_uid == NOBODY


def test_utime_now_needs_write_permission_only(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o666)
    os.utime(f, ns=(10**18, 10**18))
    assert as_nobody(python, "os.utime(p[0])", f) == "OK"
    assert os.stat(f).st_mtime_ns > 10**18


def test_explicit_utime_by_non_owner_is_eperm(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o666)
    os.utime(f, ns=(10**18, 10**18))
    assert as_nobody(python, "os.utime(p[0], ns=(5, 5))", f) == "EPERM"
    assert os.stat(f).st_mtime_ns == 10**18


def test_setgid_directory_passes_its_group_on(python: str, d: Path) -> None:
    os.chown(d, 0, 1234)
    d.chmod(0o2777)
    code = "open(p[0], 'wb').close()\nos.mkdir(p[1])"
    assert as_nobody(python, code, d / "f", d / "sub") == "OK"
    assert os.stat(d / "f").st_gid == 1234
    sub = os.stat(d / "sub")
    assert sub.st_gid == 1234
    assert sub.st_mode & stat.S_ISGID


def test_user_xattr_needs_write_permission(python: str, d: Path) -> None:
    f = make_file(d / "f", 0o644)
    assert as_nobody(python, "os.setxattr(p[0], 'user.k', b'v')", f) == "EACCES"
    os.setxattr(f, "user.k", b"root")
    assert as_nobody(python, "assert os.getxattr(p[0], 'user.k') == b'root'", f) == "OK"
