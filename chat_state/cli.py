"""Command line: ``chat-state``, to look into a bot's state and operate it (``stats``,
``subscriptions``, ``locks``, ``queues``, ``get``, ``list``, ``health``, ``top``,
``clear``), and ``chat-state demo``, the library at work on a simulated chat platform.

The operator commands read ``--url`` (else ``CHAT_STATE_URL``, then ``REDIS_URL``, else
``memory://``) through the blocking :class:`~chat_state.State`. Exit status: 0 ok, 1
failed (a server unreachable, an unknown key, not healthy), 2 usage (a bad option, URL
or driver, ``clear`` without ``--yes`` off a terminal).
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import heapq
import itertools
import json
import logging
import math
import operator
import os
import random
import secrets
import shutil
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from . import (
    AsyncState,
    ChatStateError,
    LockInfo,
    QueueEntry,
    QueueInfo,
    ServerStats,
    State,
    StateStats,
    __version__,
)
from .backend.urls import redact_url
from .core.layout import DEFAULT_PREFIX

__all__ = ["main"]

DEMO_DESCRIPTION = (
    "Simulate a chat platform delivering webhooks (with retries, a little out of order) "
    "to worker tasks sharing one AsyncState, which de-duplicate them, queue each message "
    "on its thread and drain the queue under the thread's lock; then check every message "
    "was handled exactly once, and remove the keys written."
)

T = TypeVar("T")
Delivery = tuple[str, str]  # (thread id, message id)

URL_VARIABLES = ("CHAT_STATE_URL", "REDIS_URL")
TTL_MS = 600_000  # dedupe keys and histories expire even if the demo is interrupted
LOCK_TTL_MS = 30_000
ENTRY_TTL_MS = 60_000


@dataclass
class Stats:
    """What the workers counted while the webhooks were delivered."""

    deliveries: int = 0
    duplicates_dropped: int = 0
    handled: int = 0
    new_threads: int = 0  # threads subscribed on their first message
    in_subscribed_threads: int = 0
    lock_overlaps: int = 0  # two workers draining one thread at once: must stay 0
    operations: int = 0


def schedule(threads: list[str], messages: int, rate: float, seed: int, run: str) -> list[Delivery]:
    """Every message delivered once, a share of them twice (retries); in arrival order."""
    rng = random.Random(seed)
    timed: list[tuple[float, str, str]] = []
    for n in range(messages):
        thread, message = rng.choice(threads), f"{run}-m{n}"
        arrival = n + rng.uniform(0, 5)  # neighbours may overtake each other
        timed.append((arrival, thread, message))
        if rng.random() < rate:
            timed.append((arrival + rng.uniform(1, 50), thread, message))
    timed.sort(key=lambda delivery: delivery[0])
    return [(thread, message) for _, thread, message in timed]


class Bot:
    """The workers' shared logic, on one :class:`AsyncState`."""

    def __init__(self, state: AsyncState, capacity: int) -> None:
        self.state = state
        self.capacity = capacity  # queue and history bounds large enough to keep everything
        self.stats = Stats()
        self._draining: set[str] = set()

    async def _op(self, call: Awaitable[T]) -> T:
        self.stats.operations += 1
        return await call

    async def worker(self, inbox: MemoryObjectReceiveStream[Delivery]) -> None:
        """Take deliveries from ``inbox`` until it is closed and empty."""
        async for thread, message in inbox:
            await self.deliver(thread, message)

    async def deliver(self, thread: str, message: str) -> None:
        """One webhook: drop a duplicate, else queue the message and drain the thread."""
        self.stats.deliveries += 1
        state = self.state
        if not await self._op(state.set_if_not_exists(f"dedupe:{message}", True, TTL_MS)):
            self.stats.duplicates_dropped += 1
            return
        now = time.time_ns() // 1_000_000
        entry = QueueEntry(now, now + ENTRY_TTL_MS, {"id": message, "text": f"hi ({message})"})
        await self._op(state.enqueue(thread, entry, max_size=self.capacity))
        # Without the lock, its holder drains the queue. After releasing, look again:
        # a message queued between our last empty dequeue and the release found the
        # lock taken, and is ours to handle.
        while (lock := await self._op(state.acquire_lock(thread, LOCK_TTL_MS))) is not None:
            self.stats.lock_overlaps += thread in self._draining
            self._draining.add(thread)
            try:
                while (queued := await self._op(state.dequeue(thread))) is not None:
                    await self.handle(thread, queued.message["id"])
            finally:
                self._draining.discard(thread)
                await self._op(state.release_lock(lock))
            if not await self._op(state.queue_depth(thread)):
                return

    async def handle(self, thread: str, message: str) -> None:
        """The bot's reply: subscribe to a new thread, record the message in its history."""
        if await self._op(self.state.is_subscribed(thread)):
            self.stats.in_subscribed_threads += 1
        else:
            await self._op(self.state.subscribe(thread))
            self.stats.new_threads += 1
        history = f"history:{thread}"
        await self._op(
            self.state.append_to_list(history, message, max_length=self.capacity, ttl_ms=TTL_MS)
        )
        self.stats.handled += 1
        await anyio.sleep(0)


