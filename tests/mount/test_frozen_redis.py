"""A Redis that stops answering under a mount: requests fail at the deadline, the log says
so once, and everything comes back; a black-holed event connection is replaced.

The frozen Redis is the test's own (AofRedis: SIGSTOP, SIGCONT; thawed and
stopped in teardown whatever happens). Deadline 2 s and read timeout 1 s keep
it short: a syscall that needs Redis must fail within their sum plus SLACK_S
(FUSE and a busy 2-core machine). Shortcuts: the writer and the reader are
threads of the test, in directories of their own (a create and a lookup in
one directory would queue behind each other in the kernel); the other node
of the event test is a second mount of the session's Redis.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..aof_redis import AofRedis
from ..faultproxy import FaultProxy
from .mounting import start_mount, stop_mount, wait_for

DEADLINE_S = 2.0
READ_TIMEOUT_S = 1.0
SLACK_S = 1.5
BOUND_S = DEADLINE_S + READ_TIMEOUT_S + SLACK_S
"""The longest a syscall may wait while Redis does not answer."""


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from redisfuse.fuse.cli import main; raise SystemExit(main())"]
        + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Worker:
    """Runs ``step(i)`` in a thread until stopped, keeping each failed syscall with how
    long it took (``calls.what`` and ``calls.started`` name the syscall under way)."""

    name: str
    step: Callable[[int], None]
    calls: threading.local
    done: int = 0
    failures: list[tuple[float, float, str]] = field(default_factory=list)
    """(when it started, how long it took, what failed) of each failed syscall."""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=self.name)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.step(i)
                self.done += 1
            except OSError as exc:
                started = self.calls.started
                took = time.monotonic() - started
                self.failures.append((started, took, f"{self.calls.what}: {exc}"))
                time.sleep(0.05)
            i += 1

    def join(self, timeout: float) -> bool:
        """Stop it; whether it ended within ``timeout`` (a hung syscall ends only when
        the mount goes away)."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout)
        return self.thread is None or not self.thread.is_alive()


