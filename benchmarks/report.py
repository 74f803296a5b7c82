"""The printed report of ``run.py``: the side-by-side table, then the probes' figures.

Reads only the JSON-ready report dict (so a saved JSON can be printed again);
each figure is formatted by ``redisfuse.bench.format_value``, as in
``redisfuse bench``.
"""

from __future__ import annotations

from typing import Any

from common import (
    COLUMNS,
    MEMFS_LOOPS,
    MIB,
    NOISE_KEYS,
    REFERENCE,
    RF_LOOPS,
    TARGETS,
    memfs_on,
    same_loop_ratio_key,
)
from cost import OPERATION
from probes import PROBE_REPEAT

from redisfuse import bench


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


def _ratio_columns(shown: list[str]) -> list[tuple[str, str]]:
    """(heading, JSON key) of each ratio column, each RedisFUSE loop's side by side.

    ``X/m`` divides by memfs on trio (the reference); ``X/m-same`` by memfs on
    X's own loop, shown when that memfs ran (trio's would repeat ``trio/m``).
    """
    columns: list[tuple[str, str]] = []
    for target in shown:
        if target not in RF_LOOPS:
            continue
        columns.append((f"{COLUMNS[target]}/m", f"ratio_{target}_{REFERENCE}"))
        same = same_loop_ratio_key(target)
        if same is not None and memfs_on(RF_LOOPS[target]) in shown:
            columns.append((f"{COLUMNS[target]}/m-same", same))
    return columns


def _main_table(workloads: dict[str, Any]) -> list[str]:
    """Medians per target, ratios to memfs, noise: one line per workload, with legend."""
    shown = [t for t in TARGETS if any(t in row for row in workloads.values())]
    ratios = _ratio_columns(shown)
    widths = [max(9, len(heading)) for heading, _ in ratios]
    head = (
        f"{'workload':<42} {'unit':<6} "
        + " ".join(f"{COLUMNS[t]:>9}" for t in shown)
        + " "
        + " ".join(f"{heading:>{w}}" for (heading, _), w in zip(ratios, widths, strict=True))
        + f"  {'noise ' + '/'.join(NOISE_KEYS[t] for t in shown):<14}"
    )
    lines = ["RedisFUSE columns: its --event-loop; X/m: that column / memfs"]
    others = [COLUMNS[t] for t in shown if t in MEMFS_LOOPS and t != REFERENCE]
    if others:
        lines.append(
            f"{', '.join(others)}: memfs on that loop (memfs: on trio); "
            "X/m-same: that column / memfs on its own loop"
        )
    lines += [head, "-" * len(head)]
    for row in workloads.values():
        if not any(t in row for t in shown):
            continue
        values = [row.get(key) for _, key in ratios]
        lines.append(
            f"{row['label'][:42]:<42} {row['unit']:<6} "
            + " ".join(f"{_cell(row, t, row['unit']):>9}" for t in shown)
            + " "
            + " ".join(
                f"{'-' if r is None else f'{r:.2f}':>{w}}"
                for r, w in zip(values, widths, strict=True)
            )
            + f"  {_noise(row, shown)}"
        )
    return lines


