"""Two mounts of one volume, and actions started on both at the same moment.

Shared by the two-mount tests (test_coherence.py, test_two_writers.py).
Shortcut: "the same moment" is a thread barrier; which side gets ahead varies
from round to round, as it does between two machines.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .mounting import Mount, start_mount, stop_mount


@contextlib.contextmanager
def mount_pair(url: str, base: Path) -> Iterator[tuple[Mount, Mount]]:
    """Two mounts ("node A" and "node B") of one fresh volume, unmounted after."""
    volume = f"c-{secrets.token_hex(6)}"
    a = start_mount(base / "a", url, volume, base / "a.log")
    try:
        b = start_mount(base / "b", url, volume, base / "b.log")
        try:
            yield a, b
        finally:
            assert stop_mount(b) == 0, b.log()
    finally:
        assert stop_mount(a) == 0, a.log()


def race(*actions: Callable[[], object]) -> list[object]:
    """Run the actions at the same moment in threads; return results or OSErrors."""
    barrier = threading.Barrier(len(actions))
    results: list[object] = [None] * len(actions)

    def run(i: int, action: Callable[[], object]) -> None:
        barrier.wait()
        try:
            results[i] = action()
        except OSError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, act)) for i, act in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
