"""Real programs on a real mount: tar, git, sqlite, cp -a, rsync, make, an editor's save.

Each test runs one program the way a user would and checks the result with an
independent tool or against the same program's result on local disk.
Shortcuts: the tarball is built from the installed ``redis`` package (about
3 MB of real source, no ``__pycache__``); git and make run with a private
HOME and no system config, so the machine's settings cannot change them; a
test skips with the reason when its program is missing (scripts/setup
installs them all).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis

from .trees import build_tree, hardlink_groups, snapshot

try:
    import sqlite3
except ImportError:  # a Python built without libsqlite3
    sqlite3 = None  # type: ignore[assignment]

PROGRAM_TIMEOUT_S = 60


def need(*programs: str) -> None:
    """Skip the test, naming what to install, when a program is missing."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (run scripts/setup)")


def run(
    argv: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a program, failing the test with its output when it does not exit 0."""
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=PROGRAM_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}",
            pytrace=False,
        )
    return done.stdout


@pytest.fixture(scope="module")
def source_tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gzipped tarball of a real source tree: the installed redis-py package."""
    src = Path(redis.__file__).parent
    path = tmp_path_factory.mktemp("tarball") / "redis-src.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(
            src, arcname="redis", filter=lambda info: None if "__pycache__" in info.name else info
        )
    return path


def test_tar_extract_matches_local(work: Path, tmp_path: Path, source_tarball: Path) -> None:
    need("tar", "diff")
    local = tmp_path / "local"
    local.mkdir()
    run(["tar", "-xzf", source_tarball, "-C", local])
    run(["tar", "-xzf", source_tarball, "-C", work])
    count = sum(1 for _ in (work / "redis").rglob("*.py"))
    assert count > 50, f"only {count} .py files extracted"
    run(["diff", "-r", "--no-dereference", local / "redis", work / "redis"])
    # diff compares contents only; tar also restores modes, owners and mtimes.
    assert snapshot(work / "redis", dir_size=False) == snapshot(local / "redis", dir_size=False)


@pytest.fixture
def git_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}


def test_git_init_commit_clone_fsck(work: Path, git_env: dict[str, str]) -> None:
    need("git")
    git = [
        "git",
        "-c",
        "user.name=Redis Fuse",
        "-c",
        "user.email=rf@example.invalid",
        "-c",
        "init.defaultBranch=main",
    ]
    repo = work / "repo"
    run([*git, "init", "-q", repo], env=git_env)
    (repo / "README").write_text("first\n")
    (repo / "src").mkdir()
    for i in range(30):
        (repo / "src" / f"m{i}.py").write_text(f"X = {i}\n" * (i * 40 + 1))
    run([*git, "add", "-A"], cwd=repo, env=git_env)
    run([*git, "commit", "-q", "-m", "first"], cwd=repo, env=git_env)
    (repo / "README").write_text("second\n")
    (repo / "src" / "m3.py").unlink()
    run([*git, "commit", "-q", "-a", "-m", "second"], cwd=repo, env=git_env)
    run([*git, "gc", "-q"], cwd=repo, env=git_env)  # packs and rewrites refs: renames galore

    clone = work / "clone"
    run([*git, "clone", "-q", "--no-hardlinks", repo, clone], env=git_env)
    for where in (repo, clone):
        run([*git, "fsck", "--full", "--strict"], cwd=where, env=git_env)
        assert run([*git, "status", "--porcelain"], cwd=where, env=git_env) == ""
    log = run([*git, "log", "--format=%s"], cwd=clone, env=git_env)
    assert log.split() == ["second", "first"]
    assert (clone / "README").read_text() == "second\n"
    assert not (clone / "src" / "m3.py").exists()
    assert (clone / "src" / "m29.py").read_text() == "X = 29\n" * (29 * 40 + 1)


def _fill(db: Path, journal_mode: str) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, blob BLOB)")
        con.execute("CREATE INDEX t_name ON t(name)")
        for batch in range(10):  # many transactions: many journal/WAL cycles
            with con:
                con.executemany(
                    "INSERT INTO t (name, blob) VALUES (?, ?)",
                    [(f"row-{batch}-{i}", os.urandom(i % 300)) for i in range(400)],
                )
        with con:
            con.execute("UPDATE t SET name = name || '-x' WHERE id % 7 = 0")
            con.execute("DELETE FROM t WHERE id % 11 = 0")
        with con:  # a rolled-back transaction must leave no trace
            con.execute("DELETE FROM t")
            con.rollback()
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if journal_mode == "wal":  # the shared-memory index is mmapped from the mount
            assert os.stat(f"{db}-wal").st_size > 0
            assert os.stat(f"{db}-shm").st_size > 0
    finally:
        con.close()


