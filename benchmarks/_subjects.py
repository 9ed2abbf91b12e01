"""The subjects compared, and how each Python subject is opened and measured.

A subject is one library on one backend. Python subjects run in the runner's
process (async ones on a fresh asyncio loop each); the TypeScript ones run in a
Node process (:mod:`benchmarks._node`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio
from chat_sdk.state.redis import RedisStateAdapter
from chat_sdk.types import QueueEntry as ChatSdkQueueEntry

from chat_state import AsyncState, QueueEntry, State

from ._measure import CellResult, Timing, measure_async, measure_threads
from ._workloads import (
    AsyncOp,
    SyncOp,
    async_raw_ops,
    async_state_ops,
    lua_source,
    sync_raw_ops,
    sync_state_ops,
)

__all__ = ["SUBJECTS", "Subject", "run_async_subject", "run_sync_subject"]

Backend = Literal["memory", "standalone", "cluster"]
Kind = Literal["async", "sync", "node"]
Library = Literal["chat-state", "chat-state-raw", "redis-py", "chat_sdk", "ts-ioredis", "ts-redis"]


@dataclass(frozen=True)
class Subject:
    """One column of the table."""

    id: str
    short: str
    label: str
    kind: Kind
    backend: Backend
    library: Library
    loop: Literal["asyncio", "uvloop"] = "asyncio"  # async subjects' event loop


_SA = "standalone redis-server"
_CL = "Redis Cluster (3 primaries)"

SUBJECTS: tuple[Subject, ...] = (
    Subject(
        "async-memory",
        "AS mem",
        "chat-state AsyncState, memory://",
        "async",
        "memory",
        "chat-state",
    ),
    Subject(
        "async-standalone",
        "AS redis",
        f"chat-state AsyncState, {_SA}",
        "async",
        "standalone",
        "chat-state",
    ),
    Subject(
        "async-uvloop",
        "AS uvl",
        f"chat-state AsyncState on uvloop, {_SA}",
        "async",
        "standalone",
        "chat-state",
        "uvloop",
    ),
    Subject(
        "async-own",
        "AS raw",
        f"chat-state's own connection (AsyncState's), raw commands, no facade, {_SA}",
        "async",
        "standalone",
        "chat-state-raw",
    ),
    Subject(
        "async-cluster",
        "AS clus",
        f"chat-state AsyncState, {_CL}",
        "async",
        "cluster",
        "chat-state",
    ),
    Subject("sync-memory", "S mem", "chat-state State, memory://", "sync", "memory", "chat-state"),
    Subject(
        "sync-standalone", "S redis", f"chat-state State, {_SA}", "sync", "standalone", "chat-state"
    ),
    Subject("sync-cluster", "S clus", f"chat-state State, {_CL}", "sync", "cluster", "chat-state"),
    Subject(
        "redispy-async",
        "rpy-asy",
        f"raw redis-py asyncio client, {_SA}",
        "async",
        "standalone",
        "redis-py",
    ),
    Subject(
        "redispy-sync",
        "rpy-syn",
        f"raw redis-py blocking client, {_SA}",
        "sync",
        "standalone",
        "redis-py",
    ),
    Subject(
        "ts-ioredis",
        "ts-iored",
        f"TypeScript @chat-adapter/state-ioredis (Node), {_SA}",
        "node",
        "standalone",
        "ts-ioredis",
    ),
    Subject(
        "ts-redis",
        "ts-redis",
        f"TypeScript @chat-adapter/state-redis (Node), {_SA}",
        "node",
        "standalone",
        "ts-redis",
    ),
    Subject(
        "chat-sdk",
        "chat_sdk",
        f"Python chat_sdk RedisStateAdapter, {_SA}",
        "async",
        "standalone",
        "chat_sdk",
    ),
)

#: Seeds the W4 subscriptions through the subject's own API (memory backends only).
AsyncSeed = Callable[[Sequence[str]], Awaitable[None]]
SyncSeed = Callable[[Sequence[str]], None]


@dataclass
class _AsyncOpened:
    op_for: Callable[[str, str], AsyncOp]
    seed: AsyncSeed | None


@dataclass
class _SyncOpened:
    op_for: Callable[[str, str], SyncOp]
    seed: SyncSeed | None


def _no_library_client() -> tuple[Any, list[Any]]:
    raise RuntimeError("the raw own-connection subject has no client library")


def _redispy_send(client: Any) -> Callable[[str, tuple[Any, ...]], Any]:
    """A redis-py client's way to send one command (its reply callbacks included)."""

    def send(key: str, args: tuple[Any, ...]) -> Any:
        return client.execute_command(*args)

    return send


def _chat_state_entry(enqueued_at: int, expires_at: int, message: Any) -> QueueEntry:
    return QueueEntry(enqueued_at, expires_at, message)


