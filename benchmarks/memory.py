"""Memory probes, each run in a fresh Python process by ``benchmarks.run --memory``.

::

    python -m benchmarks.memory subscriptions --count 1000000 [--bare]
    python -m benchmarks.memory long --url memory:// --seconds 30 [--concurrency 64]

``subscriptions``: the RSS growth of a ``memory://`` :class:`~chat_state.State`
holding ``count`` subscriptions (``--bare``: the same thread ids in a plain Python
``set``, the floor any in-process store pays). ``long``: an
:class:`~chat_state.AsyncState` running the W1/W3/W4/W5 mix with ``concurrency``
tasks for ``seconds``, RSS sampled every second; the growth after the warm-up is
what a leak would show. Each prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

from chat_state import AsyncState, MemoryStore, QueueEntry, State

from ._measure import YIELD_EVERY
from ._workloads import SUBSCRIPTIONS, AsyncOp, async_state_ops, member

__all__ = [
    "getrusage_peak_mb",
    "main",
    "peak_rss_mb",
    "probe_long",
    "probe_subscriptions",
    "rss_mb",
]

MB = 1024 * 1024
LONG_MIX = ("w1", "w3", "w4", "w5")
SAMPLE_EVERY_S = 1.0
MAX_SAMPLES = 10_000
MAX_OPS_PER_WORKER = 50_000_000


def _status_mb(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_mb() -> float:
    """This process's resident set size now (``VmRSS``), in MiB."""
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``), in MiB.

    Not ``getrusage``: Linux carries ``ru_maxrss`` over from the parent across
    fork + exec, so a probe spawned by the runner would report the runner's peak.
    """
    return _status_mb("VmHWM")


def getrusage_peak_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def probe_subscriptions(count: int, *, bare: bool) -> dict[str, Any]:
    """RSS growth for ``count`` subscriptions in a memory:// State (or a bare set)."""
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    holder: Any
    if bare:
        holder = {member(n) for n in range(count)}
        found = member(count - 1) in holder
        elapsed = time.perf_counter() - started
        gc.collect()
        after = rss_mb()
    else:
        with State.from_url("memory://") as state:
            for n in range(count):
                state.subscribe(member(n))
            elapsed = time.perf_counter() - started
            found = state.is_subscribed(member(count - 1))
            gc.collect()
            after = rss_mb()
            holder = state
    growth = after - before
    return {
        "probe": "subscriptions",
        "store": "python set" if bare else "chat-state State memory://",
        "count": count,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "growth_mb": round(growth, 1),
        "bytes_per_subscription": round(growth * MB / count, 1),
        "seconds": round(elapsed, 2),
        "inserts_per_s": round(count / elapsed, 1) if elapsed > 0 else None,
        "check": bool(found) and holder is not None,
    }


def _store_counts(client: Any) -> dict[str, int] | None:
    """For memory://, the live keys and the pending expiry-heap entries (internals, read
    only to explain an RSS figure); ``None`` for a server backend."""
    if not isinstance(client, MemoryStore):
        return None
    return {
        "keys": len(getattr(client, "_data", ())),
        "expiry_heap_entries": len(getattr(client, "_heap", ())),
    }


async def _long(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    warmup = max(1.0, seconds * 0.1)
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    done = [0] * concurrency
    stop = False
    async with AsyncState.from_url(url) as state:
        for n in range(SUBSCRIPTIONS):
            await state.subscribe(member(n))
        ops: list[AsyncOp] = [async_state_ops(state, w, f"long{w}", QueueEntry) for w in LONG_MIX]
        counter = itertools.count()

        async def worker(index: int) -> None:
            for n in range(MAX_OPS_PER_WORKER):
                if stop or len(errors) >= 100:
                    return
                try:
                    await ops[n % len(ops)](next(counter))
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    await asyncio.sleep(0)
                    continue
                done[index] += 1
                if n % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # memory:// ops never suspend

        tasks = [asyncio.create_task(worker(index)) for index in range(concurrency)]
        started = time.perf_counter()
        try:
            await asyncio.sleep(warmup)
            base_ops, base_rss, t0 = sum(done), rss_mb(), time.perf_counter()
            samples.append((0.0, round(base_rss, 1)))
            for _tick in range(MAX_SAMPLES):
                elapsed = time.perf_counter() - t0
                if elapsed >= seconds:
                    break
                await asyncio.sleep(min(SAMPLE_EVERY_S, seconds - elapsed))
                samples.append((round(time.perf_counter() - t0, 2), round(rss_mb(), 1)))
            end_ops, t1 = sum(done), time.perf_counter()
        finally:
            stop = True
            await asyncio.wait(tasks, timeout=30)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        total = time.perf_counter() - started
        store = _store_counts(state.get_client())
    end_rss = samples[-1][1]
    return {
        "probe": "long",
        "url": url,
        "mix": list(LONG_MIX),
        "concurrency": concurrency,
        "warmup_s": round(warmup, 2),
        "seconds": round(t1 - t0, 2),
        "ops": end_ops - base_ops,
        "ops_per_s": round((end_ops - base_ops) / (t1 - t0), 1),
        "rss_start_mb": samples[0][1],
        "rss_end_mb": end_rss,
        "rss_max_mb": max(rss for _t, rss in samples),
        "growth_mb": round(end_rss - samples[0][1], 1),
        "samples": samples,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "total_s": round(total, 2),
        "memory_store": store,
    }


def probe_long(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Run the W1/W3/W4/W5 mix for ``seconds`` and sample RSS (see the module doc)."""
    return asyncio.run(_long(url, seconds, concurrency))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one probe and print its JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    probes = parser.add_subparsers(dest="probe", required=True)
    subs = probes.add_parser("subscriptions", help="RSS of N subscriptions in memory://")
    subs.add_argument("--count", type=int, default=1_000_000)
    subs.add_argument("--bare", action="store_true", help="a plain Python set instead")
    long = probes.add_parser("long", help="RSS over a long mixed run")
    long.add_argument("--url", required=True)
    long.add_argument("--seconds", type=float, default=30.0)
    long.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    if args.probe == "subscriptions":
        result = probe_subscriptions(args.count, bare=args.bare)
    else:
        result = probe_long(args.url, args.seconds, args.concurrency)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
