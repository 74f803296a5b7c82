"""How long a change on one mount takes to be visible on another, and what a cached stat costs.

Run: ``.venv/bin/python benchmarks/visibility.py [--changes 300]``

Starts a private redis-server and two mounts (node A, node B) of one volume.
For each change made on A (a chmod, a new file, a write of new contents
closed on A) it polls B until the change shows, and reports the median and
99th percentile of those delays. Then it stats a cached file on B many times
and reads Redis' own command counter to show how many commands that cost.
The poll loop itself adds up to about 50 us to each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.aof_redis import AofRedis  # reused: a private redis-server
from tests.mount.mounting import start_mount, stop_mount


def _redis_cli(port: int, *args: str) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout


def _commands_processed(port: int) -> int:
    for line in _redis_cli(port, "INFO", "stats").splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed in INFO")


def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("change never became visible")
    return time.perf_counter() - start


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(a: Path, b: Path, changes: int) -> dict[str, dict[str, float]]:
    delays: dict[str, list[float]] = {"chmod": [], "create": [], "rewrite": []}
    (a / "f").write_bytes(b"v0")
    _until(lambda: (b / "f").exists())
    for i in range(changes):
        mode = 0o600 if i % 2 else 0o640
        os.stat(b / "f")  # make sure B has it cached
        os.chmod(a / "f", mode)
        delays["chmod"].append(_until(lambda m=mode: os.stat(b / "f").st_mode & 0o777 == m))
        name = f"n{i}"
        os.path.exists(b / name)  # B may cache the negative lookup
        (a / name).write_bytes(b"x")
        delays["create"].append(_until(lambda n=name: os.path.exists(b / n)))
        payload = f"version {i}".encode()
        (b / "f").read_bytes()
        (a / "f").write_bytes(payload)
        delays["rewrite"].append(_until(lambda p=payload: (b / "f").read_bytes() == p))
    return {
        kind: {
            "median_ms": statistics.median(v) * 1e3,
            "p99_ms": _pct(v, 0.99) * 1e3,
            "max_ms": max(v) * 1e3,
            "n": len(v),
        }
        for kind, v in delays.items()
    }


def cached_stat_cost(b: Path, port: int, count: int = 2000) -> dict[str, float]:
    os.stat(b / "f")
    before = _commands_processed(port)
    start = time.perf_counter()
    for _ in range(count):
        os.stat(b / "f")
    elapsed = time.perf_counter() - start
    after = _commands_processed(port)
    # INFO itself counts as one command.
    return {
        "stats": count,
        "redis_commands": after - before - 1,
        "us_per_stat": elapsed / count * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rf-vis-") as tmp:
        base = Path(tmp)
        redis = AofRedis(base)
        redis.start()
        volume = f"vis-{secrets.token_hex(4)}"
        a = b = None
        try:
            a = start_mount(base / "a", redis.url, volume, base / "a.log")
            b = start_mount(base / "b", redis.url, volume, base / "b.log")
            result = {
                "visibility": measure(a.path, b.path, args.changes),
                "cached_stat": cached_stat_cost(b.path, redis.port),
            }
        finally:
            for m in (b, a):
                if m is not None:
                    stop_mount(m)
            redis.stop()
    for kind, figures in result["visibility"].items():
        sys.stdout.write(
            f"{kind:8} median {figures['median_ms']:.2f} ms  p99 {figures['p99_ms']:.2f} ms  "
            f"max {figures['max_ms']:.2f} ms  (n={figures['n']})\n"
        )
    cs = result["cached_stat"]
    sys.stdout.write(
        f"cached stat on B: {cs['redis_commands']} Redis commands for {cs['stats']} stats, "
        f"{cs['us_per_stat']:.1f} us each\n"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