def _check(db: Path) -> tuple[int, int]:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count = con.execute("SELECT count(*) FROM t").fetchone()[0]
        renamed = con.execute("SELECT count(*) FROM t WHERE name LIKE '%-x'").fetchone()[0]
    finally:
        con.close()
    return count, renamed


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_sqlite(work: Path, journal_mode: str) -> None:
    if sqlite3 is None:
        pytest.skip("this Python was built without the sqlite3 module")
    db = work / "test.db"
    _fill(db, journal_mode)
    expected_rows = sum(1 for i in range(1, 4001) if i % 11)
    expected_renamed = sum(1 for i in range(1, 4001) if i % 11 and i % 7 == 0)
    assert _check(db) == (expected_rows, expected_renamed)  # reopened
    if journal_mode == "wal":
        # The last close checkpoints the WAL into the database and removes it.
        assert not (work / "test.db-wal").exists()
    assert not (work / "test.db-journal").exists()
    copy = work / "copy.db"  # read back through the mount by a fresh file
    copy.write_bytes(db.read_bytes())
    assert _check(copy) == (expected_rows, expected_renamed)


def _round_trip(work: Path, tmp_path: Path, copy: list[str]) -> None:
    """Copy a local tree to the mount and back with ``copy``; all three must be alike."""
    need(copy[0])
    src = tmp_path / "src"
    build_tree(src)
    on_mount = work / "tree"
    back = tmp_path / "back"
    run([*copy, f"{src}/", f"{on_mount}/"])
    expected = snapshot(src, dir_size=False)
    assert snapshot(on_mount, dir_size=False) == expected
    assert hardlink_groups(on_mount) == hardlink_groups(src) != []
    run([*copy, f"{on_mount}/", f"{back}/"])
    assert snapshot(back) == snapshot(src)
    assert hardlink_groups(back) == hardlink_groups(src)


def test_cp_a_round_trip(work: Path, tmp_path: Path) -> None:
    # cp -a SRC/ DST/ with DST absent copies SRC as DST (GNU cp).
    _round_trip(work, tmp_path, ["cp", "-a"])


def test_rsync_round_trip(work: Path, tmp_path: Path) -> None:
    _round_trip(work, tmp_path, ["rsync", "-aHX"])


MAKEFILE = """\
prog: main.o util.o
\t$(CC) -o $@ main.o util.o

%.o: %.c util.h
\t$(CC) -c -o $@ $<
"""
MAIN_C = '#include <stdio.h>\n#include "util.h"\nint main(void) { printf("%d\\n", f()); }\n'
UTIL_H = "int f(void);\n"


def test_make_incremental(work: Path) -> None:
    need("make", "cc")
    env = {**os.environ, "CC": "cc", "LC_ALL": "C", "MAKEFLAGS": ""}
    (work / "Makefile").write_text(MAKEFILE)
    (work / "main.c").write_text(MAIN_C)
    (work / "util.h").write_text(UTIL_H)
    (work / "util.c").write_text("int f(void) { return 41; }\n")

    def compiled(out: str) -> list[str]:
        return sorted(re.findall(r"-c -o (\S+)", out))

    assert compiled(run(["make"], cwd=work, env=env)) == ["main.o", "util.o"]
    assert run([work / "prog"]) == "41\n"
    assert "is up to date" in run(["make"], cwd=work, env=env)

    # Age the build by a minute, in order (sources < objects < program), so the edit
    # below is newer than every output whatever the clock's resolution.
    base = time.time_ns() - 60_000_000_000
    for path in work.iterdir():
        rank = {".o": 1}.get(path.suffix, 2 if path.name == "prog" else 0)
        os.utime(path, ns=(base + rank * 10**9, base + rank * 10**9))
    assert "is up to date" in run(["make"], cwd=work, env=env)
    (work / "util.c").write_text("int f(void) { return 42; }\n")
    out = run(["make"], cwd=work, env=env)
    assert compiled(out) == ["util.o"], out
    assert "-o prog" in out
    assert run([work / "prog"]) == "42\n"
    assert "is up to date" in run(["make"], cwd=work, env=env)


def test_editor_save_replaces_atomically(work: Path) -> None:
    """write temp, fsync, rename over the original, fsync the directory (vim, emacs, VS Code)."""
    target = work / "notes.txt"
    target.write_bytes(b"old contents\n" * 1000)
    old_ino = os.stat(target).st_ino
    reader = open(target, "rb")  # a program that still has the old version open
    try:
        new = b"new contents\n" * 1500
        tmp = work / ".notes.txt.swp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, new)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, target)
        dirfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)

        st = os.stat(target)
        assert st.st_ino != old_ino
        assert st.st_size == len(new)
        assert target.read_bytes() == new
        assert sorted(os.listdir(work)) == ["notes.txt"]
        assert reader.read() == b"old contents\n" * 1000  # the replaced inode lives on
        assert os.fstat(reader.fileno()).st_nlink == 0
    finally:
        reader.close()
    assert target.read_bytes() == new
