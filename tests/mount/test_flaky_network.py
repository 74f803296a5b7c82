"""Two mounts work through proxies that lose replies and cut connections.

Each mount talks to Redis through its own fault proxy; a worker per mount runs
random operations (write a new file, overwrite, rename, unlink, read back) on
files of its own, with names both mounts can see. What a mount reported as
done (a close that succeeded, a rename or unlink that succeeded) is the truth
the end state must match: every file written and kept is there with its
contents, on both mounts, and fsck is clean. The run lasts
``REDISFUSE_SOAK_SECONDS`` (30 s in the suite; the README gives the long run).

No operation may fail: the faults are shorter than the retry deadline, and a
retried request must answer as its first run did. Shortcuts: each worker owns
its file names (two writers of one name race by design, see README); a file
whose operation failed anyway is left out of the end check, after the failure
itself has failed the test.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import threading
import time
from pathlib import Path

import pytest

from redisfuse.backend.scripts import ONCE_SCRIPTS, Scripts
from tests.faultproxy import FaultProxy, Faults

from .mounting import Mount, start_mount, stop_mount, wait_for
from .test_remount import cli

SOAK_SECONDS = float(os.environ.get("REDISFUSE_SOAK_SECONDS", "30"))


class Worker:
    """Random operations on one mount, remembering what the mount acknowledged."""

    def __init__(self, mount: Mount, tag: str, seed: int) -> None:
        self.mount = mount
        self.tag = tag
        self.random = random.Random(seed)
        self.files: dict[str, bytes] = {}
        self.uncertain: set[str] = set()
        self.ops = 0
        self.errors: list[str] = []
        self.failure: BaseException | None = None

    def _new_name(self) -> str:
        return f"{self.tag}-{secrets.token_hex(4)}"

    def _data(self) -> bytes:
        size = self.random.choice([0, 100, 4096, 70_000, 200_000])
        return self.random.randbytes(size)

    def step(self) -> None:
        root = self.mount.path
        names = sorted(self.files)
        op = self.random.choice(["write", "write", "overwrite", "rename", "unlink", "read"])
        if op in ("overwrite", "rename", "unlink", "read") and not names:
            op = "write"
        name = self.random.choice(names) if op != "write" else self._new_name()
        try:
            if op in ("write", "overwrite"):
                data = self._data()
                self.uncertain.add(name)  # until the close says otherwise
                self.files.pop(name, None)
                with open(root / name, "wb") as f:
                    f.write(data)
                self.files[name] = data
                self.uncertain.discard(name)
            elif op == "rename":
                new = self._new_name()
                self.uncertain |= {name, new}
                data = self.files.pop(name)
                os.rename(root / name, root / new)
                self.files[new] = data
                self.uncertain -= {name, new}
            elif op == "unlink":
                self.uncertain.add(name)
                del self.files[name]
                os.unlink(root / name)
                self.uncertain.discard(name)
            else:
                assert (root / name).read_bytes() == self.files[name], f"{name} reads wrong"
        except OSError as exc:
            self.errors.append(f"{op} {name}: {exc}")
        self.ops += 1

    def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                self.step()
        except BaseException as exc:  # reported by the test thread
            self.failure = exc


@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_two_mounts_through_flaky_proxies_keep_every_acknowledged_write(
    redis_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    volume = f"flaky-{secrets.token_hex(4)}"
    names = {sha: name for name, sha in Scripts().shas.items()}
    faults = Faults(drop_reply=0.01, drop_mutating=0.05, cut=0.002, delay=0.01)
    proxies = [
        FaultProxy(
            redis_server.host,
            redis_server.port,
            faults,
            script_names=names,
            mutating=ONCE_SCRIPTS,
            seed=seed,
        ).start()
        for seed in (1, 2)
    ]
    mounts: list[Mount] = []
    try:
        for i, proxy in enumerate(proxies):
            with proxy.calm():
                mounts.append(
                    start_mount(tmp_path / f"m{i}", proxy.url, volume, tmp_path / f"m{i}.log")
                )
        workers = [Worker(m, f"w{i}", seed=i) for i, m in enumerate(mounts)]
        until = time.monotonic() + SOAK_SECONDS
        threads = [threading.Thread(target=w.run, args=(until,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in workers:
            if w.failure is not None:
                raise w.failure
        for proxy in proxies:
            proxy.faults = Faults()
        lost = sum(sum(p.dropped.values()) for p in proxies)
        cuts = sum(p.cuts for p in proxies)
        print(  # noqa: T201
            f"\n{sum(w.ops for w in workers)} operations, {lost} replies lost, {cuts} cuts, "
            f"{sum(len(w.errors) for w in workers)} operations failed"
        )
        assert lost > 0
        # Retries hide every fault within the retry deadline; a replayed request
        # that answered differently from its first run would surface here.
        failed = [e for w in workers for e in w.errors]
        assert not failed, failed[:10]

        # Each mount's retries show in `redisfuse status` (its heartbeat reports them).
        def retries_shown() -> bool:
            status = cli("status", "--redis-url", redis_server.url, "--volume", volume)
            counts = [int(n) for n in re.findall(r"retries (\d+)", status.stdout)]
            return len(counts) == 2 and all(counts)

        wait_for(retries_shown, timeout=20)
        for m in mounts:  # lost replies never made a live mount look dead
            assert "declared dead" not in m.log(), m.log()[-3000:]

        # Every acknowledged file is there, whole, as both mounts see it.
        for w in workers:
            for m in mounts:
                listing = set(os.listdir(m.path))
                for name, data in w.files.items():
                    if name in w.uncertain:
                        continue
                    assert name in listing, f"{name} written by {w.tag} is missing on {m.path}"
                    assert (m.path / name).read_bytes() == data, f"{name} differs on {m.path}"
                mine = {n for n in listing if n.startswith(w.tag + "-")}
                stray = mine - set(w.files) - w.uncertain
                assert not stray, f"files {w.tag} removed are back on {m.path}: {stray}"
    finally:
        codes = [stop_mount(m) for m in mounts]
        for proxy in proxies:
            proxy.stop()
    assert all(code == 0 for code in codes), [m.log()[-2000:] for m in mounts]
    report = cli("fsck", "--redis-url", redis_server.url, "--volume", volume)
    assert report.returncode == 0, report.stdout + report.stderr
