"""Whether the inspection scans run in constant memory.

Run it with ``uv run python -m benchmarks.inspection_memory`` from the repository root.

::

    python -m benchmarks.inspection_memory [--members N] [--keys N] [--json PATH]
    python -m benchmarks.inspection_memory --measure WHAT --url URL   (one child; internal)

Starts a private standalone ``redis-server`` (:class:`chat_state.testing.RedisServer`,
a free loopback port, never 6379), seeds it with redis-py pipelines (not through
chat-state): ``--members`` thread ids in the set ``bench:subscriptions`` and ``--keys``
keys under the prefix ``bench`` (1% locks, 1% lists, 1% queues of one entry, the rest
cache keys). Then each measurement runs in a fresh Python process, which reports its
RSS just before the measured call and its peak RSS during it:

- ``iter_subscriptions``: ``sum(1 for _ in state.iter_subscriptions())`` (SSCAN pages);
- ``stats``: ``state.stats()`` (one SCAN of the prefix, LLEN per queue);
- ``iter_keys_stream``: ``sum(1 for _ in state.iter_keys())`` (SCAN pages);
- ``smembers`` (the contrast): ``len(client.smembers("bench:subscriptions"))`` with
  redis-py, the whole set in one reply;
- ``iter_keys_list`` (the contrast): ``len(list(state.iter_keys()))``, every key held.

The growth is the child's peak minus its RSS just before the call. The peak is
``VmHWM``, reset to the current RSS right before the call (``/proc/self/clear_refs``)
when the kernel allows it; ``getrusage``'s ``ru_maxrss`` is reported too, but Linux
carries it over from the parent across fork + exec, so it can only be trusted above the
parent's own peak (the ``ru_maxrss_inherited`` flag says when it was already higher
than the child's RSS before the call). Times are informational. Every count is
checked against what was seeded; the exit status is 1 if one is wrong or a
measurement failed. Prints a table and writes JSON (default
``benchmarks/results/inspection_memory.json``, a git-ignored folder).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import platform
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

from chat_state import State
from chat_state.testing import RedisServer

from ._workloads import member
from .memory import getrusage_peak_mb, peak_rss_mb, rss_mb

__all__ = ["MEASUREMENTS", "main", "measure", "seed"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "inspection_memory.json"
PREFIX = "bench"
SUBSCRIPTIONS_KEY = f"{PREFIX}:subscriptions"
BATCH = 10_000
LOCK_TTL_MS = 600_000
QUEUE_ENTRY = '{"enqueuedAt":1,"expiresAt":2199023255552,"message":{}}'
LIST_ENTRY = '{"n":1}'
CHILD_TIMEOUT_S = 900.0
#: The measurements, in the order they run: the constant-memory scans, then the contrast.
MEASUREMENTS = ("iter_subscriptions", "stats", "iter_keys_stream", "smembers", "iter_keys_list")
CONTRAST = frozenset({"smembers", "iter_keys_list"})
CODE = {
    "iter_subscriptions": "sum(1 for _ in state.iter_subscriptions())",
    "stats": "state.stats()",
    "iter_keys_stream": "sum(1 for _ in state.iter_keys())",
    "smembers": 'len(client.smembers("bench:subscriptions"))  # redis-py',
    "iter_keys_list": "len(list(state.iter_keys()))",
}


# -- seeding (the parent) -------------------------------------------------------------


def plan(keys: int) -> dict[str, int]:
    """How many keys of each kind ``keys`` is split into (1% each of locks, lists and
    queues, the rest cache keys)."""
    small = keys // 100
    return {"lock": small, "list": small, "queue": small, "cache": keys - 3 * small}


def _pipelined(client: redis.Redis, count: int, add: Callable[[Any, int], None]) -> None:
    """Run ``add(pipe, n)`` for ``n`` in ``range(count)``, ``BATCH`` commands a round trip."""
    for start in range(0, count, BATCH):
        pipe = client.pipeline(transaction=False)
        for n in range(start, min(start + BATCH, count)):
            add(pipe, n)
        pipe.execute()


def seed(url: str, members: int, keys: int) -> dict[str, Any]:
    """Write ``members`` subscriptions and ``keys`` keys with redis-py; → the plan and time."""
    kinds = plan(keys)
    started = time.perf_counter()
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=60)
    try:
        for start in range(0, members, BATCH):
            client.sadd(
                SUBSCRIPTIONS_KEY, *(member(n) for n in range(start, min(start + BATCH, members)))
            )
        _pipelined(
            client, kinds["cache"], lambda p, n: p.set(f"{PREFIX}:cache:k{n}", f'{{"n":{n}}}')
        )
        _pipelined(
            client,
            kinds["lock"],
            lambda p, n: p.set(
                f"{PREFIX}:lock:t{n}", "cs_" + secrets.token_hex(16), px=LOCK_TTL_MS
            ),
        )
        _pipelined(client, kinds["list"], lambda p, n: p.rpush(f"{PREFIX}:list:l{n}", LIST_ENTRY))
        _pipelined(
            client, kinds["queue"], lambda p, n: p.rpush(f"{PREFIX}:queue:q{n}", QUEUE_ENTRY)
        )
        seeded = {
            "subscriptions": int(client.scard(SUBSCRIPTIONS_KEY)),
            "dbsize": int(client.dbsize()),
        }
        used = client.info("memory").get("used_memory", 0)
        version = client.info("server").get("redis_version")
    finally:
        client.close()
    return {
        "members": members,
        "keys": keys,
        "kinds": kinds,
        "seconds": round(time.perf_counter() - started, 2),
        "seeded": seeded,
        "server_used_memory_mb": round(int(used) / (1024 * 1024), 1),
        "redis_server_version": version,
    }


# -- one measurement (a child) --------------------------------------------------------


def _reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux 4.0+); → whether it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _stats_json(state: State) -> dict[str, Any]:
    found = state.stats()
    return {
        "subscriptions": found.subscriptions,
        "locks": found.locks,
        "cache_keys": found.cache_keys,
        "lists": found.lists,
        "queues": found.queues,
        "queued_entries": found.queued_entries,
        "other_keys": found.other_keys,
        "deepest_queues": len(found.deepest_queues),
    }


def measure(what: str, url: str) -> dict[str, Any]:
    """Connect, then measure one call's time, RSS before it and peak RSS during it."""
    if what not in MEASUREMENTS:
        raise ValueError(f"unknown measurement {what!r}")
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=600)
    state = State.from_url(url, key_prefix=PREFIX)
    try:
        state.connect()
        client.ping()
        calls: dict[str, Callable[[], Any]] = {
            "iter_subscriptions": lambda: sum(1 for _ in state.iter_subscriptions()),
            "stats": lambda: _stats_json(state),
            "iter_keys_stream": lambda: sum(1 for _ in state.iter_keys()),
            "smembers": lambda: len(client.smembers(SUBSCRIPTIONS_KEY)),
            "iter_keys_list": lambda: len(list(state.iter_keys())),
        }
        call = calls[what]
        gc.collect()
        reset = _reset_peak()
        hwm_before, before, ru_before = peak_rss_mb(), rss_mb(), getrusage_peak_mb()
        started = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - started
        hwm, ru_maxrss, after = peak_rss_mb(), getrusage_peak_mb(), rss_mb()
    finally:
        state.disconnect()
        client.close()
    return {
        "measure": what,
        "code": CODE[what],
        "result": result,
        "seconds": round(seconds, 3),
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "peak_mb": round(hwm, 1),
        "peak_growth_mb": round(hwm - before, 1),
        "peak_reset": reset,
        "vmhwm_before_mb": round(hwm_before, 1),
        "ru_maxrss_mb": round(ru_maxrss, 1),
        "ru_maxrss_growth_mb": round(ru_maxrss - before, 1),
        "ru_maxrss_before_mb": round(ru_before, 1),
        # Above the RSS before the call already (carried over from the parent, or an
        # earlier peak of this process), and not raised by the call: it says nothing.
        "ru_maxrss_inherited": ru_before > before + 1.0,
        "ru_maxrss_unchanged": ru_maxrss <= ru_before,
    }


