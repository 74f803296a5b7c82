"""Summaries and tables of ``redisfuse bench``: medians, noise, and how a figure is printed.

``benchmarks/run.py`` prints its side-by-side table with the same
``summarize`` and ``format_value``, so a figure reads the same in both.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .model import Figure


def summarize(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median and noise: spread is (max - min) / median, in percent."""
    good = [v for v in values if v is not None]
    if not good:
        return {"median": None, "min": None, "max": None, "spread_pct": None}
    median = statistics.median(good)
    spread = (max(good) - min(good)) / median * 100 if median else None
    return {"median": median, "min": min(good), "max": max(good), "spread_pct": spread}


def format_value(value: float | None, unit: str) -> str:
    """A figure as printed in tables: seconds to the millisecond, rates to 3-4 digits."""
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def progress_line(key: str, figure: Figure) -> str:
    """One line per finished workload, printed while the suite runs."""
    if figure.error is not None:
        return f"  {key:<16} ERROR {figure.error}"
    mark = "" if figure.complete else f"  STOPPED at the {figure.seconds:.0f} s limit"
    value = format_value(figure.value, figure.unit)
    return f"  {key:<16} {value:>12} {figure.unit:<6} ({figure.seconds:.2f} s){mark}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table: median, unit and noise per workload."""
    lines = [f"{'workload':<40} {'median':>12} {'unit':<6} {'noise':>7}"]
    for row in report["workloads"].values():
        median = "error" if row["median"] is None else format_value(row["median"], row["unit"])
        noise = "-" if row["spread_pct"] is None else f"{row['spread_pct']:.0f}%"
        flag = "" if row["complete"] else "  (stopped at the time limit or failed)"
        lines.append(f"{row['label'][:40]:<40} {median:>12} {row['unit']:<6} {noise:>7}{flag}")
    if not report["caches_dropped"]:
        lines.append(
            "note: kernel caches could not be dropped (not root): 'cold' figures "
            "are only file-page cold"
        )
    return "\n".join(lines)
