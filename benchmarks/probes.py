"""The probes: Redis commands and round trips per operation, Redis memory, mount RSS.

Each runs on a fresh RedisFUSE mount of its own, after the rounds, so that its
caches and counters start empty:

- per operation (lookup, getattr, create, 1 MiB write, 1 MiB read ...): the
  mount's Redis connection passes through ``rtproxy.py`` (what the mount sends,
  and how often it waits), ``INFO commandstats`` gives what Redis executed (Lua
  included), and the mount's ``--debug`` log the FUSE requests each caused;
- Redis memory for compressible text and for random data: the bytes of the
  volume's ``o:*`` objects (STRLEN and MEMORY USAGE) against the logical size;
- peak RSS of a mount with ``--cache-size 16`` writing and reading a file 4x
  that size (and ``vm_status`` for the main mount's after the rounds).
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis
import rtproxy
from common import MIB, log
from targets import FuseMount, RedisServer, redisfuse_mount

from redisfuse import bench
from redisfuse.backend.keys import Keys

PROBE_REPEAT = 3
NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL
HEARTBEAT_SAFE_S = 1.2
"""The mount's housekeeping runs every 2 s; a probe starts at most this long after one."""
RSS_CACHE_MIB = 16
DEFAULT_ATTR_TIMEOUT_S = 10.0
"""RedisFUSE's default --attr-timeout: the uncached-getattr probe waits it out."""


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


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