def _child(what: str, url: str) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; its JSON (or the error)."""
    command = [
        sys.executable,
        "-m",
        "benchmarks.inspection_memory",
        "--measure",
        what,
        "--url",
        url,
    ]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"measure": what, "error": f"timed out after {CHILD_TIMEOUT_S:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"measure": what, "error": f"exit {done.returncode}: {done.stderr[-1500:]}"}
    return result


# -- checks and report ----------------------------------------------------------------


def expected(members: int, keys: int) -> dict[str, Any]:
    """What each measurement must return for the seeded data."""
    kinds = plan(keys)
    return {
        "iter_subscriptions": members,
        "stats": {
            "subscriptions": members,
            "locks": kinds["lock"],
            "cache_keys": kinds["cache"],
            "lists": kinds["list"],
            "queues": kinds["queue"],
            "queued_entries": kinds["queue"],
            "other_keys": 0,
            "deepest_queues": min(10, kinds["queue"]),
        },
        "iter_keys_stream": keys + (1 if members else 0),  # + bench:subscriptions
        "smembers": members,
        "iter_keys_list": keys + (1 if members else 0),
    }


def check(result: dict[str, Any], want: Any) -> list[str]:
    """The wrong counts in one measurement's result (empty if all are right)."""
    if "error" in result:
        return [f"{result['measure']}: {result['error']}"]
    got = result["result"]
    if isinstance(want, dict):
        return [
            f"{result['measure']}.{name}: got {got.get(name)!r}, want {value!r}"
            for name, value in want.items()
            if got.get(name) != value
        ]
    return [] if got == want else [f"{result['measure']}: got {got!r}, want {want!r}"]