def _chat_sdk_entry(enqueued_at: int, expires_at: int, message: Any) -> Any:
    return ChatSdkQueueEntry(enqueued_at=enqueued_at, expires_at=expires_at, message=message)


@asynccontextmanager
async def _open_async(subject: Subject, url: str) -> AsyncIterator[_AsyncOpened]:
    """Connect an async subject; disconnect it at the end."""
    if subject.library == "chat-state":
        async with AsyncState.from_url(url) as state:

            async def seed(members: Sequence[str]) -> None:
                for name in members:
                    await state.subscribe(name)

            yield _AsyncOpened(
                lambda w, tag: async_state_ops(state, w, tag, _chat_state_entry),
                seed if subject.backend == "memory" else None,
            )
    elif subject.library == "redis-py":
        client = redis.asyncio.Redis.from_url(url, decode_responses=True)
        try:
            shas = {
                name: await client.script_load(lua_source(name)) for name in ("release", "push")
            }
            yield _AsyncOpened(
                lambda w, tag: async_raw_ops(_redispy_send(client), w, tag, shas), None
            )
        finally:
            await client.aclose()
    elif subject.library == "chat-state-raw":
        # The connection AsyncState sends through, with the same commands as the raw
        # redis-py subject: the facade's cost is AsyncState's throughput over this one's.
        # (imported here: a --baseline child may run a chat-state that has neither)
        from chat_state.backend import parse_redis_url  # noqa: PLC0415
        from chat_state.connections import open_async  # noqa: PLC0415

        own = open_async(parse_redis_url(url), _no_library_client)
        try:
            shas = {
                name: await own.call(None, ("SCRIPT", "LOAD", lua_source(name)))
                for name in ("release", "push")
            }
            yield _AsyncOpened(lambda w, tag: async_raw_ops(own.call, w, tag, shas), None)
        finally:
            await own.aclose()
    elif subject.library == "chat_sdk":
        adapter = RedisStateAdapter(url=url)
        await adapter.connect()
        try:
            yield _AsyncOpened(
                lambda w, tag: async_state_ops(adapter, w, tag, _chat_sdk_entry), None
            )
        finally:
            await adapter.disconnect()
    else:
        raise ValueError(f"{subject.id} is not an async Python subject")


@contextmanager
def _open_sync(subject: Subject, url: str) -> Iterator[_SyncOpened]:
    """Connect a blocking subject; disconnect it at the end."""
    if subject.library == "chat-state":
        with State.from_url(url) as state:

            def seed(members: Sequence[str]) -> None:
                for name in members:
                    state.subscribe(name)

            yield _SyncOpened(
                lambda w, tag: sync_state_ops(state, w, tag, _chat_state_entry),
                seed if subject.backend == "memory" else None,
            )
    elif subject.library == "redis-py":
        client = redis.Redis.from_url(url, decode_responses=True)
        try:
            shas = {name: str(client.script_load(lua_source(name))) for name in ("release", "push")}
            yield _SyncOpened(
                lambda w, tag: sync_raw_ops(_redispy_send(client), w, tag, shas), None
            )
        finally:
            client.close()
    else:
        raise ValueError(f"{subject.id} is not a blocking Python subject")


def _cell_tag(workload: str, concurrency: int) -> str:
    return f"{workload}c{concurrency}"


def run_async_subject(
    subject: Subject,
    url: str,
    plan: Sequence[tuple[str, int]],
    timing: Timing,
    members: Sequence[str],
) -> list[CellResult]:
    """Measure every ``(workload, concurrency)`` of ``plan`` on a fresh event loop."""

    async def main() -> list[CellResult]:
        cells: list[CellResult] = []
        async with _open_async(subject, url) as opened:
            if opened.seed is not None and any(w == "w4" for w, _c in plan):
                await opened.seed(members)
            for workload, concurrency in plan:
                cell = CellResult(subject.id, workload, concurrency)
                op = opened.op_for(workload, _cell_tag(workload, concurrency))
                cells.append(await measure_async(op, concurrency, timing, cell))
        return cells

    if subject.loop == "uvloop":
        import uvloop  # noqa: PLC0415  (a dev dependency; only this subject needs it)

        return uvloop.run(main())
    return asyncio.run(main())


def run_sync_subject(
    subject: Subject,
    url: str,
    plan: Sequence[tuple[str, int]],
    timing: Timing,
    members: Sequence[str],
) -> list[CellResult]:
    """Measure every ``(workload, concurrency)`` of ``plan`` with threads on one instance."""
    cells: list[CellResult] = []
    with _open_sync(subject, url) as opened:
        if opened.seed is not None and any(w == "w4" for w, _c in plan):
            opened.seed(members)
        for workload, concurrency in plan:
            cell = CellResult(subject.id, workload, concurrency)
            op = opened.op_for(workload, _cell_tag(workload, concurrency))
            cells.append(measure_threads(op, concurrency, timing, cell))
    return cells
