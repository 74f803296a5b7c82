"""The benchmark suite in one command: RedisFUSE beside its ceilings, measured in one run.

Run (as root for cold-cache figures and a real tmpfs mount):

    .venv/bin/python benchmarks/run.py [--quick] [--repeat 3] [--json FILE]

It starts a private redis-server (free port, temporary directory, no
persistence), mounts RedisFUSE with its default options (one mount per
``--event-loop`` asked for in ``--targets``) and the in-memory
pyfuse3 filesystem of ``memfs.py`` in temporary directories, makes a tmpfs
directory, and runs every workload of ``redisfuse.bench`` on each target
``--repeat`` times, interleaving the targets round by round so that a drift of
the machine hits all targets alike. It prints the medians side by side with the
ratio RedisFUSE / memfs and the noise (max - min over median), then measures,
on fresh mounts of their own:

- Redis commands and round trips per operation (lookup, getattr, create,
  1 MiB write, 1 MiB read ...), through ``rtproxy.py`` for what the mount sends
  and ``INFO commandstats`` for what Redis executed (Lua included), with the
  FUSE requests each operation caused (from the mount's ``--debug`` log);
- peak RSS of a mount with ``--cache-size 16`` writing and reading a file 4x
  that size, and of the main mount after the whole suite;
- Redis memory for compressible text and for random data: the bytes of the
  volume's ``o:*`` objects (STRLEN and MEMORY USAGE) against the logical size.

Whatever happens (an error, Ctrl-C, SIGTERM), everything is unmounted and
stopped, and the results gathered so far are printed and written.

Extra options after the known ones (``--file-mib 64``, ``--small-files 500`` ...)
are passed to ``redisfuse bench`` and override the sizes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis
import rtproxy

from redisfuse import bench
from redisfuse.backend.keys import Keys

MIB = 1 << 20
RF_LOOPS = {"redisfuse": "trio", "redisfuse-asyncio": "asyncio", "redisfuse-uvloop": "uvloop"}
"""RedisFUSE targets, each a mount of its own volume on one ``--event-loop``."""
TARGETS = ("tmpfs", "memfs", *RF_LOOPS)
DEFAULT_TARGETS = ("tmpfs", "memfs", "redisfuse")
MEMFS = Path(__file__).resolve().with_name("memfs.py")
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
PROBE_REPEAT = 3
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL
HEARTBEAT_SAFE_S = 1.2
"""The mount's housekeeping runs every 2 s; a probe starts at most this long after one."""
RSS_CACHE_MIB = 16
DEFAULT_ATTR_TIMEOUT_S = 10.0
"""RedisFUSE's default --attr-timeout: the uncached-getattr probe waits it out."""


def log(message: str) -> None:
    """Progress to stderr; stdout carries only the final tables."""
    print(message, file=sys.stderr, flush=True)  # noqa: T201


# -- processes: redis-server and mounts ---------------------------------------------


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


def match_read_ahead(source: Path, target: Path) -> dict[str, int | None]:
    """Give memfs the kernel read-ahead RedisFUSE's mount has, whatever RedisFUSE sets."""
    try:
        value = int(read_ahead_file(source).read_text())
        read_ahead_file(target).write_text(f"{value}\n")
        return {"redisfuse": value, "memfs": int(read_ahead_file(target).read_text())}
    except OSError as exc:
        log(f"could not match read-ahead: {exc}")
        return {"redisfuse": None, "memfs": None}


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


# -- the workloads, round by round ----------------------------------------------------


def bench_once(
    target: str, directory: Path, bench_args: list[str], time_limit: float, out: Path
) -> dict[str, Any]:
    """One pass of ``redisfuse bench`` in a child process (killed if it hangs)."""
    argv = [
        sys.executable,
        "-m",
        "redisfuse.bench",
        str(directory),
        "--repeat",
        "1",
        "--json",
        str(out),
        "--time-limit",
        str(time_limit),
        *bench_args,
    ]
    hard_limit = time_limit * (len(bench.WORKLOADS) + 4) + 300
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        proc.wait(timeout=hard_limit)
    except subprocess.TimeoutExpired:
        log(f"  {target}: bench still running after {hard_limit:.0f} s: killed")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not out.exists():
        return {"error": f"bench on {target} ended with {proc.returncode} and no results"}
    report: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return report


