"""Measuring one cell: ops/s of one op at one concurrency, over a fixed window.

The window is fixed before the workers start: it opens after the warm-up and
closes ``duration`` seconds later. Each worker runs the op back to back, reads
the clock after every op, counts the ops that *completed* inside the window, and
stops at its close; ops/s is that count over the window's length. The workers
keep the time themselves, so a coordinating thread that cannot get the GIL (64
busy threads on one CPU) or a timer that an op which never suspends would starve
(``memory://``) cannot stretch the window.

Workers are asyncio tasks on one event loop (async subjects; they yield to the
loop every :data:`YIELD_EVERY` ops, so that tasks whose op never suspends still
take turns) or threads sharing one client (blocking subjects). Every loop is
bounded: by the window's close, by :data:`MAX_OPS_PER_WORKER`, and by
:data:`MAX_ERRORS` failed ops, after which the cell is abandoned and reported as
failed.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ._workloads import AsyncOp, SyncOp

__all__ = [
    "YIELD_EVERY",
    "CellResult",
    "Timing",
    "measure_async",
    "measure_threads",
    "merge_rounds",
]

MAX_OPS_PER_WORKER = 50_000_000
MAX_ERRORS = 100
STOP_GRACE_S = 30.0
#: Async workers yield to the event loop every this many ops (see the module doc).
YIELD_EVERY = 32


@dataclass(frozen=True)
class Timing:
    """How long each cell warms up and is measured, in seconds."""

    warmup: float
    duration: float


@dataclass
class CellResult:
    """One measured cell."""

    subject: str
    workload: str
    concurrency: int
    ops: int = 0
    seconds: float = 0.0
    ops_per_s: float | None = None
    anomalies: int = 0
    errors: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    #: With ``--rounds N``: each round's ops/s (``None`` for a failed round).
    rounds: list[float | None] = field(default_factory=list)
    #: (max - min) / median of the rounds' ops/s: how far to trust the median.
    spread: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The cell as a JSON object."""
        return asdict(self)


@dataclass
class _Tally:
    """A cell's window and counters (one slot per worker: no lost updates)."""

    workers: int
    opens: float = 0.0
    closes: float = 0.0
    counted: list[int] = field(default_factory=list)
    anomalies: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    first_error: str | None = None
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.counted = [0] * self.workers
        self.anomalies = [0] * self.workers
        self.errors = [0] * self.workers

    def schedule(self, timing: Timing) -> None:
        """Fix the window from now."""
        self.opens = time.perf_counter() + timing.warmup
        self.closes = self.opens + timing.duration

    def completed(self, worker: int, ok: bool) -> bool:
        """Count an op that just completed; ``False`` once the window has closed."""
        now = time.perf_counter()
        if now >= self.closes:
            return False
        if now >= self.opens:
            self.counted[worker] += 1
            if not ok:
                self.anomalies[worker] += 1
        return True

    def failed(self, worker: int, exc: BaseException) -> bool:
        """Count a failed op; ``False`` once the cell must stop."""
        self.errors[worker] += 1
        if self.first_error is None:
            self.first_error = f"{type(exc).__name__}: {exc}"
        if sum(self.errors) >= MAX_ERRORS:
            self.abandoned = True
        return not self.abandoned and time.perf_counter() < self.closes

    def finish(self, result: CellResult) -> CellResult:
        seconds = self.closes - self.opens
        result.ops = sum(self.counted)
        result.seconds = round(seconds, 4)
        result.anomalies = sum(self.anomalies)
        result.errors = sum(self.errors)
        if self.abandoned:
            result.error = f"abandoned after {result.errors} failed ops: {self.first_error}"
        elif result.errors:
            result.notes.append(f"{result.errors} failed ops, first: {self.first_error}")
        if result.error is None and seconds > 0:
            result.ops_per_s = round(result.ops / seconds, 1)
        if result.anomalies:
            result.notes.append(f"{result.anomalies} ops returned an unexpected result")
        if result.error is None and result.ops == 0:
            result.notes.append("no op completed inside the window")
        return result