async def verify(
    state: AsyncState, stats: Stats, threads: list[str], deliveries: list[Delivery]
) -> list[str]:
    """Read back every history and queue; → what went wrong (empty when all is well)."""
    home = {message: thread for thread, message in deliveries}
    problems: list[str] = []
    seen: Counter[str] = Counter()
    for thread in threads:
        history = await state.get_list(f"history:{thread}")
        seen.update(history)
        strays = [m for m in history if home.get(m) != thread]
        if strays:
            problems.append(f"{thread} holds {len(strays)} messages of other threads")
        if depth := await state.queue_depth(thread):
            problems.append(f"{thread} has {depth} messages stranded in its queue")
    if missing := home.keys() - seen.keys():
        problems.append(f"{len(missing)} messages are in no history, e.g. {min(missing)}")
    if repeated := [m for m, count in seen.items() if count > 1]:
        problems.append(f"{len(repeated)} messages were handled more than once")
    if stats.handled != len(home) or stats.deliveries - stats.duplicates_dropped != len(home):
        problems.append(f"counters disagree: {stats} for {len(home)} unique messages")
    if stats.new_threads != len(set(home.values())):
        problems.append(f"{stats.new_threads} subscriptions for {len(set(home.values()))} threads")
    if stats.lock_overlaps:
        problems.append(f"{stats.lock_overlaps} times two workers drained one thread at once")
    return problems


async def cleanup(state: AsyncState, threads: list[str], messages: set[str]) -> None:
    """Remove the demo's keys. Locks and queues are already gone (released, drained)."""
    for message in messages:
        await state.delete(f"dedupe:{message}")
    for thread in threads:
        await state.unsubscribe(thread)
        # No public call deletes a list: cut it to one item that expires in 1 ms.
        await state.append_to_list(f"history:{thread}", 0, max_length=1, ttl_ms=1)


async def demo(args: argparse.Namespace) -> dict[str, Any]:
    """Run the demo; → its summary (``"ok"`` and ``"problems"`` say how it went)."""
    # A random run tag in the ids keeps runs that share a server out of each other's way.
    run = secrets.token_hex(3)
    threads = [f"demo-{run}:t{n}" for n in range(args.threads)]
    deliveries = schedule(threads, args.messages, args.retry_rate, args.seed, run)
    async with AsyncState.from_url(args.url, key_prefix=args.key_prefix) as state:
        bot = Bot(state, capacity=args.messages)
        send, receive = anyio.create_memory_object_stream[Delivery](args.workers)
        started = time.perf_counter()
        async with receive, anyio.create_task_group() as tasks:
            for _ in range(args.workers):
                tasks.start_soon(bot.worker, receive)
            async with send:
                for delivery in deliveries:
                    await send.send(delivery)
        elapsed = time.perf_counter() - started
        problems = await verify(state, bot.stats, threads, deliveries)
        await cleanup(state, threads, {message for _, message in deliveries})
        backend = repr(state)
    return {
        "ok": not problems,
        "problems": problems,
        "backend": backend,
        "threads": args.threads,
        "workers": args.workers,
        "unique_messages": args.messages,
        **asdict(bot.stats),
        "elapsed_s": round(elapsed, 3),
        "deliveries_per_s": round(bot.stats.deliveries / elapsed),
        "operations_per_s": round(bot.stats.operations / elapsed),
    }


