"""Cost per operation: the CPU of the mount and of Redis, and Redis's commands and reads, over
each small-file workload.

The workload process tells ``rounds.py`` where each workload begins and ends
(``redisfuse bench --sync-fds``); at each edge this meter waits until the
mount and Redis are quiet (the asynchronous tail of the last request, such as
a RELEASE or the FORGETs that follow a cache drop, lands in the window it
belongs to), then samples:

- the CPU time (user + system, every thread, also threads that ended) of the
  mount process and of ``redis-server``, from the kernel's per-process CPU
  clock (``clock_gettime`` on ``clock_getcpuclockid(pid)``): the same count as
  ``utime + stime`` of ``/proc/PID/stat``, but in nanoseconds instead of
  10 ms ticks, which would be 5 µs per operation over 2,000 operations. The
  workload process, and the ``ls`` and ``tar`` it starts, are not sampled:
  their CPU is the application's, not the filesystem's;
- ``INFO commandstats`` (calls per command, commands run by Lua scripts
  included, INFO itself excluded) and ``INFO stats`` ``total_reads_processed``
  (Redis's read events: one per request or pipeline a client sent and Redis
  read at once, that is one per round trip; a request over 16 KiB takes more,
  which the small-file workloads do not send). Counting at Redis leaves the
  mount's connection direct: ``rtproxy.py`` would add a hop and a Python
  process to every request on a 2-core machine, slowing the very mount being
  measured. INFO is sent before the clocks are read at a beginning and after
  them at an end, so its own CPU stays out of the window; its own read event
  is taken off.

A window holds what the mount spends during it, so on trio it is shifted: redis-py
arms an asyncio timer for the socket timeout of each read (the mount's
``--redis-timeout``, 10 s by default) and cancels it when the reply comes;
trio-asyncio keeps cancelled timers in its heap and wakes up for each one when it
would have expired (``_main_loop_one``: a ``move_on_after`` that runs out), some
200-270 µs of CPU per request on this machine, paid 10 s after the request, in
whichever window runs then (asyncio and uvloop drop cancelled timers without
waking). Waiting those 10 s at each edge would catch it, but it would also let the
mount's 10 s metadata and the kernel's 10 s entry and attribute caches expire
between workloads and change what the next one measures (``stat`` right after
``create_4k`` would no longer be cached).

Every RedisFUSE target shares the one ``redis-server`` and the targets run one
at a time, so Redis's deltas over a window are the measured mount's, except for
what the idle mounts do meanwhile (a heartbeat every 2 s, gc every 20 s) and
Redis's own timer. ``measure_background`` samples that with every mount idle
before the rounds; each window has that rate times its length taken off (as
each mount's own idle CPU from its CPU). The memfs windows of the same run,
which send nothing to Redis, measure it a second time: the report shows both.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from common import RF_LOOPS

COST_WORKLOADS = (
    "create_4k",
    "stat",
    "stat_cold",
    "ls_l",
    "read_4k_cold",
    "rename",
    "unlink",
    "mkdir",
    "rmdir",
    "tar_extract",
)
"""The small-file workloads measured per operation (the others move MiB, not operations)."""
OPERATION = {"ls_l": "entry listed", "tar_extract": "file or directory extracted"}
"""What one operation is where it is not one file (or directory) operated on."""
METRICS = ("wall_us", "mount_cpu_us", "redis_cpu_us", "redis_commands", "redis_round_trips")
"""Per-operation figures: RedisFUSE targets have all of them, memfs the first two."""
BACKGROUND_S = 6.0
"""How long every mount sits idle to measure the background (three heartbeats)."""
SETTLE_STEP_S = 0.05
SETTLE_QUIET_NS = 1_500_000
"""Quiet: the mount and Redis together used less CPU than this over one step (3 %)."""
SETTLE_MAX_S = 0.5
"""At most this long: longer would let the 10 s caches of the next workload age (and on
trio, requests of 10 s before keep the mount busy, see below)."""
NS_PER_US = 1000
CPUCLOCK_SCHED = 2
"""The kernel's per-process CPU clock (``MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)``)."""


