"""chat-state's speed measurement: ``uv run python -m benchmarks.run [options]``.

Starts its own redis-server processes (a standalone server and, for the Cluster
subjects, a 3-primary cluster) on free loopback ports, pins them to one CPU and
the clients to another when two are available, measures every workload x
concurrency cell of every selected subject (flushing the servers between
subjects), prints the table and writes everything as JSON. Every server is
stopped at the end, on error and on Ctrl-C too. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.utils

from ._baseline import BASE, THIS, Baseline, baseline_subjects
from ._measure import CellResult, Timing, merge_rounds
from ._node import NodeRun, node_version, run_node_subject
from ._report import compute_ratios, render_table
from ._servers import Pinning, Servers, plan_pinning
from ._subjects import SUBJECTS, Subject, run_async_subject, run_sync_subject
from ._workloads import SUBSCRIPTIONS, WORKLOADS, member
from .memory import getrusage_peak_mb, peak_rss_mb, rss_mb

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
CONCURRENCY = (1, 64)
FULL = Timing(warmup=0.5, duration=2.0)
QUICK = Timing(warmup=0.1, duration=0.3)
SEED_CHUNK = 1000
MAX_ROUNDS = 20
PROBE_SLACK_S = 120.0
_LIBRARIES = ("chat-state", "chat-state-redis", "redis", "hiredis", "chat-sdk", "anyio")
_WORKLOAD_NAMES = {
    "lock": "w1",
    "dedupe": "w2",
    "cache": "w3",
    "subscribed": "w4",
    "is_subscribed": "w4",
    "queue": "w5",
}


@dataclass
class Selection:
    """What ``--only`` (and ``--memory``) selected."""

    subjects: list[Subject]
    workloads: list[str]
    concurrency: list[int]
    throughput: bool
    memory: bool

    @property
    def plan(self) -> list[tuple[str, int]]:
        """Every ``(workload, concurrency)`` cell, in table order."""
        if not self.throughput:
            return []
        return [(w, c) for w in self.workloads for c in self.concurrency]


def _names() -> str:
    subjects = ", ".join(s.id for s in SUBJECTS)
    workloads = ", ".join(f"{w.id} ({w.name})" for w in WORKLOADS.values())
    return (
        f"subjects: {subjects}\nworkloads: {workloads}\nconcurrency: c1, c64\n"
        "memory: the memory measurements only"
    )


def select(only: str | None, memory: bool) -> Selection:
    """Parse ``--only a,b,...`` (subject ids, workload ids or names, c1/c64, memory)."""
    subjects: list[Subject] = []
    workloads: list[str] = []
    concurrency: list[int] = []
    memory_token = False
    by_id = {s.id: s for s in SUBJECTS}
    tokens = [t.strip().lower() for t in (only or "").split(",") if t.strip()]
    for token in tokens:
        if token in by_id:
            subjects.append(by_id[token])
        elif token in WORKLOADS or token in _WORKLOAD_NAMES:
            workloads.append(_WORKLOAD_NAMES.get(token, token))
        elif token in ("c1", "c64"):
            concurrency.append(int(token[1:]))
        elif token == "memory":
            memory_token = True
        else:
            raise ValueError(f"unknown name {token!r} in --only\n{_names()}")
    throughput = not (memory_token and not (subjects or workloads or concurrency))
    chosen = set(subjects)
    return Selection(
        subjects=[s for s in SUBJECTS if s in chosen] if subjects else list(SUBJECTS),
        workloads=sorted(set(workloads)) if workloads else list(WORKLOADS),
        concurrency=sorted(set(concurrency)) if concurrency else list(CONCURRENCY),
        throughput=throughput,
        memory=memory or memory_token,
    )


# -- machine facts --------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_facts(pinning: Pinning) -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, Node, library versions and pinning."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "memory_gb": _mem_total_gb(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "node": node_version(),
        "libraries": _library_versions(),
        "hiredis_parser": bool(redis.utils.HIREDIS_AVAILABLE),
        "node_libraries": {},
        "redis_server": None,
        "pinning": pinning.as_json(),
        "load_average_start": list(os.getloadavg()),
    }


# -- running the subjects ---------------------------------------------------------------


def _progress(message: str) -> None:
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


def _seed(servers: Servers, subject: Subject, members: Sequence[str]) -> None:
    """Pre-populate the W4 set on the subject's server (memory subjects seed themselves)."""
    if subject.backend == "memory":
        return
    key = "chat-sdk:subscriptions"
    client: Any = servers.cluster_admin() if subject.backend == "cluster" else servers.admin()
    for start in range(0, len(members), SEED_CHUNK):
        client.sadd(key, *members[start : start + SEED_CHUNK])
    if int(client.scard(key)) != len(members):
        raise RuntimeError(f"seeding {key} failed")


