"""The five workloads, written once for every Python subject.

One *op* is what a workload counts as one operation (W1, W3 and W5 count a pair
of calls as one). Every op takes a sequence number ``i``, unique within a cell,
and returns ``True`` when its result is the expected one (a lock acquired, a key
written, the value read back, a member found, an entry dequeued); a ``False`` is
counted as an *anomaly*, so a cell that "ran fast" because it did nothing shows.

``benchmarks/bench.mjs`` implements the same workloads for the TypeScript
adapters, from the constants passed to it by :func:`node_config`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol

__all__ = [
    "CACHE_VALUE",
    "MESSAGE",
    "WORKLOADS",
    "AsyncOp",
    "AsyncSend",
    "AsyncStateAPI",
    "EntryFactory",
    "SyncOp",
    "SyncSend",
    "SyncStateAPI",
    "Workload",
    "async_raw_ops",
    "async_state_ops",
    "lua_source",
    "member",
    "sync_raw_ops",
    "sync_state_ops",
]

AsyncOp = Callable[[int], Awaitable[bool]]
SyncOp = Callable[[int], bool]
#: Builds a queue entry ``(enqueued_at, expires_at, message)`` in a library's own type.
EntryFactory = Callable[[int, int, Any], Any]

PREFIX = "chat-sdk"  # every subject's key prefix (the TypeScript default)
LOCK_TTL_MS = 30_000
CACHE_TTL_MS = 60_000
QUEUE_MAX = 10
QUEUE_EXPIRY_MS = 90_000
QUEUE_MIN_TTL_MS = 60_000
SUBSCRIPTIONS = 10_000
CACHE_KEYS = 1_000

#: The W3 value: a JSON object of about 200 bytes (compact).
CACHE_VALUE: dict[str, Any] = {
    "id": "U0BENCH0001",
    "name": "Benchmark User",
    "team": "T0BENCH",
    "roles": ["member", "bench"],
    "settings": {"tz": "Europe/Paris", "locale": "en-US", "notify": True},
    "seen": 1700000000123,
    "note": "cached profile",
}

#: The W5 queued message (a small chat message as plain JSON).
MESSAGE: dict[str, Any] = {
    "id": "1700000000.000100",
    "text": "hello from the queue workload",
    "author": {"userId": "U0BENCH0001", "userName": "bench"},
}


@dataclass(frozen=True)
class Workload:
    """One workload: its id, a short name and what one op is."""

    id: str
    name: str
    op: str


WORKLOADS: dict[str, Workload] = {
    w.id: w
    for w in (
        Workload("w1", "lock cycle", "acquire_lock(thread_i, 30000) + release_lock"),
        Workload("w2", "dedupe", 'set_if_not_exists("dedupe:i", True, 60000), i unique'),
        Workload("w3", "cache", "set(key_i, ~200-byte JSON, 60000) + get(key_i)"),
        Workload("w4", "is_subscribed", "is_subscribed(member) on a 10k-member set"),
        Workload("w5", "queue", "enqueue(thread_i, entry, 10) + dequeue(thread_i)"),
    )
}


def member(n: int) -> str:
    """The ``n``-th pre-populated subscription (a Slack-like thread id, ~36 chars)."""
    return f"slack:C{n % 97:09d}:{1700000000 + n}.{n % 1000000:06d}"


def thread_id(tag: str, i: int) -> str:
    """A thread id unique to the cell ``tag`` and the op ``i``."""
    return f"slack:CBENCH{tag}:{1700000000 + i}.000100"


def cache_key(i: int) -> str:
    """W3's key: a working set of :data:`CACHE_KEYS` keys."""
    return f"user:{i % CACHE_KEYS}"


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def lua_source(name: str) -> str:
    """The text of one of chat-state's scripts (``chat_state/core/lua/NAME.lua``)."""
    return files("chat_state.core").joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_TRUE = _encode(True)


def node_config() -> dict[str, Any]:
    """The workload constants that ``bench.mjs`` needs (so both sides use the same data)."""
    return {
        "lockTtlMs": LOCK_TTL_MS,
        "cacheTtlMs": CACHE_TTL_MS,
        "queueMax": QUEUE_MAX,
        "queueExpiryMs": QUEUE_EXPIRY_MS,
        "subscriptions": SUBSCRIPTIONS,
        "cacheKeys": CACHE_KEYS,
        "cacheValue": CACHE_VALUE,
        "message": MESSAGE,
    }