def process_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` (all its threads, live or ended), in nanoseconds.

    ``clock_getcpuclockid(pid)`` made by hand: Python has no binding for it, and
    the clock id is the kernel's fixed encoding ``(~pid << 3) | CPUCLOCK_SCHED``.
    """
    return time.clock_gettime_ns(((~pid) << 3) | CPUCLOCK_SCHED)


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_ns: dict[int, int]
    """CPU time by pid."""
    commands: Counter[str]
    reads: int


def _delta(begin: Sample, end: Sample, pid: int) -> dict[str, Any]:
    """What happened between two samples: seconds, CPU of ``pid`` and Redis, Redis counters.

    ``redis_reads`` leaves out the read of the end sample's own INFO.
    """
    by_name = {name: n for name, n in (end.commands - begin.commands).items() if n}
    return {
        "seconds": end.at - begin.at,
        "cpu_ns": end.cpu_ns[pid] - begin.cpu_ns[pid],
        "redis_cpu_ns": end.cpu_ns[-1] - begin.cpu_ns[-1],
        "redis_commands": sum(by_name.values()),
        "redis_commands_by_name": by_name,
        "redis_reads": end.reads - begin.reads - 1,
    }


class CostMeter:
    """Samples the mounts' and Redis's CPU and Redis's counters at the edges of workloads."""

    def __init__(self, port: int, redis_pid: int, mounts: dict[str, int]) -> None:
        self.client = redis.Redis(port=port, socket_timeout=10)
        self.redis_pid = redis_pid
        self.mounts = mounts
        """Target -> pid of the process serving it."""
        self.background: dict[str, Any] = {}
        """Rates with every mount idle (``measure_background``): per second."""

    def close(self) -> None:
        self.client.close()

    def _counters(self) -> tuple[Counter[str], int]:
        info = self.client.info("commandstats", "stats")
        commands: Counter[str] = Counter()
        for key, value in info.items():
            if key.startswith("cmdstat_") and key != "cmdstat_info":
                commands[key.removeprefix("cmdstat_")] = int(value["calls"])
        return commands, int(info["total_reads_processed"])

    def _clocks(self, pids: Iterable[int]) -> dict[int, int]:
        clocks = {pid: process_cpu_ns(pid) for pid in pids}
        clocks[-1] = process_cpu_ns(self.redis_pid)
        return clocks

    def sample(self, pids: Iterable[int], *, begin: bool) -> Sample:
        """INFO then clocks at a beginning, clocks then INFO at an end (INFO stays outside)."""
        if begin:
            commands, reads = self._counters()
            at, clocks = time.monotonic(), self._clocks(pids)
        else:
            at, clocks = time.monotonic(), self._clocks(pids)
            commands, reads = self._counters()
        return Sample(at, clocks, commands, reads)

    def settle(self, pid: int) -> bool:
        """Wait (at most SETTLE_MAX_S) until ``pid`` and Redis use almost no CPU; True if so."""
        deadline = time.monotonic() + SETTLE_MAX_S
        last = process_cpu_ns(pid) + process_cpu_ns(self.redis_pid)
        while time.monotonic() < deadline:
            time.sleep(SETTLE_STEP_S)
            now = process_cpu_ns(pid) + process_cpu_ns(self.redis_pid)
            if now - last < SETTLE_QUIET_NS:
                return True
            last = now
        return False

    def measure_background(self, seconds: float = BACKGROUND_S) -> dict[str, Any]:
        """Rates per second with every mount idle: Redis's CPU, commands and reads, each
        mount's CPU."""
        pids = list(self.mounts.values())
        begin = self.sample(pids, begin=True)
        time.sleep(seconds)
        end = self.sample(pids, begin=False)
        first = _delta(begin, end, pids[0]) if pids else _delta(begin, end, -1)
        span = first["seconds"]
        self.background = {
            "seconds": span,
            "redis_cpu_us_per_s": first["redis_cpu_ns"] / NS_PER_US / span,
            "redis_commands_per_s": first["redis_commands"] / span,
            "redis_commands_by_name_per_s": {
                name: n / span for name, n in first["redis_commands_by_name"].items()
            },
            "redis_reads_per_s": first["redis_reads"] / span,
            "mount_cpu_us_per_s": {
                target: (end.cpu_ns[pid] - begin.cpu_ns[pid]) / NS_PER_US / span
                for target, pid in self.mounts.items()
            },
        }
        return self.background

    def edges(self, target: str, windows: dict[str, dict[str, Any]]) -> Callable[[str, str], None]:
        """The ``--sync-fds`` handler for one pass on ``target``: fills ``windows`` by workload."""
        pid = self.mounts[target]
        begun: dict[str, Sample] = {}

        def on_edge(edge: str, key: str) -> None:
            if key not in COST_WORKLOADS:
                return
            settled = self.settle(pid)
            if edge == "begin":
                begun[key] = self.sample([pid], begin=True)
                windows[key] = {"settled": settled}
            elif key in begun:
                window = _delta(begun.pop(key), self.sample([pid], begin=False), pid)
                windows[key] = {**window, "settled": windows[key]["settled"] and settled}

        return on_edge

    def per_operation(
        self, target: str, key: str, unit: str, run: dict[str, Any]
    ) -> dict[str, Any] | None:
        """One run's figures per operation, the idle background taken off; None if unknown.

        ``run`` is what ``rounds.py`` keeps of a run: ``value``, ``detail`` and the
        ``cost_window`` that ``edges`` measured.
        """
        window, value = run.get("cost_window") or {}, run["value"]
        ops = operations(key, run["detail"])
        if not ops or "seconds" not in window or not value:
            return None
        span = window["seconds"]
        bg = self.background
        mount_cpu = window["cpu_ns"] / NS_PER_US - bg["mount_cpu_us_per_s"][target] * span
        out = {
            "operations": ops,
            "wall_us": value * 1e6 / ops if unit == "s" else 1e6 / value,
            "mount_cpu_us": max(mount_cpu, 0.0) / ops,
        }
        if target in RF_LOOPS:
            redis_cpu = window["redis_cpu_ns"] / NS_PER_US - bg["redis_cpu_us_per_s"] * span
            commands = window["redis_commands"] - bg["redis_commands_per_s"] * span
            reads = window["redis_reads"] - bg["redis_reads_per_s"] * span
            out["redis_cpu_us"] = max(redis_cpu, 0.0) / ops
            out["redis_commands"] = max(commands, 0.0) / ops
            out["redis_round_trips"] = max(reads, 0.0) / ops
        return out


def operations(key: str, detail: dict[str, Any]) -> int:
    """How many operations a workload did, from its figure's detail (0 if unknown)."""
    if key == "ls_l":
        return int(detail.get("entries", 0))
    if key == "tar_extract":
        return int(detail.get("files", 0)) + int(detail.get("dirs", 0))
    return int(detail.get("files", detail.get("dirs", 0)))


def background_check(
    results: dict[str, dict[str, list[dict[str, Any]]]], memfs_targets: Iterable[str]
) -> dict[str, float] | None:
    """Redis's rates over every memfs window of the run (only the idle RedisFUSE mounts and
    Redis's timer are at work then): a second measure of the background, None without memfs."""
    seconds = cpu_ns = commands = reads = 0.0
    for target in memfs_targets:
        for runs in results.get(target, {}).values():
            for run in runs:
                window = run.get("cost_window") or {}
                if "seconds" in window:
                    seconds += window["seconds"]
                    cpu_ns += window["redis_cpu_ns"]
                    commands += window["redis_commands"]
                    reads += window["redis_reads"]
    if not seconds:
        return None
    return {
        "seconds": seconds,
        "redis_cpu_us_per_s": cpu_ns / NS_PER_US / seconds,
        "redis_commands_per_s": commands / seconds,
        "redis_reads_per_s": reads / seconds,
    }
