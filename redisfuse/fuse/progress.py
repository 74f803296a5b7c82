"""Progress of long CLI commands: a tqdm bar on a terminal, plain lines (or nothing) elsewhere.

tqdm comes with the ``fuse`` extra, which holds the CLI's dependencies; without
it a terminal gets the plain lines too. Plain lines go to stderr every
``interval`` seconds and once at the end, so logs of a cron job or CI show how
far a dump got; commands whose output is parsed (fsck, gc) ask for no plain
lines and print exactly what they printed before.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, TextIO

PLAIN_INTERVAL_S = 5.0


def _tqdm() -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Shows ``done`` out of ``total`` (None: unknown) while a command runs.

    ``unit`` ``"B"`` counts bytes (shown as KiB, MiB...); anything else is a
    plain count. ``plain`` says whether a non-terminal gets periodic lines.
    """

    def __init__(
        self,
        what: str,
        total: int | None,
        unit: str,
        *,
        plain: bool = True,
        stream: TextIO | None = None,
        interval: float = PLAIN_INTERVAL_S,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.plain = plain
        self.interval = interval
        self.done = 0
        self.detail = ""
        self._last_line = time.monotonic()
        self._bar: Any = None
        tqdm = _tqdm() if self.stream.isatty() else None
        if tqdm is not None:
            self._bar = tqdm(
                total=total,
                desc=what,
                unit=unit if unit == "B" else " " + unit,
                unit_scale=unit == "B",
                unit_divisor=1024,
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def __repr__(self) -> str:
        kind = "bar" if self._bar is not None else "plain" if self.plain else "quiet"
        return f"<Progress {self.what!r} {kind} {self.done}/{self.total}>"

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(ok=kind is None)

    def _amount(self, n: int) -> str:
        return human_bytes(n) if self.unit == "B" else f"{n} {self.unit}"

    def line(self) -> str:
        """The plain progress line: what, how far, and the caller's detail."""
        of = f" of {self._amount(self.total)}" if self.total is not None else ""
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.what}: {self._amount(self.done)}{of}{detail}"

    def set_total(self, total: int | None) -> None:
        """Change the total once it is known (fsck learns it after listing the inodes)."""
        if total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def update(self, done: int, detail: str = "") -> None:
        """Set how far the work is (an absolute count, not an increment)."""
        if self.total is not None and done > self.total:
            self.set_total(done)  # a live volume grew under the estimate
        if self._bar is not None:
            self._bar.update(done - self.done)
            if detail and detail != self.detail:
                self._bar.set_postfix_str(detail, refresh=False)
        self.done = done
        self.detail = detail
        if self._bar is None and self.plain:
            now = time.monotonic()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def close(self, ok: bool = True) -> None:
        """End the bar, or write the last plain line (only after success)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.plain and ok:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self.plain = False