def report(summary: dict[str, Any]) -> str:
    """The summary as text for a person."""
    s = summary
    check = "each message in its thread's history, exactly once" if s["ok"] else "FAILED"
    lines = [
        f"chat-state demo on {s['backend']}",
        f"  deliveries          {s['deliveries']:>7}  ({s['workers']} workers)",
        f"  duplicates dropped  {s['duplicates_dropped']:>7}  (platform retries)",
        f"  unique messages     {s['unique_messages']:>7}  over {s['threads']} threads",
        f"  messages handled    {s['handled']:>7}  ({s['in_subscribed_threads']} in subscribed "
        f"threads, {s['new_threads']} subscribed on their first message)",
        f"  history check       {check}",
        f"  elapsed             {s['elapsed_s']:>7.2f}s",
        f"  throughput          {s['deliveries_per_s']:>7}  deliveries/s, "
        f"{s['operations_per_s']} state operations/s ({s['operations']} operations)",
    ]
    lines += [f"FAILED: {problem}" for problem in s["problems"]]
    if s["ok"]:
        lines.append(f"OK: {s['handled']} messages handled exactly once")
    return "\n".join(lines)


# -- formatting ------------------------------------------------------------------------


def is_terminal(stream: IO[str]) -> bool:
    """Whether ``stream`` is a terminal (tests replace this to see the terminal forms)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def now_ms() -> int:
    """The current Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def duration(ms: float) -> str:
    """A span of time for a person, rounded down: ``850 ms``, ``29.9 s``, ``4 min``,
    ``2.5 h``, ``3.0 d``."""

    def down(value: float) -> float:
        return math.floor(value * 10) / 10

    if ms < 1_000:
        return f"{math.floor(ms)} ms"
    if ms < 60_000:
        return f"{down(ms / 1_000):.1f} s"
    if ms < 3_600_000:
        return f"{math.floor(ms / 60_000)} min"
    if ms < 86_400_000:
        return f"{down(ms / 3_600_000):.1f} h"
    return f"{down(ms / 86_400_000):.1f} d"


def ttl(ms: int) -> str:
    """A remaining TTL (``-1``: the key has none)."""
    return "no expiry" if ms < 0 else duration(ms)


def age(at_ms: int | None, now: int) -> str:
    """How long ago ``at_ms`` (Unix ms) was: ``3 min ago`` (``-`` if unknown)."""
    if at_ms is None:
        return "-"
    since = now - at_ms
    if since < -1_000:  # the writer's clock is ahead of ours
        return f"in {duration(-since)}"
    if since < 1_000:
        return "just now"
    return f"{duration(since)} ago"