def _url(servers: Servers, subject: Subject) -> str:
    if subject.backend == "memory":
        return "memory://"
    if subject.backend == "cluster":
        return servers.cluster_url
    return servers.standalone_url


def _run_subject(
    subject: Subject,
    servers: Servers,
    selection: Selection,
    timing: Timing,
    pinning: Pinning,
    members: Sequence[str],
    baseline: Baseline | None,
) -> tuple[list[CellResult], NodeRun | None]:
    plan = selection.plan
    url = _url(servers, subject)
    if subject.id.endswith((THIS, BASE)):
        assert baseline is not None
        return baseline.run(subject, url, plan, timing), None
    if subject.kind == "node":
        run = run_node_subject(subject, url, plan, timing, pinning)
        return run.cells, run
    if subject.kind == "async":
        return run_async_subject(subject, url, plan, timing, members), None
    return run_sync_subject(subject, url, plan, timing, members), None


def _measure_subject(
    subject: Subject,
    servers: Servers,
    selection: Selection,
    timing: Timing,
    pinning: Pinning,
    report: dict[str, Any],
    baseline: Baseline | None,
) -> list[CellResult]:
    """One round of one subject on freshly flushed servers; failures become failed cells."""
    members = [member(n) for n in range(SUBSCRIPTIONS)]
    node_run: NodeRun | None = None
    try:
        servers.flush()
        if "w4" in selection.workloads:
            _seed(servers, subject, members)
        servers.reset_stats()
        subject_cells, node_run = _run_subject(
            subject, servers, selection, timing, pinning, members, baseline
        )
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        report["failures"].append(
            {"subject": subject.id, "error": why, "traceback": traceback.format_exc()}
        )
        subject_cells = [CellResult(subject.id, w, c, error=why) for w, c in selection.plan]
    if node_run is not None:
        report["machine"]["node_libraries"][subject.id] = node_run.versions
        peak = report["node_peak_rss_mb"].get(subject.id)
        if node_run.max_rss_mb is not None and (peak is None or node_run.max_rss_mb > peak):
            report["node_peak_rss_mb"][subject.id] = node_run.max_rss_mb
    if subject.backend == "standalone":
        stats = report["commandstats_standalone"].setdefault(subject.id, {})
        for name, calls in servers.commandstats().items():
            stats[name] = stats.get(name, 0) + calls
    report["rss_mb_after_subject"][subject.id] = round(rss_mb(), 1)
    # VmHWM only grows: the subject after which it jumps is the one that set the peak.
    report["peak_rss_mb_after_subject"][subject.id] = round(peak_rss_mb(), 1)
    return subject_cells


