"""The targets of a run: a private redis-server, a tmpfs, and the FUSE mounts (memfs, RedisFUSE).

Each is started by ``open_targets`` with its cleanup pushed on the caller's
``ExitStack`` at once, so that an error, Ctrl-C or SIGTERM at any point still
unmounts and stops everything started so far. Mount processes run in sessions
of their own: a Ctrl-C reaches ``run.py``, which stops them in order.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import redis
from common import MEMFS_LOOPS, RF_LOOPS, log

MEMFS = Path(__file__).resolve().with_name("memfs.py")
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 6379:
            return port


class RedisServer:
    """A private redis-server: free port, its own directory, nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.workdir), "--save", "", "--appendonly", "no",
                "--daemonize", "no"]  # fmt: skip
        with (self.workdir / "redis.log").open("wb") as out:
            # A session of its own: Ctrl-C reaches this script, which stops it in order.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start:\n" + self.log_tail())
            time.sleep(0.05)
        client.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def is_mounted(path: Path) -> bool:
    """Whether the kernel lists ``path`` as a mountpoint (also when its FUSE process died)."""
    target = os.path.abspath(path)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and fields[1].encode().decode("unicode_escape") == target:
                return True
    return False


class FuseMount:
    """A FUSE filesystem process serving ``mountpoint`` (RedisFUSE or memfs)."""

    def __init__(self, name: str, argv: list[str], mountpoint: Path, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.mountpoint = mountpoint
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def start(self) -> None:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + READY_DEADLINE_S
        while not os.path.ismount(self.mountpoint):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} mount exited with {self.proc.returncode}:\n" + self.log_tail()
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} mount not ready after {READY_DEADLINE_S} s:\n" + self.log_tail()
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Unmount (lazily if busy), then end the process, escalating to SIGKILL."""
        path = str(self.mountpoint)
        if is_mounted(self.mountpoint):
            done = subprocess.run(["fusermount3", "-u", path], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if is_mounted(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)


def redisfuse_mount(
    name: str, base: Path, url: str, volume: str, extra: list[str] | None = None
) -> FuseMount:
    argv = [
        sys.executable,
        "-m",
        "redisfuse.fuse",
        str(base / f"{name}-mnt"),
        "--redis-url",
        url,
        "--volume",
        volume,
        *(extra or []),
    ]
    return FuseMount(name, argv, base / f"{name}-mnt", base / f"{name}.log")


def memfs_mount(name: str, base: Path, loop: str) -> FuseMount:
    """memfs (``memfs.py``) on one event loop."""
    mountpoint = base / f"{name}-mnt"
    argv = [sys.executable, str(MEMFS), str(mountpoint), "--event-loop", loop]
    return FuseMount(name, argv, mountpoint, base / f"{name}.log")


@contextmanager
def tmpfs_dir(base: Path) -> Iterator[Path]:
    """A tmpfs mounted for the run (root), else a fresh directory in /dev/shm."""
    if os.geteuid() == 0 and shutil.which("mount"):
        path = base / "tmpfs"
        path.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=50%", "rfbench", str(path)],
            check=True,
            capture_output=True,
        )
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False, capture_output=True)
            if is_mounted(path):
                subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="rfbench-", dir="/dev/shm"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)


def remove_base(base: Path) -> None:
    """Remove the run's temporary directory, never through a mount left behind."""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        prefix = str(base) + "/"
        left = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    if left:
        log(f"not removing {base}: still mounted there: {', '.join(left)}")
        return
    shutil.rmtree(base, ignore_errors=True)


def read_ahead_file(mountpoint: Path) -> Path:
    """The read_ahead_kb knob of the backing device (bdi) of a mount."""
    dev = os.stat(mountpoint).st_dev
    return Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")


def match_read_ahead(source: Path, targets: dict[str, Path]) -> dict[str, int | None]:
    """Give each memfs the kernel read-ahead RedisFUSE's mount has, whatever RedisFUSE sets.

    Returns the value read from ``source`` under ``"redisfuse"`` and the value
    each target then has under its name (all None if either step failed).
    """
    try:
        value = int(read_ahead_file(source).read_text())
        out: dict[str, int | None] = {"redisfuse": value}
        for name, target in targets.items():
            read_ahead_file(target).write_text(f"{value}\n")
            out[name] = int(read_ahead_file(target).read_text())
        return out
    except OSError as exc:
        log(f"could not match read-ahead: {exc}")
        return dict.fromkeys(("redisfuse", *targets))


class Targets:
    """The directories a run measures, by target name, and the FUSE mounts serving them."""

    def __init__(self) -> None:
        self.dirs: dict[str, Path] = {}
        """Target -> directory, in the order the rounds visit them."""
        self.mounts: dict[str, FuseMount] = {}

    def match_read_ahead(self) -> dict[str, int | None] | None:
        """Match every memfs to the first RedisFUSE mount's read-ahead (None: nothing to match)."""
        source = next((self.dirs[t] for t in RF_LOOPS if t in self.dirs), None)
        memfs = {t: self.dirs[t] for t in MEMFS_LOOPS if t in self.dirs}
        if source is None or not memfs:
            return None
        return match_read_ahead(source, memfs)

    def pids(self) -> dict[str, int]:
        """Target -> pid of the process serving it (memfs or RedisFUSE)."""
        return {name: mount.pid for name, mount in self.mounts.items()}

    def stop_mounts(self) -> None:
        """Unmount every FUSE target (the probes that follow want the machine to themselves)."""
        for mount in self.mounts.values():
            mount.stop()


def open_targets(
    stack: ExitStack, base: Path, server: RedisServer, wanted: Sequence[str]
) -> Targets:
    """Make tmpfs, then mount each memfs, then each RedisFUSE target in ``wanted``.

    RedisFUSE targets mount volumes of their own (``bench-LOOP``) of ``server``.
    """
    targets = Targets()
    if "tmpfs" in wanted:
        targets.dirs["tmpfs"] = stack.enter_context(tmpfs_dir(base))
    mounts = [memfs_mount(target, base, loop) for target, loop in MEMFS_LOOPS.items()]
    mounts += [
        redisfuse_mount(target, base, server.url, f"bench-{loop}", ["--event-loop", loop])
        for target, loop in RF_LOOPS.items()
    ]
    for mount in mounts:
        if mount.name in wanted:
            stack.callback(mount.stop)
            mount.start()
            targets.mounts[mount.name] = mount
            targets.dirs[mount.name] = mount.mountpoint
    return targets
