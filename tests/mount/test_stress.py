"""Two mounts hammer one volume with random operations at once; the volume stays consistent.

Each node runs a worker thread doing random creates, writes, appends,
truncates, renames, links, unlinks, mkdirs and rmdirs in a shared directory
tree. Errors a racing peer can legitimately cause (ENOENT, EEXIST, ENOTEMPTY,
ESTALE ...) are expected; anything else fails the test. Afterwards both mounts
are stopped and fsck must find the volume consistent.
"""

from __future__ import annotations

import errno
import os
import random
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .mounting import start_mount, stop_mount

RACE_ERRNOS = {
    errno.ENOENT,
    errno.EEXIST,
    errno.ENOTEMPTY,
    errno.ESTALE,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.EINVAL,
    errno.EXDEV,
}
DURATION_S = 8.0


def _worker(
    root: Path, seed: int, errors: list[str], done: list[int], stop: threading.Event
) -> None:
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(12)]
    dirs = ["", "d0", "d1", "d0/e"]
    while not stop.is_set():
        here = root / rng.choice(dirs)
        a = here / rng.choice(names)
        b = root / rng.choice(dirs) / rng.choice(names)
        op = rng.randrange(10)
        try:
            if op == 0:
                a.write_bytes(os.urandom(rng.randrange(0, 150_000)))
            elif op == 1:
                with open(a, "r+b") as f:
                    f.seek(rng.randrange(0, 200_000))
                    f.write(os.urandom(rng.randrange(1, 70_000)))
            elif op == 2:
                with open(a, "ab") as f:
                    f.write(b"appended line\n")
            elif op == 3:
                os.truncate(a, rng.randrange(0, 100_000))
            elif op == 4:
                os.rename(a, b)
            elif op == 5:
                os.link(a, b)
            elif op == 6:
                os.unlink(a)
            elif op == 7:
                os.mkdir(root / rng.choice(dirs[1:]))
            elif op == 8:
                os.rmdir(root / rng.choice(dirs[1:]))
            else:
                with os.scandir(here) as listing:
                    for entry in listing:
                        entry.stat(follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in RACE_ERRNOS:
                errors.append(f"op {op} on {a} / {b}: {exc!r}")
        else:
            done.append(op)


@pytest.mark.timeout(120)
def test_two_nodes_racing_random_operations_leave_a_consistent_volume(
    redis_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    volume = f"s-{secrets.token_hex(4)}"
    a = start_mount(tmp_path / "a", redis_server.url, volume, tmp_path / "a.log")
    b = start_mount(tmp_path / "b", redis_server.url, volume, tmp_path / "b.log")
    errors: list[str] = []
    done: list[int] = []
    stop = threading.Event()
    try:
        for d in ("d0", "d1", "d0/e"):
            (a.path / d).mkdir(exist_ok=True)
        threads = [
            threading.Thread(target=_worker, args=(m.path, seed, errors, done, stop))
            for m, seed in ((a, 1), (b, 2), (a, 3), (b, 4))
        ]
        for t in threads:
            t.start()
        time.sleep(DURATION_S)  # the workload runs for a fixed time, not a wait for a state
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a worker hung"
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        stop.set()
        code_b = stop_mount(b)
        code_a = stop_mount(a)
    assert not errors, errors[:10]
    assert len(set(done)) == 10 and len(done) > 200, f"{len(done)} operations succeeded"
    assert (code_a, code_b) == (0, 0), a.log()[-2000:] + b.log()[-2000:]
    for log in (a.log(), b.log()):
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    fsck = subprocess.run(
        [
            sys.executable,
            "-c",
            "from redisfuse.fuse.cli import main; raise SystemExit(main())",
            "fsck",
            "--redis-url",
            redis_server.url,
            "--volume",
            volume,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