def _per_op(value: float | None, digits: int = 0) -> str:
    """A figure per operation: µs to the unit (one decimal under 100), counts to ``digits``."""
    if value is None:
        return "-"
    if digits:
        return f"{value:.{digits}f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cost_table(report: dict[str, Any]) -> list[str]:
    """Cost per operation: one line per small-file workload and FUSE target, with legend."""
    workloads = report.get("workloads", {})
    measured = [
        key
        for key, row in workloads.items()
        if any("cost" in row.get(target, {}) for target in TARGETS)
    ]
    if not measured:
        return []
    head = (
        f"{'workload':<42} {'target':<9} {'wall':>7} {'mount':>7} {'x memfs':>7} "
        f"{'x m-same':>8} {'Redis':>6} {'cmds':>6} {'RTs':>5}  noise mount/Redis"
    )
    lines = [
        "",
        "Cost per operation (µs of CPU or counts per operation; median over the runs)",
        head,
        "-" * len(head),
    ]
    for key in measured:
        row = workloads[key]
        label = row["label"]
        first = True
        for target in TARGETS:
            cost = row.get(target, {}).get("cost")
            if not cost:
                continue

            def median(metric: str, cost: dict[str, Any] = cost) -> float | None:
                return cost.get(metric, {}).get("median")

            def spread(metric: str, cost: dict[str, Any] = cost) -> str:
                """Noise in %, "-" where the median is under 1 µs (a spread of nothing)."""
                figures = cost.get(metric, {})
                value, base = figures.get("spread_pct"), figures.get("median")
                return "-" if value is None or not base or base < 1 else f"{value:.0f}"

            ratio = same = None
            if target in RF_LOOPS:
                ratio = row.get(f"cpu_ratio_{target}_{REFERENCE}")
                same_key = same_loop_ratio_key(target)
                same = row.get(f"cpu_{same_key}") if same_key else None
            noise = spread("mount_cpu_us")
            if target in RF_LOOPS:
                noise += "/" + spread("redis_cpu_us")
            lines.append(
                f"{(label if first else '')[:42]:<42} {COLUMNS[target]:<9} "
                f"{_per_op(median('wall_us')):>7} {_per_op(median('mount_cpu_us')):>7} "
                f"{_per_op(ratio, 2) if ratio else '':>7} {_per_op(same, 2) if same else '':>8} "
                f"{_per_op(median('redis_cpu_us')) if target in RF_LOOPS else '':>6} "
                f"{_per_op(median('redis_commands'), 1) if target in RF_LOOPS else '':>6} "
                f"{_per_op(median('redis_round_trips'), 2) if target in RF_LOOPS else '':>5}"
                f"  {noise}%"
            )
            first = False
    per = "; ".join(
        f"{workloads[key]['label'].split(' of ')[0]}: per {what}"
        for key, what in OPERATION.items()
        if key in measured
    )
    lines += [
        "one operation: one file or directory" + (f" ({per})" if per else ""),
        "wall: µs per operation, from the rate; mount: CPU µs of the process serving the target",
        "  (memfs's own on memfs rows; the workload's own process is not counted);",
        "x memfs: mount / memfs-on-trio mount CPU; x m-same: / memfs on the same loop;",
        "Redis: redis-server CPU µs; cmds: commands Redis ran (Lua's included, INFO not);",
        "RTs: round trips (Redis read events); the idle background below is taken off each window",
    ]
    if any(
        "cost" in workloads[key].get(target, {})
        for key in measured
        for target, loop in RF_LOOPS.items()
        if loop == "trio"
    ):
        lines.append(
            "trio: a window also holds the CPU trio-asyncio spends on each request 10 s after "
            "it (see cost.py), for requests made 10 s before, by whichever workload"
        )
    background = report.get("cost_background") or {}
    idle = background.get("idle")
    if idle:
        mounts = ", ".join(f"{COLUMNS[t]} {v:.0f}" for t, v in idle["mount_cpu_us_per_s"].items())
        lines += [
            f"background, every mount idle for {idle['seconds']:.0f} s: Redis "
            f"{idle['redis_cpu_us_per_s']:.0f} µs CPU/s, {idle['redis_commands_per_s']:.1f} "
            f"commands/s, {idle['redis_reads_per_s']:.1f} reads/s;",
            f"  mounts, µs CPU/s: {mounts}",
        ]
    during = background.get("during_memfs")
    if during:
        lines.append(
            f"Redis during the memfs windows ({during['seconds']:.0f} s): "
            f"{during['redis_cpu_us_per_s']:.0f} µs CPU/s, "
            f"{during['redis_commands_per_s']:.1f} commands/s, "
            f"{during['redis_reads_per_s']:.1f} reads/s"
        )
    return lines


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
    lines += ["", *_main_table(workloads)]
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
        matched = ", ".join(f"{t} set to {ra[t]} KiB" for t in MEMFS_LOOPS if t in ra)
        lines.append(f"kernel read-ahead: redisfuse {ra['redisfuse']} KiB, {matched}")
    lines += _cost_table(report)
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
