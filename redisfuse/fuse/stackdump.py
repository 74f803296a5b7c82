"""SIGUSR1 writes every thread's stack and every task's await chain to the mount's log.

For a mount that seems stuck (it does not unmount, or a request never
returns): ``kill -USR1 PID`` logs where each thread is and what each trio
and asyncio task awaits, and the mount keeps running. Two parts, because a
stuck mount may be stuck in two ways:

- faulthandler writes the threads' stacks to stderr from inside the signal
  handler, so it works even while the main thread never returns to Python;
- a Python signal handler logs the threads and the tasks of the running
  loops (trio's task tree, and the asyncio loop of the backend, which is
  trio-asyncio's loop on trio) once the main thread runs Python again.

Only reads the interpreter's state; holds nothing of the filesystem.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import signal
import sys
import threading
import traceback
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

DUMP_SIGNAL = signal.SIGUSR1

_backend_loop: asyncio.AbstractEventLoop | None = None
"""The asyncio loop the backend runs on (set by the mount once it runs)."""


def install() -> None:
    """Dump stacks on SIGUSR1 for the rest of the process (main thread only)."""
    signal.signal(DUMP_SIGNAL, _on_signal)
    # Chained: the C-level dump runs first, then Python's handler above.
    faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True, chain=True)


def set_backend_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Name the asyncio loop whose tasks a dump lists."""
    global _backend_loop
    _backend_loop = loop


def _on_signal(signum: int, frame: FrameType | None) -> None:
    log.info("stack dump (%s):\n%s", signal.Signals(signum).name, dump())


def dump() -> str:
    """Every thread's stack, trio's task tree and the backend loop's tasks, as text."""
    parts = [_threads(), _trio_tasks(), _asyncio_tasks()]
    return "\n".join(p for p in parts if p) + "\n-- end of stack dump --"


def _threads() -> str:
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        out.append(f"-- thread {names.get(ident, '?')} ({ident}):\n{stack}")
    return "".join(out)


def await_chain(awaitable: Any) -> tuple[list[tuple[FrameType, int]], Any]:
    """The frames a suspended coroutine waits in, outermost first, and what it waits on last.

    Follows coroutines, ``@types.coroutine`` generators and async generators
    (through gc, as trio's ``Task.iter_await_frames`` does: an ``asend`` does
    not expose its generator).
    """
    frames: list[tuple[FrameType, int]] = []
    current = awaitable
    while current is not None:
        if hasattr(current, "cr_frame"):
            if current.cr_frame is not None:
                frames.append((current.cr_frame, current.cr_frame.f_lineno))
            nxt = current.cr_await
        elif hasattr(current, "gi_frame"):
            if current.gi_frame is not None:
                frames.append((current.gi_frame, current.gi_frame.f_lineno))
            nxt = current.gi_yieldfrom
        elif type(current).__name__ in ("async_generator_asend", "async_generator_athrow"):
            gen = next((r for r in gc.get_referents(current) if hasattr(r, "ag_frame")), None)
            if gen is None or gen.ag_frame is None:
                return frames, current
            frames.append((gen.ag_frame, gen.ag_frame.f_lineno))
            nxt = gen.ag_await
        else:
            return frames, current
        if nxt is None:
            return frames, None
        current = nxt
    return frames, None


def _format_chain(awaitable: Any) -> str:
    frames, last = await_chain(awaitable)
    text = "".join(traceback.StackSummary.extract(iter(frames)).format())
    if last is not None:
        text += f"    awaiting {last!r}\n"
    return text


def _trio_tasks() -> str:
    trio = sys.modules.get("trio")
    if trio is None:
        return ""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return ""  # trio is not running in this thread
    if root is None:
        return ""
    out = ["-- trio tasks:\n"]

    def walk(task: Any, depth: int) -> None:
        out.append(f"{'  ' * depth}task {task.name}:\n{_format_chain(task.coro)}")
        for nursery in task.child_nurseries:
            for child in sorted(nursery.child_tasks, key=lambda t: t.name):
                walk(child, depth + 1)

    walk(root, 0)
    return "".join(out)


def _asyncio_tasks() -> str:
    loop = _backend_loop
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return ""
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:
        return ""  # the set changed under us (another thread); the threads part still helps
    out = [f"-- asyncio tasks of {loop!r} ({len(tasks)}):\n"]
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.append(f"task {task.get_name()} {task!r}:\n{_format_chain(task.get_coro())}")
    return "".join(out)