# -- adapters with the StateAdapter methods (chat-state, chat_sdk) ----------------------


class AsyncStateAPI(Protocol):
    """The async methods the workloads call (AsyncState, chat_sdk's RedisStateAdapter)."""

    async def acquire_lock(self, thread_id: str, ttl_ms: int) -> Any: ...
    async def release_lock(self, lock: Any) -> None: ...
    async def set_if_not_exists(self, key: str, value: Any, ttl_ms: int | None = None) -> bool: ...
    async def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None: ...
    async def get(self, key: str) -> Any: ...
    async def is_subscribed(self, thread_id: str) -> bool: ...
    async def enqueue(self, thread_id: str, entry: Any, max_size: int) -> int: ...
    async def dequeue(self, thread_id: str) -> Any: ...


class SyncStateAPI(Protocol):
    """The blocking methods the workloads call (chat-state's State)."""

    def acquire_lock(self, thread_id: str, ttl_ms: int) -> Any: ...
    def release_lock(self, lock: Any) -> None: ...
    def set_if_not_exists(self, key: str, value: Any, ttl_ms: int | None = None) -> bool: ...
    def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None: ...
    def get(self, key: str) -> Any: ...
    def is_subscribed(self, thread_id: str) -> bool: ...
    def enqueue(self, thread_id: str, entry: Any, max_size: int) -> int: ...
    def dequeue(self, thread_id: str) -> Any: ...


def async_state_ops(state: AsyncStateAPI, workload: str, tag: str, entry: EntryFactory) -> AsyncOp:
    """The op of ``workload`` on an async state adapter; ``tag`` names the cell."""

    async def w1(i: int) -> bool:
        lock = await state.acquire_lock(thread_id(tag, i), LOCK_TTL_MS)
        if lock is None:
            return False
        await state.release_lock(lock)
        return True

    async def w2(i: int) -> bool:
        return bool(await state.set_if_not_exists(f"dedupe:{tag}:{i}", True, CACHE_TTL_MS))

    async def w3(i: int) -> bool:
        key = cache_key(i)
        await state.set(key, CACHE_VALUE, CACHE_TTL_MS)
        return await state.get(key) is not None

    async def w4(i: int) -> bool:
        return bool(await state.is_subscribed(member(i % SUBSCRIPTIONS)))

    async def w5(i: int) -> bool:
        thread = thread_id(tag, i)
        now = now_ms()
        await state.enqueue(thread, entry(now, now + QUEUE_EXPIRY_MS, MESSAGE), QUEUE_MAX)
        return await state.dequeue(thread) is not None

    ops: dict[str, AsyncOp] = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5}
    return ops[workload]


def sync_state_ops(state: SyncStateAPI, workload: str, tag: str, entry: EntryFactory) -> SyncOp:
    """The op of ``workload`` on a blocking state adapter; ``tag`` names the cell."""

    def w1(i: int) -> bool:
        lock = state.acquire_lock(thread_id(tag, i), LOCK_TTL_MS)
        if lock is None:
            return False
        state.release_lock(lock)
        return True

    def w2(i: int) -> bool:
        return bool(state.set_if_not_exists(f"dedupe:{tag}:{i}", True, CACHE_TTL_MS))

    def w3(i: int) -> bool:
        key = cache_key(i)
        state.set(key, CACHE_VALUE, CACHE_TTL_MS)
        return state.get(key) is not None

    def w4(i: int) -> bool:
        return bool(state.is_subscribed(member(i % SUBSCRIPTIONS)))

    def w5(i: int) -> bool:
        thread = thread_id(tag, i)
        now = now_ms()
        state.enqueue(thread, entry(now, now + QUEUE_EXPIRY_MS, MESSAGE), QUEUE_MAX)
        return state.dequeue(thread) is not None

    ops: dict[str, SyncOp] = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5}
    return ops[workload]


# -- raw commands: what chat-state sends, and the work any adapter must do --------------


def _queue_text(now: int) -> tuple[str, int]:
    """A queue entry's JSON text (camelCase, as chat-state writes it) and its key TTL."""
    expires = now + QUEUE_EXPIRY_MS
    text = _encode({"enqueuedAt": now, "expiresAt": expires, "message": MESSAGE})
    return text, max(expires - now_ms(), QUEUE_MIN_TTL_MS)


