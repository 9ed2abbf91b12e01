"""Command line: ``chat-state demo``, the library at work on a simulated chat platform."""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from . import AsyncState, ChatStateError, QueueEntry

__all__ = ["main"]

DEMO_DESCRIPTION = (
    "Simulate a chat platform delivering webhooks (with retries, a little out of order) "
    "to worker tasks sharing one AsyncState, which de-duplicate them, queue each message "
    "on its thread and drain the queue under the thread's lock; then check every message "
    "was handled exactly once, and remove the keys written."
)

T = TypeVar("T")
Delivery = tuple[str, str]  # (thread id, message id)

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


def parser() -> argparse.ArgumentParser:
    """The ``chat-state`` argument parser."""
    top = argparse.ArgumentParser(
        prog="chat-state", description="chat-state: shared state for chat bots."
    )
    commands = top.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="simulate webhook deliveries and check each message is handled exactly once",
        description=DEMO_DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = demo.add_argument
    add(
        "--url",
        default="memory://",
        help="state URL, e.g. redis://localhost:6379/0 "
        "(CHAT_STATE_URL and REDIS_URL are not read: the demo writes only where it is told)",
    )
    add("--threads", type=_count, default=50, help="chat threads")
    add("--messages", type=_count, default=2000, help="distinct messages")
    add("--workers", type=_count, default=8, help="concurrent worker tasks")
    add("--retry-rate", type=_rate, default=0.3, help="chance a message is delivered again")
    add("--seed", type=int, default=1, help="seed of the delivery schedule")
    add("--key-prefix", default="chat-state-demo", help="prefix of every key written")
    add("--json", action="store_true", help="print the summary as JSON")
    return top


def _library_error(exc: BaseException) -> ChatStateError | None:
    """``exc``, or the first library error in it if it is an exception group (workers')."""
    if isinstance(exc, ChatStateError):
        return exc
    inner: Sequence[BaseException] = getattr(exc, "exceptions", ())
    return next(filter(None, map(_library_error, inner)), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chat-state``; → the exit status (0 ok, 1 failed, 2 usage).

    ``--help`` and bad arguments raise :class:`SystemExit`, as argparse does.
    """
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:
        top.print_help(sys.stderr)
        return 2
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