def test_a_frozen_redis_under_a_writer_and_a_reader(aof: AofRedis, tmp_path: Path) -> None:
    volume = f"frozen-{secrets.token_hex(4)}"
    mount = start_mount(
        tmp_path / "mnt",
        aof.url,
        volume,
        tmp_path / "mount.log",
        [
            "--redis-retry-deadline",
            str(DEADLINE_S),
            "--redis-read-timeout",
            str(READ_TIMEOUT_S),
        ],
    )
    acked: dict[str, str] = {}
    calls = threading.local()

    def call(what: str, fn: Callable[[], object]) -> object:
        calls.what, calls.started = what, time.monotonic()
        return fn()

    def write(i: int) -> None:
        path = mount.path / "w" / f"f{i:04d}"
        data = os.urandom(1000 + (i * 7919) % 100_000)
        fd = call("open", lambda: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        try:
            call("write", lambda: os.write(fd, data))
            call("fsync", lambda: os.fsync(fd))
        finally:
            call("close", lambda: os.close(fd))
        acked[path.name] = hashlib.sha256(data).hexdigest()

    originals = {f"r{i}": os.urandom(50_000 + i) for i in range(8)}

    def read(i: int) -> None:
        name = f"r{i % len(originals)}"
        fd = call("open", lambda: os.open(mount.path / "r" / name, os.O_RDONLY))
        try:
            data = call("read", lambda: os.read(fd, 1 << 20))
        finally:
            call("close", lambda: os.close(fd))
        assert data == originals[name], name

    workers: list[Worker] = []
    try:
        try:
            (mount.path / "w").mkdir()
            (mount.path / "r").mkdir()
            for name, data in originals.items():
                (mount.path / "r" / name).write_bytes(data)
            workers = [Worker("writer", write, calls), Worker("reader", read, calls)]
            for w in workers:
                w.start()
            wait_for(lambda: all(w.done >= 5 for w in workers), 30)

            aof.freeze()
            frozen = time.monotonic()
            wait_for(lambda: all(w.failures for w in workers), BOUND_S + 5)
            first_eio = max(w.failures[0][0] + w.failures[0][1] for w in workers) - frozen
            wait_for(lambda: "not answering for" in mount.log(), 5)
            stats = _cli("stats", str(mount.path), "--count", "1", "--interval", "0.1", timeout=10)
            time.sleep(READ_TIMEOUT_S + 1)  # the outage goes on: requests keep failing quickly
            counts = [w.done for w in workers]
            aof.thaw()
            thawed = time.monotonic()
            wait_for(lambda: all(w.done >= c + 5 for w, c in zip(workers, counts, strict=True)), 30)
            back = time.monotonic() - thawed
        finally:
            aof.thaw()
            stuck = [w.name for w in workers if not w.join(BOUND_S + 5)]
        assert not stuck, f"stuck in a syscall: {stuck}"
        assert mount.proc.poll() is None, mount.log()
        for w in workers:
            for _, took, what in w.failures:
                assert took <= BOUND_S, f"{w.name}: {what} took {took:.1f} s"
                assert f"[Errno {errno.EIO}]" in what, what
        for name, digest in acked.items():
            data = (mount.path / "w" / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, f"acknowledged {name} changed"
        for name, data in originals.items():
            assert (mount.path / "r" / name).read_bytes() == data
    finally:
        code = stop_mount(mount)  # also ends a syscall that hung
        for w in workers:
            w.join(10)
    assert code == 0, mount.log()
    log = mount.log()
    assert len(re.findall(r"WARNING .*Redis at .* not answering for", log)) == 1, log
    assert len(re.findall(r"INFO .*Redis at .* answering again after", log)) == 1, log
    assert len(re.findall(r"WARNING .*change events: nothing heard", log)) == 1, log
    assert len(re.findall(r" (WARNING|ERROR|CRITICAL) ", log)) == 2, log
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[-1].split()[-1].startswith("down:"), stats.stdout
    report = _cli("fsck", "--redis-url", aof.url, "--volume", volume)
    findings = [line for line in report.stdout.splitlines()[1:] if line != "volume is consistent"]
    # A write that failed at the deadline may have stored blocks that its late
    # commit then did not use (README): unreferenced, gc's to delete; nothing else.
    assert all(" leaked objects: " in line for line in findings), report.stdout + report.stderr
    assert report.returncode == (1 if findings else 0), report.stdout + report.stderr
    worst = max(took for w in workers for _, took, _ in w.failures)
    print(  # noqa: T201
        f"first EIO {first_eio:.2f} s after the freeze, slowest failed syscall {worst:.2f} s "
        f"(deadline {DEADLINE_S} s + read timeout {READ_TIMEOUT_S} s), back {back:.2f} s "
        f"after the thaw; {len(acked)} files acknowledged"
    )


VISIBLE_S = 0.5
"""Another node's change, carried by an event, shows within this (about 1.5-3.4 ms here)."""


def _appears(path: Path, timeout: float) -> float:
    """Poll (2 ms) until ``path`` exists; return how long it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not path.exists():
        assert time.monotonic() - start < timeout, f"{path.name} not visible after {timeout} s"
        time.sleep(0.002)
    return time.monotonic() - start


def test_a_black_holed_event_connection_is_replaced(redis_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Mount A reaches Redis through a proxy that stops forwarding A's subscription
    (keeping it open, as a NAT that forgot an idle flow); B writes. With kernel
    caches of 60 s, only change events can show B's new names on A."""
    volume = f"hole-{secrets.token_hex(4)}"
    slow_caches = ["--attr-timeout", "60", "--entry-timeout", "60", "--negative-timeout", "60"]
    with FaultProxy(redis_server.host, redis_server.port) as proxy:
        a = start_mount(
            tmp_path / "a",
            proxy.url,
            volume,
            tmp_path / "a.log",
            ["--redis-read-timeout", str(READ_TIMEOUT_S), *slow_caches],
        )
        b = None
        try:
            b = start_mount(tmp_path / "b", redis_server.url, volume, tmp_path / "b.log")
            for name in ("before", "after"):
                assert not (a.path / name).exists()  # A's kernel now caches "no such name"
            (b.path / "before").write_bytes(b"1")
            assert _appears(a.path / "before", VISIBLE_S) < VISIBLE_S
            assert proxy.blackhole_subscribers() == 1
            cut = time.monotonic()
            wait_for(lambda: "change events: subscribed again" in a.log(), 10, 0.005)
            noticed = time.monotonic() - cut
            (b.path / "after").write_bytes(b"2")
            took = _appears(a.path / "after", VISIBLE_S)
            assert (a.path / "after").read_bytes() == b"2"
        finally:
            if b is not None:
                assert stop_mount(b) == 0, b.log()
            assert stop_mount(a) == 0, a.log()
    log = a.log()
    assert noticed <= READ_TIMEOUT_S + SLACK_S, f"noticed after {noticed:.1f} s"
    assert len(re.findall(r"WARNING .*change events: nothing heard", log)) == 1, log
    assert len(re.findall(r" (WARNING|ERROR|CRITICAL) ", log)) == 1, log
    print(  # noqa: T201
        f"black-holed subscription replaced {noticed:.2f} s after the cut "
        f"(read timeout {READ_TIMEOUT_S} s); the next change showed in {took * 1000:.1f} ms"
    )