def size(count: int | None) -> str:
    """A number of bytes for a person: ``812 B``, ``1.2 MiB``."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def shown(text: str) -> str:
    """``text`` safe to print on a terminal: control characters escaped (a thread id
    holding ``\\x1b[2J`` must not clear the operator's screen)."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or unicodedata.category(ch) == "Cf" else repr(ch)[1:-1]
        for ch in text
    )


def width(text: str) -> int:
    """How many terminal columns ``text`` takes (wide CJK and emoji count two)."""
    return sum(
        0
        if unicodedata.combining(ch) or unicodedata.category(ch) == "Cf"
        else 2
        if unicodedata.east_asian_width(ch) in "WF"
        else 1
        for ch in text
    )


def clip(text: str, columns: int) -> str:
    """``text`` cut to ``columns`` terminal columns."""
    if width(text) <= columns:
        return text
    kept, used = [], 0
    for ch in text:
        used += width(ch)
        if used > columns:
            break
        kept.append(ch)
    return "".join(kept)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: str = "") -> list[str]:
    """Rows as aligned columns under ``headers``; ``right`` holds an ``R`` for each column
    aligned to the right (numbers), e.g. ``".R."``."""
    cells = [list(headers), *([shown(cell) for cell in row] for row in rows)]
    widths = [max(width(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - width(cell))
            padded.append(pad + cell if right[i : i + 1] == "R" else cell + pad)
        lines.append("  ".join(padded).rstrip())
    return lines


class Progress:
    """``scanning… 12,000 locks`` on stderr, redrawn with ``\\r``, only on a terminal."""

    EVERY_S = 0.1

    def __init__(self, stream: IO[str], what: str) -> None:
        self.stream = stream
        self.what = what
        self.enabled = is_terminal(stream)
        self.count = 0
        self._shown_at = time.monotonic()
        self._drawn = False

    def tick(self, found: int = 1) -> None:
        self.count += found
        if self.enabled and time.monotonic() - self._shown_at >= self.EVERY_S:
            self._shown_at = time.monotonic()
            self.stream.write(f"\rscanning… {self.count:,} {self.what}\x1b[K")
            self.stream.flush()
            self._drawn = True

    def done(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


# -- the operator commands -------------------------------------------------------------


class UsageError(Exception):
    """A command line that cannot be run as given (exit status 2)."""


class Failed(Exception):
    """An operation that did not succeed, such as an unknown key (exit status 1)."""


@dataclass
class Context:
    """What every operator command is given."""

    state: State
    args: argparse.Namespace
    url: str  # redacted
    out: IO[str]
    err: IO[str]

    def json(self, value: Any, *, lines: bool = False) -> None:
        """``value`` as JSON: one compact line for JSON lines and pipes, indented on a
        terminal otherwise (``\\u`` escapes where the output cannot take the text: a
        lone surrogate, which JSON.stringify can write)."""
        indent = 2 if not lines and is_terminal(self.out) else None
        text = json.dumps(value, ensure_ascii=False, indent=indent)
        if not _encodable(text, self.out):
            text = json.dumps(value, indent=indent)
        self.out.write(text + "\n")

    def print(self, *lines: str) -> None:
        for line in lines:
            fit = line if _encodable(line, self.out) else _escaped(line, self.out)
            self.out.write(fit + "\n")

    def where(self) -> str:
        return f"prefix {self.state.key_prefix!r} on {self.url}"


def _encoding(stream: IO[str]) -> str:
    return getattr(stream, "encoding", None) or "utf-8"


def _encodable(text: str, stream: IO[str]) -> bool:
    """Whether ``stream`` can write ``text`` (a lone surrogate, which JSON.stringify
    can write, fits no encoding; stdout's may not be UTF-8)."""
    try:
        text.encode(_encoding(stream))
    except UnicodeEncodeError:
        return False
    return True


def _escaped(text: str, stream: IO[str]) -> str:
    """``text`` with what ``stream`` cannot write as backslash escapes."""
    return text.encode(_encoding(stream), "backslashreplace").decode(_encoding(stream))


def matching(ctx: Context, names: Iterable[T], name: Callable[[T], str]) -> Iterator[T]:
    """The items whose name matches ``--match`` (fnmatch, case-sensitive), if it is given."""
    pattern: str | None = ctx.args.match
    if pattern is None:
        return iter(names)
    return (item for item in names if fnmatch.fnmatchcase(name(item), pattern))


def ranked(
    ctx: Context, items: Iterable[T], key: Callable[[T], Any], what: str
) -> tuple[list[T], int]:
    """The items (with a ``thread_id``) that match ``--match``, sorted by ``key``: only
    the first ``--limit`` when it is given, kept in a bounded heap; → (those, how many
    matched)."""
    progress = Progress(ctx.err, what)
    matched = 0

    def scanned() -> Iterator[T]:
        for item in items:
            progress.tick()
            yield item

    def counted() -> Iterator[T]:
        nonlocal matched
        for item in matching(ctx, scanned(), operator.attrgetter("thread_id")):
            matched += 1
            yield item

    limit: int | None = ctx.args.limit
    try:
        found = heapq.nsmallest(limit, counted(), key) if limit else sorted(counted(), key=key)
    finally:
        progress.done()
    return found, matched


def shown_of(ctx: Context, count: int, total: int, what: str) -> str | None:
    """The footer line of a table cut by ``--limit``, if it was."""
    if count >= total:
        return None
    return f"({count:,} of {total:,} {what} shown: --limit {ctx.args.limit})"


def cmd_stats(ctx: Context) -> int:
    stats = ctx.state.stats()
    if ctx.args.json:
        ctx.json(stats.as_dict())
        return 0
    ctx.print(f"chat-state stats: {ctx.where()}", "")
    counts = [
        ("subscriptions", number(stats.subscriptions), ""),
        ("locks", number(stats.locks), "held"),
        ("cache keys", number(stats.cache_keys), ""),
        ("lists", number(stats.lists), ""),
        ("queues", number(stats.queues), f"{stats.queued_entries:,} entries"),
        ("other keys", number(stats.other_keys), "not written by the adapters"),
    ]
    ctx.print(*table(("KEYS", "COUNT", ""), counts, ".R."))
    ctx.print("", *server_table(stats.servers))
    if stats.deepest_queues:
        ctx.print("", *queue_table(stats.deepest_queues, now_ms(), "DEEPEST QUEUES"))
    return 0


def server_table(servers: Sequence[ServerStats]) -> list[str]:
    rows = [
        (
            s.address,
            size(s.used_memory_bytes),
            number(s.ops_per_sec),
            number(s.connected_clients),
            s.error or "",
        )
        for s in servers
    ]
    return table(("SERVER", "MEMORY", "OPS/S", "CLIENTS", ""), rows, ".RRR.")


def queue_table(queues: Iterable[QueueInfo], now: int, title: str = "THREAD") -> list[str]:
    rows = [(q.thread_id, number(q.depth), age(q.oldest_enqueued_at, now)) for q in queues]
    return table((title, "DEPTH", "OLDEST"), rows, ".R.")


def cmd_subscriptions(ctx: Context) -> int:
    """Streamed in SSCAN order (no sorting: a set may hold millions); ``--limit`` stops
    the scan early."""
    limit: int | None = ctx.args.limit
    found = matching(ctx, ctx.state.iter_subscriptions(), str)
    count = 0
    for thread_id in found:
        if limit is not None and count == limit:
            if not ctx.args.json:
                total = ctx.state.subscription_count()
                of = "" if ctx.args.match else f" of {total:,}"
                ctx.err.write(f"chat-state: stopped at --limit {limit:,}{of} subscriptions\n")
            break
        count += 1
        if ctx.args.json:
            ctx.json({"thread_id": thread_id}, lines=True)
        else:
            ctx.print(shown(thread_id))
    if count == 0 and not ctx.args.json:
        ctx.err.write(f"chat-state: no subscriptions ({ctx.where()})\n")
    return 0


def _lock_order(lock: LockInfo) -> tuple[float, str]:
    return (lock.ttl_ms if lock.ttl_ms >= 0 else math.inf, lock.thread_id)


def cmd_locks(ctx: Context) -> int:
    locks, total = ranked(ctx, ctx.state.iter_locks(), _lock_order, "locks")
    if ctx.args.json:
        for lock in locks:
            ctx.json(lock.as_dict(), lines=True)
        return 0
    if not locks:
        ctx.print(f"no locks held ({ctx.where()})")
        return 0
    now = now_ms()
    rows = [
        (lock.thread_id, ttl(lock.ttl_ms), str(lock.holder), age(lock.holder.acquired_at, now))
        for lock in locks
    ]
    ctx.print(*table(("THREAD", "TTL", "HOLDER", "ACQUIRED"), rows, ".R.."))
    footer = shown_of(ctx, len(locks), total, "locks")
    if footer:
        ctx.print(footer)
    return 0


def _queue_order(queue: QueueInfo) -> tuple[int, str]:
    return (-queue.depth, queue.thread_id)


def cmd_queues(ctx: Context) -> int:
    queues, total = ranked(ctx, ctx.state.iter_queues(), _queue_order, "queues")
    if ctx.args.json:
        for queue in queues:
            ctx.json(queue.as_dict(), lines=True)
        return 0
    if not queues:
        ctx.print(f"no queued messages ({ctx.where()})")
        return 0
    ctx.print(*queue_table(queues, now_ms()))
    footer = shown_of(ctx, len(queues), total, "queues")
    if footer:
        ctx.print(footer)
    return 0


def cmd_get(ctx: Context) -> int:
    key: str = ctx.args.key
    value = ctx.state.get(key)
    if value is None:
        raise Failed(f"no value at key {key!r} ({ctx.where()})")
    ctx.json(value)
    return 0


def cmd_list(ctx: Context) -> int:
    key: str = ctx.args.key
    values = ctx.state.get_list(key)
    if not values:  # Redis deletes a list when it is empty: [] is an absent list
        raise Failed(f"no list at key {key!r} ({ctx.where()})")
    ctx.json(values)
    return 0


def cmd_health(ctx: Context) -> int:
    health = ctx.state.health()
    if ctx.args.json:
        ctx.json(dataclasses.asdict(health))
        return 0 if health.ok else 1
    server = " ".join(filter(None, (health.server, health.version))) or "server"
    latency = "-" if health.latency_ms is None else f"{health.latency_ms:.2f} ms"
    verdict = "ok" if health.ok else "NOT OK"
    ctx.print(f"{verdict}: {server}, {health.topology}, {latency} ({ctx.url})", "")
    rows = [
        (
            node.address,
            node.role or "-",
            "ok" if node.ok else "down",
            "-" if node.latency_ms is None else f"{node.latency_ms:.2f} ms",
            node.error or "",
        )
        for node in health.nodes
    ]
    ctx.print(*table(("NODE", "ROLE", "STATUS", "LATENCY", "ERROR"), rows, "...R."))
    return 0 if health.ok else 1


def top_screen(ctx: Context, stats: StateStats | None, error: str | None) -> list[str]:
    """One refresh of ``top``: the lines of its screen."""
    args = ctx.args
    clock = time.strftime("%H:%M:%S")
    lines = [f"chat-state top: {ctx.where()}  {clock}  (every {args.interval:g} s, Ctrl-C quits)"]
    if stats is None:
        return [*lines, "", f"error: {error}"]
    lines += ["", *server_table(stats.servers), ""]
    counts = [
        ("subscriptions", number(stats.subscriptions)),
        ("locks held", number(stats.locks)),
        ("queues", number(stats.queues)),
        ("queued entries", number(stats.queued_entries)),
        ("cache keys", number(stats.cache_keys)),
        ("lists", number(stats.lists)),
    ]
    lines += table(("STATE", "COUNT"), counts, ".R")
    if stats.deepest_queues:
        lines += ["", *queue_table(stats.deepest_queues, now_ms(), "DEEPEST QUEUES")]
    return lines


def cmd_top(ctx: Context) -> int:
    args = ctx.args
    live = is_terminal(ctx.out) and not args.json
    failed = False
    try:
        if live:
            ctx.out.write("\x1b[?25l\x1b[H\x1b[2J")  # hide the cursor, clear the screen
        for refresh in itertools.count(1):
            try:
                stats, error = ctx.state.stats(), None
            except ChatStateError as exc:  # show it, and try again at the next refresh
                stats, error = None, one_line(exc, ctx)
            failed = stats is None
            if args.json:
                shot = {"error": error} if stats is None else stats.as_dict()
                ctx.json({"time_ms": now_ms(), **shot}, lines=True)
            elif live:
                columns, rows = shutil.get_terminal_size()
                screen = [clip(line, columns) for line in top_screen(ctx, stats, error)]
                ctx.out.write("\x1b[H" + "".join(f"{line}\x1b[K\n" for line in screen[: rows - 1]))
                ctx.out.write("\x1b[J")
            else:
                ctx.print(*top_screen(ctx, stats, error), "")
            ctx.out.flush()
            if args.iterations is not None and refresh >= args.iterations:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if live:
            ctx.out.write("\x1b[?25h")  # the cursor back
            ctx.out.flush()
    return 1 if failed else 0


def cmd_clear(ctx: Context) -> int:
    args, state = ctx.args, ctx.state
    if state.key_prefix == DEFAULT_PREFIX and not args.allow_default_prefix:
        raise UsageError(
            f"refusing to clear the default prefix {DEFAULT_PREFIX!r}, which every bot "
            "that sets none shares: pass --allow-default-prefix to clear it anyway"
        )
    if not args.yes:
        if not is_terminal(sys.stdin):
            raise UsageError("clear deletes keys: pass --yes when not on a terminal")
        progress = Progress(ctx.err, "keys")
        try:
            for _ in state.iter_keys():
                progress.tick()
        finally:
            progress.done()
        ctx.err.write(f"Delete all {progress.count:,} keys of {ctx.where()}? [y/N] ")
        ctx.err.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            ctx.err.write("chat-state: nothing deleted\n")
            return 1
    removed = state.clear(allow_default_prefix=args.allow_default_prefix)
    if args.json:
        ctx.json({"removed": removed, "prefix": state.key_prefix})
    else:
        ctx.print(f"removed {removed:,} keys ({ctx.where()})")
    return 0


COMMANDS: dict[str, Callable[[Context], int]] = {
    "stats": cmd_stats,
    "subscriptions": cmd_subscriptions,
    "locks": cmd_locks,
    "queues": cmd_queues,
    "get": cmd_get,
    "list": cmd_list,
    "health": cmd_health,
    "top": cmd_top,
    "clear": cmd_clear,
}


# -- arguments -------------------------------------------------------------------------


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text}")
    return value


URL_HELP = (
    "the state's URL (memory://NAME, redis://…, redis+cluster://…, redis+sentinel://…); "
    "default: $CHAT_STATE_URL, else $REDIS_URL, else memory://"
)


def _add_common(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every operator command takes, before or after its name.

    The top parser gives the defaults; a command's parser sets only what is given
    after the name (``SUPPRESS``), so it never undoes what was given before it.
    """

    def add(*names: str, **kwargs: Any) -> None:
        if not defaults:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(*names, **kwargs)

    add("--url", help=URL_HELP)
    add("--prefix", help=f"the key prefix (default: {DEFAULT_PREFIX})")
    add("--driver", help="the client library: redis, valkey or coredis (default: the URL's)")
    add("--json", action="store_true", help="print JSON (JSON lines for the listings)")


def _common() -> argparse.ArgumentParser:
    """The operator commands' own copy of the common options (see :func:`_add_common`)."""
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common, defaults=False)
    return common


def _scan() -> argparse.ArgumentParser:
    """The options of the listings that may be long."""
    scan = argparse.ArgumentParser(add_help=False)
    scan.add_argument("--limit", type=_count, help="show at most this many")
    scan.add_argument(
        "--match", metavar="PATTERN", help="only thread ids matching this fnmatch pattern"
    )
    return scan


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="simulate webhook deliveries and check each message is handled exactly once",
        description=DEMO_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = demo.add_argument
    add(
        "--url",
        default=argparse.SUPPRESS,
        help="state URL, e.g. redis://localhost:6379/0 (default: memory://; "
        "CHAT_STATE_URL and REDIS_URL are not read: the demo writes only where it is told)",
    )
    add("--threads", type=_count, default=50, help="chat threads")
    add("--messages", type=_count, default=2000, help="distinct messages")
    add("--workers", type=_count, default=8, help="concurrent worker tasks")
    add("--retry-rate", type=_rate, default=0.3, help="chance a message is delivered again")
    add("--seed", type=int, default=1, help="seed of the delivery schedule")
    add("--key-prefix", default="chat-state-demo", help="prefix of every key written")
    add("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")


def parser() -> argparse.ArgumentParser:
    """The ``chat-state`` argument parser."""
    top = argparse.ArgumentParser(
        prog="chat-state",
        description="chat-state: shared state for chat bots. Look into a bot's state "
        "(stats, subscriptions, locks, queues, get, list, health, top), clear it, or run "
        "the demo.",
        epilog="Exit status: 0 ok, 1 failed (server unreachable, unknown key, not "
        "healthy), 2 usage (bad option or URL).",
    )
    top.add_argument("--version", action="version", version=f"chat-state {__version__}")
    _add_common(top, defaults=True)
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    common, scan = _common(), _scan()

    def command(name: str, help: str, *parents: argparse.ArgumentParser) -> Any:
        return commands.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            parents=[common, *parents],
        )

    command("stats", "count the state's keys of each kind, and show its servers")
    command("subscriptions", "list the subscribed threads (in scan order)", scan)
    command("locks", "list the locks held, soonest to expire first", scan)
    command("queues", "list the threads' queues, deepest first", scan)
    command("get", "print the JSON value at a cache key").add_argument("key", metavar="KEY")
    command("list", "print a list's values, oldest first").add_argument("key", metavar="KEY")
    command("health", "check every server answers (exit 1 if one does not)")
    top_command = command("top", "a live view of the servers, locks and queues")
    top_command.add_argument(
        "--interval", type=_seconds, default=1.0, help="seconds between refreshes (default: 1)"
    )
    top_command.add_argument(
        "--iterations", type=_count, help="stop after this many refreshes (default: Ctrl-C)"
    )
    clear = command("clear", "delete every key under the prefix")
    clear.add_argument("--yes", action="store_true", help="do not ask (needed off a terminal)")
    clear.add_argument(
        "--allow-default-prefix",
        action="store_true",
        help=f"allow clearing the default prefix {DEFAULT_PREFIX!r}",
    )
    _add_demo(commands)
    return top


# -- running ---------------------------------------------------------------------------


def _library_error(exc: BaseException) -> ChatStateError | None:
    """``exc``, or the first library error in it if it is an exception group (workers')."""
    if isinstance(exc, ChatStateError):
        return exc
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return next(filter(None, map(_library_error, inner)), None)


def resolve_url(given: str | None) -> tuple[str, bool]:
    """``--url``, else ``CHAT_STATE_URL``, else ``REDIS_URL``, else ``memory://``;
    → (the URL, whether it is the memory:// fallback)."""
    if given:
        return given, False
    for variable in URL_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable], False
    return "memory://", True