def run_rounds(
    targets: dict[str, Path],
    bench_args: list[str],
    repeat: int,
    time_limit: float,
    scratch: Path,
    results: dict[str, dict[str, list[dict[str, Any]]]],
    meta: dict[str, Any],
) -> None:
    """Every workload on every target, ``repeat`` times, targets interleaved per round."""
    for round_no in range(1, repeat + 1):
        for target, directory in targets.items():
            log(f"[round {round_no}/{repeat}] {target}: {directory}")
            report = bench_once(
                target, directory, bench_args, time_limit, scratch / f"{target}-{round_no}.json"
            )
            if "error" in report:
                meta.setdefault("errors", []).append(report["error"])
                log("  " + report["error"])
                continue
            meta["caches_dropped"] = meta.get("caches_dropped", True) and report["caches_dropped"]
            meta["sizes"] = report["sizes"]
            for key, row in report["workloads"].items():
                results[target].setdefault(key, []).append(
                    {
                        "value": row["values"][0],
                        "complete": row["complete"],
                        "error": (row["errors"] or [None])[0],
                        "detail": row["detail"],
                    }
                )


def summarize_workloads(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in bench.WORKLOADS:
        row: dict[str, Any] = {
            "label": w.label,
            "unit": w.unit,
            "higher_is_better": w.higher_is_better,
        }
        for target in TARGETS:
            runs = results.get(target, {}).get(w.key, [])
            if not runs:
                continue
            row[target] = {
                "values": [r["value"] for r in runs],
                **bench.summarize([r["value"] for r in runs]),
                "complete": all(r["complete"] for r in runs),
                "errors": [r["error"] for r in runs if r["error"]],
                "detail": runs[-1]["detail"],
            }
        mem = row.get("memfs", {}).get("median")
        for target in RF_LOOPS:
            rf = row.get(target, {}).get("median")
            row[f"ratio_{target}_memfs"] = rf / mem if rf is not None and mem else None
        out[w.key] = row
    return out


# -- per-operation Redis commands and round trips -------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_STATX_FORCE_SYNC = 0x2000
STATX_BASIC_STATS = 0x7FF


def statx_force_sync(path: Path) -> None:
    """stat that makes the kernel ask the filesystem (a FUSE GETATTR) even if it has attributes."""
    buf = ctypes.create_string_buffer(256)
    flags = AT_STATX_FORCE_SYNC | AT_SYMLINK_NOFOLLOW
    if _libc.statx(AT_FDCWD, os.fsencode(path), flags, STATX_BASIC_STATS, buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))


def command_stats(client: redis.Redis) -> Counter[str]:
    """Calls per command since Redis started (``INFO commandstats``), without INFO itself."""
    stats: Counter[str] = Counter()
    for key, value in client.info("commandstats").items():
        name = key.removeprefix("cmdstat_")
        if name != "info":
            stats[name] = int(value["calls"])
    return stats


_REQUEST = re.compile(rb"redisfuse\.fuse\.boundary: (\w+)\(")


class OpProbe:
    """Measures single operations on a mount whose Redis traffic passes through a proxy."""

    def __init__(self, client: redis.Redis, proxy: rtproxy.CountingProxy, mount: FuseMount) -> None:
        self.client = client
        self.proxy = proxy
        self.mount = mount
        self.last_beat = -1e9

    def quiet(self) -> None:
        """Keep the mount's housekeeping (heartbeat, gc: every 2 s) out of the window.

        Waits for the next heartbeat unless one passed less than 1.2 s ago, then
        for 30 ms without traffic.
        """
        if time.monotonic() - self.last_beat > HEARTBEAT_SAFE_S:
            self.proxy.wait_for(lambda c: c.name == "ZADD" and c.key.endswith(":sessions"), 5.0)
            self.last_beat = time.monotonic()
        last = -1
        while True:
            time.sleep(0.03)
            now = self.proxy.snapshot()[2]
            if now == last:
                return
            last = now

    def measure(self, op: Callable[[], object], settle: float = 0.05) -> dict[str, Any]:
        self.quiet()
        stats0 = command_stats(self.client)
        commands0, trips0, mark = self.proxy.snapshot()
        log_offset = self.mount.log_path.stat().st_size
        start = time.perf_counter()
        op()
        elapsed = time.perf_counter() - start
        time.sleep(settle)  # asynchronous follow-ups of the operation land in its window
        commands1, trips1, _ = self.proxy.snapshot()
        delta = command_stats(self.client) - stats0
        with self.mount.log_path.open("rb") as f:
            f.seek(log_offset)
            requests = [m.decode() for m in _REQUEST.findall(f.read())]
        return {
            "commands": commands1 - commands0,
            "round_trips": trips1 - trips0,
            "redis_commands": sum(delta.values()),
            "sent": [c.name for c in self.proxy.since(mark)],
            "executed": dict(delta),
            "fuse_requests": requests,
            "ms": elapsed * 1e3,
        }


