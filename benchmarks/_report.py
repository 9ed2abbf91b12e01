"""The ratios and the printed table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._measure import CellResult
from ._subjects import Subject
from ._workloads import WORKLOADS

__all__ = ["GOAL_LAYER_RATIO", "GOAL_TIME_RATIO", "compute_ratios", "render_table"]

#: The goal for State vs raw redis-py (blocking): at most 10% more time per op.
GOAL_TIME_RATIO = 1.10
#: The goal for AsyncState vs the same commands sent through its own connection.
GOAL_LAYER_RATIO = 0.85
#: With several rounds, a cell whose (max - min) / median exceeds this is marked ``~``.
NOISY_SPREAD = 0.25

_Key = tuple[str, str, int]

#: (JSON name, column header, numerator subject, denominator subject, c64 rows only)
RATIOS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("async_vs_ts_ioredis", "AS/iored", "async-standalone", "ts-ioredis", False),
    ("async_vs_own_connection", "AS/raw", "async-standalone", "async-own", False),
    ("async_uvloop_vs_ts_ioredis", "ASuv/ior", "async-uvloop", "ts-ioredis", False),
    ("sync_vs_ts_ioredis", "S/iored", "sync-standalone", "ts-ioredis", False),
    ("sync_time_ratio_vs_redispy", "rpy/S t", "redispy-sync", "sync-standalone", False),
    ("async_time_ratio_vs_redispy", "rpy/AS t", "redispy-async", "async-standalone", False),
    ("async_cluster_vs_standalone", "AS cl/sa", "async-cluster", "async-standalone", True),
    ("sync_cluster_vs_standalone", "S cl/sa", "sync-cluster", "sync-standalone", True),
    # With --baseline REF: this tree's chat-state ÷ chat-state at REF, both in children.
    ("async_vs_baseline", "AS/base", "async-standalone@this", "async-standalone@base", False),
    ("async_uvloop_vs_baseline", "ASuv/bas", "async-uvloop@this", "async-uvloop@base", False),
    ("sync_vs_baseline", "S/base", "sync-standalone@this", "sync-standalone@base", False),
)


def _rate(index: dict[_Key, CellResult], key: _Key) -> float | None:
    cell = index.get(key)
    if cell is None or cell.error is not None or not cell.ops_per_s:
        return None
    return cell.ops_per_s


def compute_ratios(
    cells: Sequence[CellResult], plan: Sequence[tuple[str, int]]
) -> list[dict[str, Any]]:
    """One dict per row of ``plan``: every ratio whose two cells were measured."""
    index = {(c.subject, c.workload, c.concurrency): c for c in cells}
    rows: list[dict[str, Any]] = []
    for workload, conc in plan:
        row: dict[str, Any] = {"workload": workload, "concurrency": conc}
        for name, _header, top, bottom, c64_only in RATIOS:
            if c64_only and conc == 1:
                continue
            num = _rate(index, (top, workload, conc))
            den = _rate(index, (bottom, workload, conc))
            row[name] = round(num / den, 3) if num is not None and den else None
        rows.append(row)
    return rows


def _value(cell: CellResult | None) -> str:
    if cell is None:
        return "-"
    if cell.error is not None or cell.ops_per_s is None:
        return "ERR"
    flag = "!" if cell.notes else ""
    if cell.spread is not None and cell.spread > NOISY_SPREAD:
        flag += "~"
    return f"{cell.ops_per_s / 1000:.1f}{flag}"


def _ratio(value: Any, name: str) -> str:
    if value is None:
        return ""
    flag = "*" if name == "sync_time_ratio_vs_redispy" and value > GOAL_TIME_RATIO else ""
    return f"{value:.2f}{flag}"


def render_table(
    subjects: Sequence[Subject],
    cells: Sequence[CellResult],
    plan: Sequence[tuple[str, int]],
    ratios: Sequence[dict[str, Any]],
) -> str:
    """The table: rows workload x concurrency, columns subjects (k ops/s), then ratios."""
    index = {(c.subject, c.workload, c.concurrency): c for c in cells}
    shown_ratios = [r for r in RATIOS if any(row.get(r[0]) is not None for row in ratios)]
    label_width = 20
    header = f"{'workload':<{label_width}}" + "".join(f"{s.short:>9}" for s in subjects)
    if shown_ratios:
        header += " |" + "".join(f"{r[1]:>10}" for r in shown_ratios)
    lines = [header, "-" * len(header)]
    ratio_rows = {(r["workload"], r["concurrency"]): r for r in ratios}
    for workload, conc in plan:
        label = f"{workload.upper()} {WORKLOADS[workload].name} c{conc}"
        line = f"{label:<{label_width}}"
        line += "".join(f"{_value(index.get((s.id, workload, conc))):>9}" for s in subjects)
        if shown_ratios:
            row = ratio_rows.get((workload, conc), {})
            line += " |" + "".join(f"{_ratio(row.get(r[0]), r[0]):>10}" for r in shown_ratios)
        lines.append(line)
    lines.append("")
    lines.append("values: thousands of ops/s (higher is better); ERR = failed, - = not run,")
    lines.append("  ! = see the cell's notes in the JSON (failed ops, unexpected results, no ops)")
    if any(c.spread is not None for c in cells):
        lines.append(
            f"  median of the rounds; ~ = rounds spread over {NOISY_SPREAD:.0%} of the median"
        )
    if shown_ratios:
        legend = {
            "async_vs_ts_ioredis": "AS/iored  = AsyncState standalone ÷ TS state-ioredis "
            "(throughput; >1 = chat-state faster)",
            "async_vs_own_connection": "AS/raw    = AsyncState standalone ÷ the same commands "
            f"sent through its own connection (the layer tax; goal ≥ {GOAL_LAYER_RATIO:.2f})",
            "async_uvloop_vs_ts_ioredis": "ASuv/ior  = AsyncState standalone on uvloop ÷ "
            "TS state-ioredis (throughput)",
            "sync_vs_ts_ioredis": "S/iored   = State standalone ÷ TS state-ioredis (throughput)",
            "sync_time_ratio_vs_redispy": "rpy/S t   = raw redis-py sync ÷ State standalone "
            f"(time ratio; goal ≤ {GOAL_TIME_RATIO:.2f}, * = above it)",
            "async_time_ratio_vs_redispy": "rpy/AS t  = raw redis-py asyncio ÷ AsyncState "
            "standalone (time ratio)",
            "async_cluster_vs_standalone": "AS cl/sa  = AsyncState Cluster ÷ standalone (c64)",
            "sync_cluster_vs_standalone": "S cl/sa   = State Cluster ÷ standalone (c64)",
            "async_vs_baseline": "AS/base   = AsyncState standalone ÷ the same at --baseline "
            "(throughput; >1 = this tree faster)",
            "async_uvloop_vs_baseline": "ASuv/bas  = AsyncState on uvloop ÷ the same at "
            "--baseline (throughput)",
            "sync_vs_baseline": "S/base    = State standalone ÷ the same at --baseline "
            "(throughput)",
        }
        lines.extend(legend[r[0]] for r in shown_ratios)
    lines.append("subjects:")
    lines.extend(f"  {s.short:<9} {s.label}" for s in subjects)
    return "\n".join(lines)