def _secrets_of(url: str) -> list[str]:
    """The URL's password as written and decoded, to blank out of any message."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [p for p in {password or "", unquote(password or "")} if len(p) >= 4]


def one_line(exc: BaseException | str, ctx: Context | None = None, url: str = "") -> str:
    """An error as one line, naming the (redacted) URL and never a password."""
    text = shown(" ".join(str(exc).split()) or type(exc).__name__)
    url = ctx.url if ctx is not None else url
    if url and url not in text:
        text = f"{text} ({url})"
    return text


class _ToStderr(logging.Handler):
    """The library's warnings, one line each on the stderr of the moment."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"chat-state: {record.levelname.lower()}: {record.getMessage()}\n")
        except Exception:
            self.handleError(record)


def _run(args: argparse.Namespace, url: str, redacted: str) -> int:
    """Connect and run the command; errors are raised (see :func:`operate`)."""
    try:
        state = State.from_url(url, key_prefix=args.prefix, driver=args.driver)
    except ChatStateError as exc:  # a bad URL, driver or prefix: the command line's
        raise UsageError(str(exc)) from exc
    with state:
        status = COMMANDS[args.command](Context(state, args, redacted, sys.stdout, sys.stderr))
        sys.stdout.flush()
        return status


def operate(args: argparse.Namespace) -> int:
    """Run an operator command; → its exit status: 2 for what the command line got
    wrong, 1 for what failed, each with one line on stderr (no traceback, no password)."""
    url, fallback = resolve_url(args.url)
    redacted = redact_url(url)
    if fallback:
        print(
            "chat-state: note: no --url, CHAT_STATE_URL or REDIS_URL: looking at memory://, "
            "an empty in-process state",
            file=sys.stderr,
        )
    library = logging.getLogger("chat_state")
    handler = None
    if not library.handlers and not logging.getLogger().handlers:
        handler = _ToStderr(logging.WARNING)
        library.addHandler(handler)
    problem: BaseException
    try:
        return _run(args, url, redacted)
    except BrokenPipeError:  # `chat-state subscriptions | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (UsageError, Failed, ChatStateError, OSError, ValueError) as exc:
        problem = exc
    except Exception as exc:  # a bug of ours: still one line, scrubbed, not a traceback
        problem = exc
    finally:
        if handler is not None:
            library.removeHandler(handler)
    line = one_line(problem, url=redacted)
    for secret in _secrets_of(url):
        line = line.replace(secret, "***")
    print(f"chat-state: error: {line}", file=sys.stderr)
    # A key or thread id the operations refuse (ValueError) is the command line's too.
    usage = isinstance(problem, UsageError) or (
        isinstance(problem, ValueError) and not isinstance(problem, (ChatStateError, UnicodeError))
    )
    return 2 if usage else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chat-state``; → the exit status (0 ok, 1 failed, 2 usage).

    ``--help``, ``--version`` and bad arguments raise :class:`SystemExit`, as argparse
    does.
    """
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:
        top.print_help(sys.stderr)
        return 2
    if args.command != "demo":
        if args.prefix is None:
            args.prefix = DEFAULT_PREFIX
        return operate(args)
    for option, instead in (("prefix", " (it writes under --key-prefix)"), ("driver", "")):
        if getattr(args, option) is not None:
            top.error(f"demo does not take --{option}{instead}")
    if args.url is None:
        args.url = "memory://"
    try:
        summary = anyio.run(demo, args)
    except Exception as exc:
        error = _library_error(exc)
        if error is None:
            raise
        print(f"chat-state: error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else report(summary))
    return 0 if summary["ok"] else 1
