"""Running the TypeScript adapters: spawn ``node benchmarks/bench.mjs`` and read its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._measure import CellResult, Timing
from ._servers import Pinning
from ._subjects import Subject
from ._workloads import node_config

__all__ = ["NodeRun", "node_version", "run_node_subject"]

BENCH_MJS = Path(__file__).with_name("bench.mjs")
MODULES_DIR = Path(__file__).resolve().parent.parent / "tests" / "interop" / "node_modules"
START_SLACK_S = 60.0
_ADAPTERS = {"ts-ioredis": "ioredis", "ts-redis": "redis"}


@dataclass
class NodeRun:
    """What a Node run gave: cells, library versions, its peak RSS, and any failure."""

    cells: list[CellResult]
    versions: dict[str, Any] = field(default_factory=dict)
    max_rss_mb: float | None = None
    error: str | None = None


def node_version() -> str | None:
    """``node --version`` without the ``v``, or ``None`` when Node is missing."""
    node = shutil.which("node")
    if node is None:
        return None
    done = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return done.stdout.strip().removeprefix("v") or None


def _failed(subject: Subject, plan: Sequence[tuple[str, int]], why: str) -> NodeRun:
    cells = [CellResult(subject.id, w, c, error=why) for w, c in plan]
    return NodeRun(cells, error=why)


def run_node_subject(
    subject: Subject,
    url: str,
    plan: Sequence[tuple[str, int]],
    timing: Timing,
    pinning: Pinning,
) -> NodeRun:
    """Measure ``plan`` on one TypeScript adapter in a Node process (bounded in time)."""
    node = shutil.which("node")
    if node is None:
        return _failed(subject, plan, "node not found on PATH")
    if not MODULES_DIR.is_dir():
        return _failed(subject, plan, f"{MODULES_DIR} missing: cd tests/interop && npm ci")
    workloads = list(dict.fromkeys(w for w, _c in plan))
    concurrency = list(dict.fromkeys(c for _w, c in plan))
    config = {
        "adapter": _ADAPTERS[subject.id],
        "url": url,
        "workloads": workloads,
        "concurrency": concurrency,
        "warmupMs": round(timing.warmup * 1000),
        "durationMs": round(timing.duration * 1000),
        "constants": node_config(),
        "modulesDir": str(MODULES_DIR),
    }
    cells_total = len(workloads) * len(concurrency)
    timeout = START_SLACK_S + cells_total * (timing.warmup + timing.duration) * 2
    try:
        done = subprocess.run(
            [*pinning.node_prefix(), node, str(BENCH_MJS)],
            input=json.dumps(config),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _failed(subject, plan, f"bench.mjs did not finish in {timeout:.0f} s (killed)")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout)[-1500:]
        return _failed(subject, plan, f"bench.mjs exited {done.returncode}: {tail}")
    if not reply.get("ok"):
        return _failed(subject, plan, f"bench.mjs failed: {reply.get('error')}"[:2000])
    by_cell = {(r["workload"], r["concurrency"]): r for r in reply["results"]}
    cells: list[CellResult] = []
    for workload, conc in plan:
        raw = by_cell.get((workload, conc))
        if raw is None:
            cells.append(CellResult(subject.id, workload, conc, error="no result from bench.mjs"))
            continue
        cells.append(
            CellResult(
                subject.id,
                workload,
                conc,
                ops=int(raw["ops"]),
                seconds=float(raw["seconds"]),
                ops_per_s=raw["ops_per_s"],
                anomalies=int(raw["anomalies"]),
                errors=int(raw["errors"]),
                error=raw["error"],
                notes=list(raw["notes"]),
            )
        )
    max_rss = reply.get("maxRssKb")
    return NodeRun(
        cells,
        versions=dict(reply.get("versions", {})),
        max_rss_mb=round(max_rss / 1024, 1) if isinstance(max_rss, int) else None,
    )