def _count(result: dict[str, Any]) -> str:
    got = result.get("result")
    if isinstance(got, dict):
        return f"{got['cache_keys']:,}c {got['locks']:,}l {got['lists']:,}L {got['queues']:,}q"
    return f"{got:,}" if isinstance(got, int) else "-"


def render(results: Sequence[dict[str, Any]], wrong: Sequence[str]) -> str:
    """The table: one row per measurement."""
    header = (
        f"{'measurement':<20} {'kind':<9} {'before MB':>9} {'peak +MB':>9} "
        f"{'ru_maxrss +MB':>13} {'seconds':>8}  {'count':<34} ok"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        name = r["measure"]
        kind = "contrast" if name in CONTRAST else "scan"
        if "error" in r:
            rows.append(f"{name:<20} {kind:<9} ERR {r['error'][:80]}")
            continue
        ok = (
            "no"
            if any(line.startswith(name + ":") or line.startswith(name + ".") for line in wrong)
            else "yes"
        )
        rows.append(
            f"{name:<20} {kind:<9} {r['rss_before_mb']:>9.1f} {r['peak_growth_mb']:>9.1f} "
            f"{r['ru_maxrss_growth_mb']:>12.1f}{'*' if r['ru_maxrss_unchanged'] else ' '} "
            f"{r['seconds']:>8.2f}  {_count(r):<34} {ok}"
        )
    return "\n".join(rows)


def run(members: int, keys: int, json_path: Path) -> int:
    """Start the server, seed it, run every measurement in a child, report; → exit status."""
    if members < 0 or keys < 0:
        raise SystemExit("--members and --keys must be >= 0")
    started = time.perf_counter()
    want = expected(members, keys)
    results: list[dict[str, Any]] = []
    with RedisServer() as server:
        print(
            f"redis-server on {server.url}; seeding {members:,} members and {keys:,} keys",
            flush=True,
        )
        seeding = seed(server.url, members, keys)
        print(
            f"seeded in {seeding['seconds']:.1f} s "
            f"({seeding['server_used_memory_mb']} MB in the server)"
        )
        for what in MEASUREMENTS:
            print(f"measuring {what}: {CODE[what]}", flush=True)
            results.append(_child(what, server.url))
    wrong = [line for r in results for line in check(r, want[r["measure"]])]
    print()
    print(render(results, wrong))
    print(
        "\npeak +MB = the child's VmHWM during the call (reset just before it) minus its RSS "
        "before it;\nru_maxrss +MB = getrusage's peak minus that RSS (* = not raised by the call: "
        "it was already higher, from the child's imports or the parent's peak, which Linux "
        "carries over across fork + exec)"
    )
    for line in wrong:
        print(f"WRONG: {line}")
    report = {
        "benchmark": "inspection_memory",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"members": members, "keys": keys, "prefix": PREFIX, "batch": BATCH},
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "redis_py": redis.__version__,
        },
        "seeding": seeding,
        "expected": want,
        "results": results,
        "wrong": wrong,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {json_path}")
    return 1 if wrong else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line; run the whole benchmark, or one measurement (``--measure``)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inspection_memory",
        description="RSS of chat-state's inspection scans over a large seeded redis-server.",
    )
    parser.add_argument("--members", type=int, default=1_000_000, help="subscriptions to seed")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys to seed under 'bench'")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:
        if not args.url:
            parser.error("--measure needs --url")
        sys.stdout.write(json.dumps(measure(args.measure, args.url)) + "\n")
        return 0
    return run(args.members, args.keys, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