#: Sends one command (``key`` routes it on a Cluster; redis-py's client ignores it).
AsyncSend = Callable[[str, tuple[Any, ...]], Awaitable[Any]]
SyncSend = Callable[[str, tuple[Any, ...]], Any]


def async_raw_ops(send: AsyncSend, workload: str, tag: str, shas: dict[str, str]) -> AsyncOp:
    """The op of ``workload`` as raw commands, each sent with ``send``.

    W1 = SET NX PX + EVALSHA release, W2 = SET NX PX, W3 = SET PX + GET,
    W4 = SISMEMBER, W5 = EVALSHA push + LPOP: what chat-state sends. The op also
    does what any correct adapter must: a random lock token, JSON encoding and
    decoding of values and queue entries.
    """
    subscriptions = f"{PREFIX}:subscriptions"

    async def w1(i: int) -> bool:
        key = f"{PREFIX}:lock:{thread_id(tag, i)}"
        token = secrets.token_hex(16)
        if not await send(key, ("SET", key, token, "PX", LOCK_TTL_MS, "NX")):
            return False
        await send(key, ("EVALSHA", shas["release"], 1, key, token))
        return True

    async def w2(i: int) -> bool:
        key = f"{PREFIX}:cache:dedupe:{tag}:{i}"
        return bool(await send(key, ("SET", key, _TRUE, "PX", CACHE_TTL_MS, "NX")))

    async def w3(i: int) -> bool:
        key = f"{PREFIX}:cache:{cache_key(i)}"
        await send(key, ("SET", key, _encode(CACHE_VALUE), "PX", CACHE_TTL_MS))
        text = await send(key, ("GET", key))
        return text is not None and json.loads(text) is not None

    async def w4(i: int) -> bool:
        return bool(
            await send(subscriptions, ("SISMEMBER", subscriptions, member(i % SUBSCRIPTIONS)))
        )

    async def w5(i: int) -> bool:
        key = f"{PREFIX}:queue:{thread_id(tag, i)}"
        text, ttl = _queue_text(now_ms())
        await send(key, ("EVALSHA", shas["push"], 1, key, text, QUEUE_MAX, ttl))
        popped = await send(key, ("LPOP", key))
        return popped is not None and json.loads(popped) is not None

    ops: dict[str, AsyncOp] = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5}
    return ops[workload]


def sync_raw_ops(send: SyncSend, workload: str, tag: str, shas: dict[str, str]) -> SyncOp:
    """The op of ``workload`` as raw blocking commands, each sent with ``send`` (as above)."""
    subscriptions = f"{PREFIX}:subscriptions"

    def w1(i: int) -> bool:
        key = f"{PREFIX}:lock:{thread_id(tag, i)}"
        token = secrets.token_hex(16)
        if not send(key, ("SET", key, token, "PX", LOCK_TTL_MS, "NX")):
            return False
        send(key, ("EVALSHA", shas["release"], 1, key, token))
        return True

    def w2(i: int) -> bool:
        key = f"{PREFIX}:cache:dedupe:{tag}:{i}"
        return bool(send(key, ("SET", key, _TRUE, "PX", CACHE_TTL_MS, "NX")))

    def w3(i: int) -> bool:
        key = f"{PREFIX}:cache:{cache_key(i)}"
        send(key, ("SET", key, _encode(CACHE_VALUE), "PX", CACHE_TTL_MS))
        text = send(key, ("GET", key))
        return text is not None and json.loads(text) is not None

    def w4(i: int) -> bool:
        return bool(send(subscriptions, ("SISMEMBER", subscriptions, member(i % SUBSCRIPTIONS))))

    def w5(i: int) -> bool:
        key = f"{PREFIX}:queue:{thread_id(tag, i)}"
        text, ttl = _queue_text(now_ms())
        send(key, ("EVALSHA", shas["push"], 1, key, text, QUEUE_MAX, ttl))
        popped = send(key, ("LPOP", key))
        return popped is not None and json.loads(popped) is not None

    ops: dict[str, SyncOp] = {"w1": w1, "w2": w2, "w3": w3, "w4": w4, "w5": w5}
    return ops[workload]