async def measure_async(
    op: AsyncOp, concurrency: int, timing: Timing, result: CellResult
) -> CellResult:
    """Run ``concurrency`` tasks of ``op`` on the running loop; fill in ``result``."""
    tally = _Tally(concurrency)
    counter = itertools.count()

    async def worker(index: int) -> None:
        for n in range(MAX_OPS_PER_WORKER):
            if tally.abandoned:
                return
            try:
                ok = await op(next(counter))
            except Exception as exc:
                if not tally.failed(index, exc):
                    return
                await asyncio.sleep(0)  # a failing op may not suspend
                continue
            if not tally.completed(index, ok):
                return
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)

    tally.schedule(timing)
    tasks = [asyncio.create_task(worker(index)) for index in range(concurrency)]
    try:
        _done, pending = await asyncio.wait(
            tasks, timeout=timing.warmup + timing.duration + STOP_GRACE_S
        )
        if pending:
            result.notes.append(f"{len(pending)} workers did not stop in time (cancelled)")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return tally.finish(result)


def measure_threads(op: SyncOp, concurrency: int, timing: Timing, result: CellResult) -> CellResult:
    """Run ``concurrency`` threads of ``op`` (sharing its client); fill in ``result``."""
    tally = _Tally(concurrency)
    counter = itertools.count()  # next() on it is atomic under the GIL
    go = threading.Event()

    def worker(index: int) -> None:
        go.wait()
        for _n in range(MAX_OPS_PER_WORKER):
            if tally.abandoned:
                return
            try:
                ok = op(next(counter))
            except Exception as exc:
                if not tally.failed(index, exc):
                    return
                continue
            if not tally.completed(index, ok):
                return

    threads = [
        threading.Thread(target=worker, args=(index,), name=f"bench-{index}", daemon=True)
        for index in range(concurrency)
    ]
    try:
        for thread in threads:
            thread.start()
        tally.schedule(timing)
    finally:
        go.set()  # also on error: the started threads must not wait forever
        if tally.closes == 0.0:
            tally.closes = time.perf_counter()  # never scheduled: stop at once
        deadline = tally.closes + STOP_GRACE_S
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.perf_counter()))
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        result.notes.append(f"{stuck} worker threads did not stop in time")
    return tally.finish(result)


def merge_rounds(cells: list[CellResult]) -> list[CellResult]:
    """Merge repeated measurements of the same cell: median ops/s, every round kept.

    Cells measured once come back as they were (with ``rounds`` filled in). A cell
    is failed only if every round failed; a failed round is noted.
    """
    groups: dict[tuple[str, str, int], list[CellResult]] = {}
    for cell in cells:
        groups.setdefault((cell.subject, cell.workload, cell.concurrency), []).append(cell)
    merged: list[CellResult] = []
    for (subject, workload, concurrency), group in groups.items():
        rates = [c.ops_per_s for c in group if c.error is None and c.ops_per_s is not None]
        out = CellResult(subject, workload, concurrency)
        out.rounds = [c.ops_per_s if c.error is None else None for c in group]
        out.ops = sum(c.ops for c in group)
        out.seconds = round(sum(c.seconds for c in group), 4)
        out.anomalies = sum(c.anomalies for c in group)
        out.errors = sum(c.errors for c in group)
        for index, cell in enumerate(group):
            prefix = f"round {index + 1}: " if len(group) > 1 else ""
            out.notes.extend(prefix + note for note in cell.notes)
            if cell.error is not None and rates:
                out.notes.append(f"{prefix}failed: {cell.error}")
        if rates:
            median = statistics.median(rates)
            out.ops_per_s = round(median, 1)
            if len(rates) > 1 and median > 0:
                out.spread = round((max(rates) - min(rates)) / median, 3)
        else:
            out.error = next((c.error for c in group if c.error is not None), "no measurement")
        merged.append(out)
    return merged