def _open_new(box: list[int], path: Path) -> None:
    """Create ``path`` (O_EXCL) and keep its descriptor in ``box`` for the next probe."""
    box.append(os.open(path, NEW, 0o644))


def _median_sample(samples: list[dict[str, Any]], divide: int = 1) -> dict[str, Any]:
    """The sample with the median command count (its lists shown), plus the spread."""
    ordered = sorted(samples, key=lambda s: (s["commands"], s["round_trips"]))
    chosen = dict(ordered[len(ordered) // 2])
    for key in ("commands", "round_trips", "redis_commands"):
        values = sorted(s[key] for s in samples)
        chosen[f"{key}_range"] = [values[0] / divide, values[-1] / divide]
        chosen[key] = chosen[key] / divide
    chosen["ms"] = chosen["ms"] / divide
    chosen["samples"] = len(samples)
    return chosen


def run_op_probes(
    server: RedisServer, base: Path, random_data: bytes, memory_mib: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Commands, round trips and FUSE requests of single operations on a fresh mount.

    Returns them, and the Redis memory of text and random files written there.
    """
    proxy = rtproxy.CountingProxy("127.0.0.1", server.port)
    client = redis.Redis(port=server.port)
    mount = redisfuse_mount("probe", base, proxy.url, "probe", ["--debug"])
    mnt = mount.mountpoint
    out: dict[str, Any] = {}
    try:
        mount.start()
        d = mnt / "p"
        d.mkdir()
        for i in range(9):
            (d / f"f{i}").write_bytes(random_data[i * 4096 : (i + 1) * 4096])
        for i in range(PROBE_REPEAT):
            (d / f"one{i}").write_bytes(random_data[i * MIB : (i + 1) * MIB])
        for i in range(PROBE_REPEAT):  # one file per sample: RedisFUSE's block cache stays cold
            bench.seq_write(d / f"seq{i}", 32 * MIB, random_data)
        mount.stop()  # a fresh process: empty kernel and RedisFUSE caches
        mount.start()
        probe = OpProbe(client, proxy, mount)
        os.stat(d)
        idx = range(PROBE_REPEAT)
        log("  lookup, getattr")
        lookups, getattrs = [], []
        for i in idx:  # each cached probe right after its warm-up: RedisFUSE's TTL is 10 s
            lookups.append(probe.measure(partial(os.lstat, d / f"f{i}")))
            getattrs.append(probe.measure(partial(statx_force_sync, d / f"f{i}")))
        out["lookup, uncached"] = _median_sample(lookups)
        out["getattr, cached by RedisFUSE (statx FORCE_SYNC)"] = _median_sample(getattrs)
        if os.access(bench.DROP_CACHES, os.W_OK):
            samples = []
            for i in idx:
                bench.drop_caches()
                os.lstat(d / f"f{i}")  # RedisFUSE caches both names again
                bench.drop_caches()
                samples.append(probe.measure(partial(os.lstat, d / f"f{i}")))
            out["2 lookups (dir+file), RedisFUSE-cached, kernel dropped"] = _median_sample(samples)
        fds = [os.open(d / f"f{i + 3}", os.O_RDONLY) for i in idx]
        log(
            f"  getattr, uncached: waiting {DEFAULT_ATTR_TIMEOUT_S + 1:.0f} s for the attribute "
            "timeouts"
        )
        time.sleep(DEFAULT_ATTR_TIMEOUT_S + 1)
        out["getattr, uncached (fstat after attr timeout)"] = _median_sample(
            [probe.measure(partial(os.fstat, fd)) for fd in fds]
        )
        for fd in fds:
            os.close(fd)
        log("  create, write, read")
        created: list[dict[str, Any]] = []
        closed: list[dict[str, Any]] = []
        for i in idx:
            box: list[int] = []
            created.append(probe.measure(partial(_open_new, box, d / f"c{i}")))
            closed.append(probe.measure(partial(os.close, box[0])))
        out["create (open O_CREAT|O_EXCL of a new name)"] = _median_sample(created)
        out["close of the new empty file"] = _median_sample(closed)
        writes, syncs, closes = [], [], []
        block = memoryview(random_data)[4 * MIB : 5 * MIB]
        for i in idx:
            fd = os.open(d / f"w{i}", os.O_WRONLY | os.O_CREAT, 0o644)
            writes.append(probe.measure(partial(os.write, fd, block)))
            syncs.append(probe.measure(partial(os.fsync, fd)))
            closes.append(probe.measure(partial(os.close, fd)))
        out["write 1 MiB (one write(2) into a new file)"] = _median_sample(writes)
        out["fsync after the 1 MiB write"] = _median_sample(syncs)
        out["close after the fsync"] = _median_sample(closes)
        out["sequential write of 32 MiB + fsync, per MiB"] = _median_sample(
            [
                probe.measure(partial(bench.seq_write, d / f"s{i}", 32 * MIB, random_data))
                for i in idx
            ],
            divide=32,
        )
        reads = []
        for i in idx:
            bench.drop_caches([d / f"one{i}"])
            fd = os.open(d / f"one{i}", os.O_RDONLY)
            reads.append(probe.measure(partial(os.pread, fd, MIB, 0)))
            os.close(fd)
        out["read 1 MiB (a 1 MiB file), cold"] = _median_sample(reads)
        seq_reads = []
        for i in idx:
            bench.drop_caches([d / f"seq{i}"])
            seq_reads.append(probe.measure(partial(bench.seq_read, d / f"seq{i}")))
        out["sequential read of 32 MiB, cold, per MiB"] = _median_sample(seq_reads, divide=32)
        log("  Redis memory of text and random data")
        memory = redis_memory(client, mnt / "mem", "probe", random_data, memory_mib)
    finally:
        mount.stop()
        proxy.close()
        client.close()
    return out, memory


# -- Redis memory and mount RSS -------------------------------------------------------


def _object_keys(client: redis.Redis, volume: str) -> set[bytes]:
    return set(client.scan_iter(match=Keys(volume).pattern("o"), count=1000))


def redis_memory(
    client: redis.Redis, directory: Path, volume: str, random_data: bytes, size_mib: int = 64
) -> dict[str, Any]:
    """Stored bytes of a text file and of a random file against their logical size."""
    directory.mkdir()
    out: dict[str, Any] = {}
    for kind, pool in (("text", bench.text_pool()), ("random", random_data)):
        before = _object_keys(client, volume)
        used0 = int(client.info("memory")["used_memory"])
        bench.seq_write(directory / kind, size_mib * MIB, pool)
        time.sleep(0.2)
        used1 = int(client.info("memory")["used_memory"])
        new = sorted(_object_keys(client, volume) - before)
        pipe = client.pipeline(transaction=False)
        for key in new:
            pipe.strlen(key)
            pipe.memory_usage(key, samples=0)
        values = pipe.execute()
        stored = sum(values[0::2])
        usage = sum(v or 0 for v in values[1::2])
        logical = size_mib * MIB
        out[kind] = {
            "logical_bytes": logical,
            "objects": len(new),
            "stored_bytes": stored,
            "stored_pct": stored / logical * 100,
            "memory_usage_bytes": usage,
            "memory_usage_pct": usage / logical * 100,
            "used_memory_delta_bytes": used1 - used0,
        }
    return out


def run_rss_probe(server: RedisServer, base: Path, random_data: bytes) -> dict[str, Any]:
    """Peak RSS of a mount with --cache-size 16 writing, then reading, a file 4x that size."""
    mount = redisfuse_mount("rss", base, server.url, "rss", ["--cache-size", str(RSS_CACHE_MIB)])
    size = 4 * RSS_CACHE_MIB * MIB
    out: dict[str, Any] = {"cache_size_mib": RSS_CACHE_MIB, "file_mib": size // MIB}
    try:
        mount.start()
        pid = mount.pid
        out["start_rss_kib"] = vm_status(pid)["VmRSS"]
        path = mount.mountpoint / "big"
        for phase, work in (
            ("write", lambda: bench.seq_write(path, size, random_data)),
            ("read_cold", lambda: bench.seq_read(path)),
        ):
            if phase == "read_cold":
                bench.drop_caches([path])
            peak = _sample_peak_rss(pid, work)
            out[f"{phase}_peak_rss_kib"] = peak
            out[f"{phase}_vmhwm_kib"] = vm_status(pid)["VmHWM"]
    finally:
        mount.stop()
    return out


def _sample_peak_rss(pid: int, work: Callable[[], object]) -> int:
    """Run ``work`` while sampling the process's RSS every 10 ms; return the largest (KiB)."""
    peak = vm_status(pid)["VmRSS"]
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, vm_status(pid)["VmRSS"])
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        work()
    finally:
        stop.set()
        sampler.join()
    return max(peak, vm_status(pid)["VmRSS"])


# -- output ---------------------------------------------------------------------------


def _cell(row: dict[str, Any], target: str, unit: str) -> str:
    data = row.get(target)
    if data is None:
        return "-"
    if data["median"] is None:
        return "error"
    return bench.format_value(data["median"], unit) + ("" if data["complete"] else "*")


def _noise(row: dict[str, Any], targets: list[str]) -> str:
    parts = []
    for target in targets:
        spread = row.get(target, {}).get("spread_pct")
        parts.append("-" if spread is None else f"{spread:.0f}")
    return "/".join(parts) + "%"


def format_report(report: dict[str, Any]) -> str:
    lines: list[str] = []
    sizes = report.get("sizes") or {}
    code = report.get("redisfuse_code") or {}
    lines.append(f"RedisFUSE benchmarks: {report['command']}")
    machine = report.get("machine", {})
    if code:
        dirty = f", uncommitted: {', '.join(code['dirty'])}" if code["dirty"] else ""
        lines.append(f"RedisFUSE code: commit {code['commit']}{dirty}")
    if "loadavg_end" in machine:
        lines.append(
            f"{machine['cpus']} CPUs, load average {machine['loadavg_start'][0]:.2f} at the start, "
            f"{machine['loadavg_end'][0]:.2f} at the end (a busy machine makes every figure "
            f"noisy); took {report['duration_s'] / 60:.1f} min"
        )
    if sizes:
        lines.append(
            f"file {sizes['file_mib']} MiB, text {sizes['text_mib']} MiB, {sizes['small_files']:,} "
            f"small files of {sizes['small_size']} B, {sizes['random_reads']:,} random reads, "
            f"{sizes['dirs']:,} dirs; median of {report['repeat']} runs; noise = (max-min)/median "
            "per column"
        )
    workloads = report.get("workloads", {})
    shown = [t for t in TARGETS if any(t in row for row in workloads.values())]
    loops = [t for t in shown if t in RF_LOOPS]
    names = {t: RF_LOOPS.get(t, t) for t in shown}
    head = (
        f"{'workload':<42} {'unit':<6} "
        + " ".join(f"{names[t]:>9}" for t in shown)
        + " "
        + " ".join(f"{names[t] + '/m':>9}" for t in loops)
        + f"  {'noise ' + '/'.join(names[t][0] for t in shown):<14}"
    )
    lines += ["", "RedisFUSE columns: its --event-loop; X/m: that column / memfs", head]
    lines.append("-" * len(head))
    for row in workloads.values():
        if not any(t in row for t in shown):
            continue
        ratios = [row.get(f"ratio_{t}_memfs") for t in loops]
        lines.append(
            f"{row['label'][:42]:<42} {row['unit']:<6} "
            + " ".join(f"{_cell(row, t, row['unit']):>9}" for t in shown)
            + " "
            + " ".join(f"{'-' if r is None else f'{r:.2f}':>9}" for r in ratios)
            + f"  {_noise(row, shown)}"
        )
    lines.append("s rows: lower is better, so a ratio > 1 means RedisFUSE took longer")
    stopped = any(not row[t]["complete"] for row in workloads.values() for t in TARGETS if t in row)
    if stopped:
        lines.append(
            "* stopped at the time limit, or failed, in at least one run (a stopped figure is "
            "the rate over what was done; see the JSON for errors)"
        )
    if not report.get("caches_dropped", True):
        lines.append("note: kernel caches could not be dropped (not root): 'cold' is not cold")
    ra = report.get("read_ahead_kb")
    if ra:
        lines.append(
            f"kernel read-ahead: redisfuse {ra['redisfuse']} KiB, memfs set to {ra['memfs']} KiB"
        )
    ops = report.get("redis_ops") or {}
    if ops:
        head = (
            f"{'RedisFUSE operation (fresh mount, default options)':<54} {'cmds':>6} "
            f"{'RTs':>6} {'in Redis':>8}  FUSE requests / commands sent"
        )
        lines += ["", head, "-" * len(head)]
        for name, op in ops.items():
            requests = ",".join(_squeeze(op["fuse_requests"])) or "-"
            sent = ",".join(_squeeze(op["sent"])) or "-"
            lines.append(
                f"{name[:54]:<54} {op['commands']:>6.3g} {op['round_trips']:>6.3g} "
                f"{op['redis_commands']:>8.3g}  {requests[:40]} / {sent[:60]}"
            )
        lines.append(
            "cmds: commands the mount sent; RTs: round trips (waits for Redis), both "
            "counted by a RESP proxy; in Redis: INFO commandstats delta (Lua included); "
            f"median of {PROBE_REPEAT}"
        )
    mem = report.get("redis_memory")
    if mem:
        lines.append("")
        for kind, m in mem.items():
            lines.append(
                f"Redis memory, {kind} ({m['logical_bytes'] // MIB} MiB, "
                f"{m['objects']} objects): stored {m['stored_pct']:.1f}% of logical, "
                f"MEMORY USAGE {m['memory_usage_pct']:.1f}%, used_memory delta "
                f"{m['used_memory_delta_bytes'] / MIB:.1f} MiB"
            )
    rss = report.get("rss") or {}
    if "write_peak_rss_kib" in rss:
        lines.append(
            f"mount RSS with --cache-size {rss['cache_size_mib']}: start "
            f"{rss['start_rss_kib'] / 1024:.0f} MiB, peak writing {rss['file_mib']} MiB "
            f"{rss['write_vmhwm_kib'] / 1024:.0f} MiB, peak after reading it cold "
            f"{rss['read_cold_vmhwm_kib'] / 1024:.0f} MiB"
        )
    if "main_mount" in rss:
        lines.append(
            f"main RedisFUSE mount (default --cache-size 64) peak RSS over the suite: "
            f"{rss['main_mount']['VmHWM'] / 1024:.0f} MiB"
        )
    for error in report.get("errors", []):
        lines.append(f"error: {error}")
    return "\n".join(lines)


def _squeeze(names: list[str]) -> list[str]:
    """['read', 'read', 'read'] -> ['read x3'], keeping order."""
    out: list[str] = []
    for name in names:
        if out and out[-1].split(" x")[0] == name:
            head, _, count = out[-1].partition(" x")
            out[-1] = f"{head} x{int(count or 1) + 1}"
        else:
            out.append(name)
    return out


# -- main -----------------------------------------------------------------------------


def code_revision() -> dict[str, Any]:
    """The commit of the RedisFUSE code measured, and its uncommitted files."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    dirty = [line[3:] for line in git("status", "--porcelain", "redisfuse").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "dirty": dirty}


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="RedisFUSE beside tmpfs and an in-memory pyfuse3 filesystem, in one run."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="256 MiB instead of 1 GiB, 2,000 small files instead of 10,000 ...",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="runs per workload and target (default 3)",
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="where to write the results (default: "
        "rfbench-<time>.json in the system temporary directory)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=60.0,
        metavar="S",
        help="stop any single workload after S seconds (default 60)",
    )
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (default "
        f"{','.join(DEFAULT_TARGETS)}); redisfuse runs on --event-loop trio, the others "
        "on the loop they name",
    )
    parser.add_argument(
        "--no-probes",
        action="store_true",
        help="skip the per-operation, RSS and Redis memory measurements",
    )
    args, bench_args = parser.parse_known_args(argv)
    if args.quick:
        bench_args = ["--quick", *bench_args]
    check = argparse.ArgumentParser()
    bench.add_arguments(check)
    check.parse_args(["/", *bench_args])  # reject unknown options before starting anything
    targets_wanted = [t for t in args.targets.split(",") if t]
    if set(targets_wanted) - set(TARGETS):
        parser.error(f"unknown target(s) in {args.targets}")
    json_path = Path(
        args.json or Path(tempfile.gettempdir()) / time.strftime("rfbench-%Y%m%d-%H%M%S.json")
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)

    started = time.time()
    report: dict[str, Any] = {
        "command": " ".join(
            ["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "euid": os.geteuid(),
            "loadavg_start": os.getloadavg(),
        },
        "redisfuse_code": code_revision(),
        "repeat": args.repeat,
        "time_limit_s": args.time_limit,
        "bench_args": bench_args,
    }
    results: dict[str, dict[str, list[dict[str, Any]]]] = {t: {} for t in TARGETS}
    code = 0
    base = Path(tempfile.mkdtemp(prefix="rfbench-"))
    try:
        with ExitStack() as stack:
            stack.callback(remove_base, base)
            server = RedisServer(base / "redis")
            stack.callback(server.stop)
            server.start()
            report["machine"]["redis"] = redis.Redis(port=server.port).info("server")[
                "redis_version"
            ]
            targets: dict[str, Path] = {}
            if "tmpfs" in targets_wanted:
                targets["tmpfs"] = stack.enter_context(tmpfs_dir(base))
            memfs = FuseMount(
                "memfs",
                [sys.executable, str(MEMFS), str(base / "memfs-mnt")],
                base / "memfs-mnt",
                base / "memfs.log",
            )
            rf_mounts = {
                target: redisfuse_mount(
                    target, base, server.url, f"bench-{loop}", ["--event-loop", loop]
                )
                for target, loop in RF_LOOPS.items()
            }
            main_mount = rf_mounts["redisfuse"]
            if "memfs" in targets_wanted:
                stack.callback(memfs.stop)
                memfs.start()
                targets["memfs"] = memfs.mountpoint
            for target, rf_mount in rf_mounts.items():
                if target in targets_wanted:
                    stack.callback(rf_mount.stop)
                    rf_mount.start()
                    targets[target] = rf_mount.mountpoint
            if "memfs" in targets and "redisfuse" in targets:
                report["read_ahead_kb"] = match_read_ahead(main_mount.mountpoint, memfs.mountpoint)
            report["targets"] = {t: str(p) for t, p in targets.items()}
            log(f"redis-server on port {server.port}; targets: {report['targets']}")
            try:
                run_rounds(targets, bench_args, args.repeat, args.time_limit, base, results, report)
            finally:
                report["workloads"] = summarize_workloads(results)
            if "redisfuse" in targets:
                report["rss"] = {"main_mount": vm_status(main_mount.pid)}
            for target in RF_LOOPS:
                if target in targets:
                    rf_mounts[target].stop()
            memfs.stop()
            if not args.no_probes:
                random_data = bench.random_pool()
                log("per-operation probes (fresh mount behind a counting proxy)")
                sizes = report.get("sizes") or {"text_mib": 64}
                ops, memory = run_op_probes(server, base, random_data, sizes["text_mib"])
                report["redis_ops"] = ops
                report["redis_memory"] = memory
                log("mount RSS with --cache-size 16")
                report.setdefault("rss", {}).update(run_rss_probe(server, base, random_data))
    except KeyboardInterrupt:
        log("interrupted: everything was unmounted and stopped; partial results follow")
        code = 130
    except Exception as exc:  # report what we have, then fail
        log(f"failed: {type(exc).__name__}: {exc}")
        report.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        code = 1
    report.setdefault("workloads", summarize_workloads(results))
    report["duration_s"] = time.time() - started
    report["machine"]["loadavg_end"] = os.getloadavg()
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(format_report(report))  # noqa: T201
    print(f"\nJSON: {json_path}")  # noqa: T201
    return code


if __name__ == "__main__":
    sys.exit(main())