def _probe(args: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.memory ARGS`` in a fresh process; its JSON (or the error)."""
    command = [sys.executable, "-m", "benchmarks.memory", *args]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "args": list(args)}
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"exit {done.returncode}: {done.stderr[-1500:]}", "args": list(args)}
    return result


def _memory_probes(servers: Servers, quick: bool, long_seconds: float | None) -> dict[str, Any]:
    count = 100_000 if quick else 1_000_000
    seconds = long_seconds if long_seconds is not None else (3.0 if quick else 30.0)
    results: dict[str, Any] = {}
    _progress(f"memory: {count:,} subscriptions in a memory:// State")
    results["subscriptions"] = _probe(["subscriptions", "--count", str(count)], PROBE_SLACK_S)
    _progress(f"memory: {count:,} thread ids in a plain Python set (the floor)")
    results["subscriptions_bare_set"] = _probe(
        ["subscriptions", "--count", str(count), "--bare"], PROBE_SLACK_S
    )
    for name, url in (("long_standalone", servers.standalone_url), ("long_memory", "memory://")):
        servers.flush()
        _progress(f"memory: {seconds:g} s long run, AsyncState c64 on {url}")
        results[name] = _probe(
            ["long", "--url", url, "--seconds", str(seconds)], PROBE_SLACK_S + seconds * 2
        )
    return results


def run(
    args: argparse.Namespace, selection: Selection, baseline: Baseline | None = None
) -> dict[str, Any]:
    """Start the servers, measure, probe memory; return the report (servers stopped)."""
    timing = QUICK if args.quick else FULL
    if args.warmup is not None or args.duration is not None:
        warmup = args.warmup if args.warmup is not None else timing.warmup
        timing = Timing(warmup, args.duration if args.duration is not None else timing.duration)
    pinning = plan_pinning(not args.no_pin)
    started = time.time()
    report: dict[str, Any] = {
        "schema": 1,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "warmup_s": timing.warmup,
            "duration_s": timing.duration,
            "concurrency": selection.concurrency,
            "rounds": args.rounds,
            "workloads": {w: WORKLOADS[w].op for w in selection.workloads},
            "subscriptions_set_size": SUBSCRIPTIONS,
        },
        "machine": machine_facts(pinning),
        "subjects": [
            {"id": s.id, "short": s.short, "label": s.label, "backend": s.backend}
            for s in selection.subjects
        ]
        if selection.throughput
        else [],
        "results": [],
        "ratios": [],
        "commandstats_standalone": {},
        "rss_mb_after_subject": {},
        "peak_rss_mb_after_subject": {},
        "node_peak_rss_mb": {},
        "failures": [],
        "memory": None,
        "baseline": None
        if baseline is None
        else {"ref": baseline.ref, "commit": baseline.commit, "suffixes": [THIS, BASE]},
    }
    cells: list[CellResult] = []
    needs_cluster = selection.throughput and any(s.backend == "cluster" for s in selection.subjects)
    _progress(f"pinning: {pinning.describe()}")
    with Servers(pinning, cluster=needs_cluster) as servers:
        if pinning.applied:
            assert pinning.client_cpu is not None
            os.sched_setaffinity(0, {pinning.client_cpu})  # threads started later inherit it
        report["machine"]["redis_server"] = servers.version()
        rounds = args.rounds if selection.throughput else 0
        for round_index in range(rounds):
            for subject in selection.subjects:
                where = f" (round {round_index + 1}/{rounds})" if rounds > 1 else ""
                _progress(f"{subject.id}: {len(selection.plan)} cells{where}")
                cells.extend(
                    _measure_subject(subject, servers, selection, timing, pinning, report, baseline)
                )
        if selection.memory:
            report["memory"] = _memory_probes(servers, args.quick, args.long_seconds)
    cells = merge_rounds(cells)
    report["results"] = [c.as_json() for c in cells]
    report["ratios"] = compute_ratios(cells, selection.plan)
    report["failures"].extend(
        {"subject": c.subject, "workload": c.workload, "concurrency": c.concurrency,
         "error": c.error}
        for c in cells
        if c.error is not None
    )  # fmt: skip
    report["python_peak_rss_mb"] = round(getrusage_peak_mb(), 1)
    report["python_peak_rss_vmhwm_mb"] = round(peak_rss_mb(), 1)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["elapsed_s"] = round(time.time() - started, 1)
    report["_cells"] = cells
    return report


def _print_memory(memory: dict[str, Any]) -> None:
    subs = memory.get("subscriptions", {})
    bare = memory.get("subscriptions_bare_set", {})
    if "growth_mb" in subs:
        print(
            f"memory:// State holding {subs['count']:,} subscriptions: RSS +{subs['growth_mb']} MB "
            f"({subs['bytes_per_subscription']} bytes each; {subs['inserts_per_s']:,.0f} "
            "subscribe/s)"
        )
    else:
        print(f"memory:// subscriptions probe failed: {subs.get('error')}")
    if "growth_mb" in bare:
        print(
            f"  the same thread ids in a plain Python set: +{bare['growth_mb']} MB "
            f"({bare['bytes_per_subscription']} bytes each)"
        )
    for name in ("long_standalone", "long_memory"):
        probe = memory.get(name, {})
        if "growth_mb" in probe:
            print(
                f"long run {probe['url']} ({probe['seconds']} s after a {probe['warmup_s']} s "
                f"warm-up, c{probe['concurrency']}, {probe['ops']:,} ops, "
                f"{probe['errors']} errors): RSS {probe['rss_start_mb']} -> "
                f"{probe['rss_end_mb']} MB (growth {probe['growth_mb']} MB, "
                f"max {probe['rss_max_mb']} MB)"
            )
        else:
            print(f"long run {name} failed: {probe.get('error')}")


def _terminated(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so that every ``finally`` stops what it started."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run, print the table, write the JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="chat-state throughput vs raw redis-py, the TypeScript adapters and chat_sdk.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_names(),
    )
    parser.add_argument("--quick", action="store_true", help="short cells (0.1 s + 0.3 s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--only", metavar="NAME,...", help="subjects/workloads/c1,c64/memory")
    parser.add_argument("--memory", action="store_true", help="also run the memory probes")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every subject N times; report medians"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin CPUs")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell")
    parser.add_argument("--duration", type=float, help="measured seconds per cell")
    parser.add_argument("--long-seconds", type=float, help="length of the memory long runs")
    parser.add_argument("--list", action="store_true", help="list the names and exit")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure State and AsyncState standalone as chat-state was at git revision "
        "REF and as this tree has it, each in child processes, in turn; ratios this/base",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # so that the servers are stopped
    if args.list:
        print(_names())
        return 0
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be between 1 and {MAX_ROUNDS}")
    try:
        selection = select(args.only, args.memory)
    except ValueError as exc:
        parser.error(str(exc))
    baseline = None
    if args.baseline is not None:
        chosen = {s.id for s in selection.subjects}
        try:
            baseline = Baseline.unpack(args.baseline)
        except subprocess.CalledProcessError as exc:
            parser.error(f"--baseline {args.baseline}: {exc.stderr.decode().strip()}")
        selection.subjects += baseline_subjects(args.baseline, chosen)
    try:
        report = run(args, selection, baseline)
    finally:
        if baseline is not None:
            baseline.remove()
    cells: list[CellResult] = report.pop("_cells")
    machine = report["machine"]
    rounds = f"; median of {args.rounds} rounds, subjects in turn" if args.rounds > 1 else ""
    print(
        f"chat-state benchmark ({report['mode']}: {report['settings']['warmup_s']} s warm-up + "
        f"{report['settings']['duration_s']} s per cell{rounds}), {report['elapsed_s']} s"
    )
    print(
        f"machine: {machine['cpu_model']}, {machine['cores']} cores; redis-server "
        f"{machine['redis_server']}; Python {machine['python']}; Node {machine['node']}; "
        f"redis-py {machine['libraries']['redis']} (hiredis: {machine['hiredis_parser']})"
    )
    print(f"pinning: {machine['pinning']['description']}")
    print(f"load average: start {machine['load_average_start']}, end {machine['load_average_end']}")
    if selection.throughput:
        print()
        print(render_table(selection.subjects, cells, selection.plan, report["ratios"]))
    print()
    print(
        f"Python process peak RSS: {report['python_peak_rss_mb']} MB (getrusage ru_maxrss; "
        f"VmHWM {report['python_peak_rss_vmhwm_mb']} MB)"
    )
    if report["node_peak_rss_mb"]:
        print(f"Node peak RSS: {report['node_peak_rss_mb']} MB")
    if report["memory"] is not None:
        _print_memory(report["memory"])
    if report["failures"]:
        print(f"FAILURES ({len(report['failures'])}):")
        for failure in report["failures"]:
            print(f"  {failure}"[:400])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"results: {args.json}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
