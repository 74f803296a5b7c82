"""Two mounts hammer one volume with random operations at once; the volume stays consistent.

Each node runs worker threads doing random creates, writes, appends,
truncates, renames, links, unlinks, mkdirs and rmdirs in a shared directory
tree. Errors a racing peer can legitimately cause (ENOENT, EEXIST, ENOTEMPTY,
ESTALE ...) are expected; anything else fails the test. Afterwards both mounts
are stopped and fsck must find the volume consistent.

Whether a shared operation can succeed depends on what the others did (an
rmdir of a shared directory needs it empty), so between shared operations each
worker also runs the ten kinds, in turn, on a directory of its own that nobody
else touches. There every operation must succeed and the file must read back
as the worker's model of it says: that makes every kind of operation happen
(and be checked) under the race, whatever the interleaving. Each worker runs
until the time is up, it has been through its private script at least once and
MIN_SHARED of its shared operations succeeded, so a slow machine does fewer
rounds, never too few.
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
from dataclasses import dataclass, field
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
OPS = 10
"""Operation kinds: write, write at offset, append, truncate, rename, link, unlink,
mkdir, rmdir, list."""
PRIVATE_EVERY = 4
"""One step of a worker's private script before every this many shared operations."""
MIN_SHARED = 60
"""Shared operations each worker has seen succeed before it stops, however slow the
machine (it gives up after 50 times as many attempts)."""


@dataclass
class Tally:
    """What the workers did, shared between them (list.append is atomic)."""

    errors: list[str] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)
    """Kinds of the shared operations that succeeded."""
    private: list[int] = field(default_factory=list)
    """Kinds of the private operations (each must succeed)."""
    rounds: list[int] = field(default_factory=list)
    """Per worker, how often it went through its private script."""
    successes: list[int] = field(default_factory=list)
    """Per worker, how many of its shared operations succeeded."""


def _shared_op(root: Path, rng: random.Random, op: int) -> tuple[Path, Path]:
    """One random operation of kind ``op`` in the shared tree; raises what it meets."""
    names = [f"n{i}" for i in range(12)]
    dirs = ["", "d0", "d1", "d0/e"]
    here = root / rng.choice(dirs)
    a = here / rng.choice(names)
    b = root / rng.choice(dirs) / rng.choice(names)
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
    return a, b


class PrivateScript:
    """The ten kinds in turn on a worker's own directory, checked against a model.

    Nobody else touches the directory (the shared operations use other names), so
    every step must succeed: f is written, patched, appended to and truncated, then
    read back against the model; renamed to g, linked back to f (2 links), g unlinked
    (1 link); sub made and removed; the listing must be exactly f.
    """

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.model = b""
        self.step = 0
        self.rounds = 0

    def next(self) -> int:
        """Run the next step; return its kind (an OSError or AssertionError is a bug)."""
        op, f, g, rng = self.step, self.path / "f", self.path / "g", self.rng
        if op == 0:
            self.model = os.urandom(rng.randrange(0, 150_000))
            f.write_bytes(self.model)
        elif op == 1:
            at, chunk = rng.randrange(0, 200_000), os.urandom(rng.randrange(1, 70_000))
            with open(f, "r+b") as fh:
                fh.seek(at)
                fh.write(chunk)
            head = self.model[:at].ljust(at, b"\0")
            self.model = head + chunk + self.model[at + len(chunk) :]
        elif op == 2:
            with open(f, "ab") as fh:
                fh.write(b"appended line\n")
            self.model += b"appended line\n"
        elif op == 3:
            size = rng.randrange(0, 100_000)
            os.truncate(f, size)
            self.model = self.model[:size].ljust(size, b"\0")
            assert f.read_bytes() == self.model, f"{f} does not read back as written"
        elif op == 4:
            os.rename(f, g)
        elif op == 5:
            os.link(g, f)
            assert os.stat(f).st_nlink == 2, f"{f}: link count after link"
        elif op == 6:
            os.unlink(g)
            assert os.stat(f).st_nlink == 1, f"{f}: link count after unlink"
        elif op == 7:
            os.mkdir(self.path / "sub")
        elif op == 8:
            os.rmdir(self.path / "sub")
        else:
            names = []
            with os.scandir(self.path) as listing:
                for entry in listing:
                    entry.stat(follow_symlinks=False)
                    names.append(entry.name)
            assert names == ["f"], f"{self.path} lists {names}"
        self.step = (op + 1) % OPS
        if self.step == 0:
            self.rounds += 1
        return op


def _worker(root: Path, seed: int, tally: Tally, stop: threading.Event) -> None:
    rng = random.Random(seed)
    private = PrivateScript(root / f"w{seed}", rng)
    attempts = successes = 0
    try:
        os.mkdir(private.path)
        while (
            not stop.is_set()
            or private.rounds == 0
            or (successes < MIN_SHARED and attempts < 50 * MIN_SHARED)
        ):
            if attempts % PRIVATE_EVERY == 0:
                tally.private.append(private.next())
            op = rng.randrange(OPS)
            attempts += 1
            try:
                _shared_op(root, rng, op)
            except OSError as exc:
                if exc.errno not in RACE_ERRNOS:
                    tally.errors.append(f"shared op {op} (worker {seed}): {exc!r}")
            else:
                tally.shared.append(op)
                successes += 1
    except (OSError, AssertionError) as exc:
        tally.errors.append(f"private op {private.step} (worker {seed}): {exc!r}")
    finally:
        tally.rounds.append(private.rounds)
        tally.successes.append(successes)


@pytest.mark.timeout(120)
def test_two_nodes_racing_random_operations_leave_a_consistent_volume(
    redis_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    volume = f"s-{secrets.token_hex(4)}"
    a = start_mount(tmp_path / "a", redis_server.url, volume, tmp_path / "a.log")
    b = start_mount(tmp_path / "b", redis_server.url, volume, tmp_path / "b.log")
    tally = Tally()
    stop = threading.Event()
    try:
        for d in ("d0", "d1", "d0/e"):
            (a.path / d).mkdir(exist_ok=True)
        threads = [
            threading.Thread(target=_worker, args=(m.path, seed, tally, stop))
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
    assert not tally.errors, tally.errors[:10]
    assert len(tally.rounds) == 4 and min(tally.rounds) >= 1, tally.rounds
    assert set(tally.private) == set(range(OPS))
    assert min(tally.successes) >= MIN_SHARED, f"shared operations succeeded: {tally.successes}"
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
