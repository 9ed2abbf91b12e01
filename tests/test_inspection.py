"""The operators' view (subscriptions, locks, queues, stats, clear) on every target,
through both facades, and its sans-IO parts on their own."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from chat_state import (
    ConfigurationError,
    Lock,
    LockHolder,
    LockInfo,
    NotConnectedError,
    QueueEntry,
    QueueInfo,
    ServerStats,
    State,
)
from chat_state.core.inspection import holder_of, server_stats
from chat_state.core.layout import Layout
from chat_state.inspection import DEEPEST, UNLINK_BATCH

from .conftest import Target

pytestmark = pytest.mark.anyio

FAR = 2**41  # an expiry far in the future (ms)


async def collect(call: Any) -> list[Any]:
    """What an ``iter_*`` gave, as a list: State's iterator (through AsAsync) or
    AsyncState's async iterator."""
    if inspect.isawaitable(call):
        call = await call
    if hasattr(call, "__aiter__"):
        return [item async for item in call]
    return list(call)


# -- on every target, through both facades ------------------------------------------------


async def test_subscriptions_are_walked_with_sscan(state: Any) -> None:
    threads = {f"slack:C{n}:1700000000.{n:06d}" for n in range(1500)}  # several SSCAN pages
    for thread in threads:
        await state.subscribe(thread)
    assert await state.subscription_count() == 1500
    found = await collect(state.iter_subscriptions())
    assert len(found) == 1500  # each member once
    assert set(found) == threads


async def test_a_lock_is_told_without_its_token(state: Any) -> None:
    lock = await state.acquire_lock("th", 30_000)
    other = await state.acquire_lock("other", 60_000)
    info = await state.inspect_lock("th")
    assert isinstance(info, LockInfo)
    assert info.thread_id == "th"
    assert 0 < info.ttl_ms <= 30_000
    assert info.holder.origin == "chat-state"
    assert info.holder.holds(lock)
    assert not info.holder.holds(other)
    assert lock.token not in repr(info) + str(info.holder) + json.dumps(info.as_dict())
    assert await state.inspect_lock("nobody") is None
    found = {i.thread_id: i for i in await collect(state.iter_locks())}
    assert set(found) == {"th", "other"}
    assert found["other"].holder.holds(other)
    await state.release_lock(lock)
    assert await state.inspect_lock("th") is None


async def test_queues_are_listed_and_peeked_without_taking(state: Any) -> None:
    for n in range(3):
        await state.enqueue("busy", QueueEntry(1_000 + n, FAR, {"n": n}), 10)
    await state.enqueue("quiet", QueueEntry(5_000, FAR, {"n": 9}), 10)
    queues = {q.thread_id: q for q in await collect(state.iter_queues())}
    assert queues == {
        "busy": QueueInfo("busy", 3, 1_000),
        "quiet": QueueInfo("quiet", 1, 5_000),
    }
    peeked = await state.peek_queue("busy", 2)
    assert [e.message for e in peeked] == [{"n": 0}, {"n": 1}]
    assert await state.peek_queue("busy") == await state.peek_queue("busy", 100)
    assert await state.queue_depth("busy") == 3  # nothing taken
    assert await state.peek_queue("empty") == []
    with pytest.raises(ValueError, match="limit"):
        await state.peek_queue("busy", 0)


async def test_stats_count_what_was_written(state: Any, target: Target) -> None:
    for n in range(4):
        await state.subscribe(f"s{n}")
    await state.acquire_lock("a", 30_000)
    await state.acquire_lock("b", 30_000)
    for n in range(3):
        await state.set(f"cache-{n}", n)
    await state.append_to_list("history", {"text": "hi"})
    for depth, thread in enumerate(["q1", "q2", "q3"], start=1):
        for n in range(depth):
            await state.enqueue(thread, QueueEntry(n, FAR, {}), 10)
    target.raw.set(f"{target.prefix}:stray", "x")  # a key no operation writes
    stats = await state.stats()
    assert stats.prefix == target.prefix
    figures = (stats.subscriptions, stats.locks, stats.cache_keys, stats.lists, stats.queues)
    assert figures == (4, 2, 3, 1, 3)
    assert stats.queued_entries == 6
    assert stats.other_keys == 1
    assert [(q.thread_id, q.depth) for q in stats.deepest_queues] == [
        ("q3", 3),
        ("q2", 2),
        ("q1", 1),
    ]
    assert stats.servers
    for server in stats.servers:
        assert isinstance(server, ServerStats)
        assert server.error is None, server
        if target.topology != "memory":
            assert server.used_memory_bytes is not None
            assert server.used_memory_bytes > 0
            assert server.connected_clients is not None
            assert server.connected_clients >= 1
    if target.topology == "cluster" and target.driver != "coredis":
        assert len(stats.servers) == 3  # every primary (coredis's client answers as one)
    assert json.loads(json.dumps(stats.as_dict()))["queues"] == 3


async def test_clear_removes_this_prefix_and_nothing_else(make_state: Any, target: Target) -> None:
    mine, neighbour = make_state(), make_state(key_prefix=f"{target.prefix}x")
    await mine.connect()
    await neighbour.connect()
    try:
        keys = UNLINK_BATCH + 20  # more than one UNLINK (and, on a Cluster, many slots)
        for n in range(keys - 2):
            await mine.set(f"k{n}", n)
        await mine.subscribe("t")
        await mine.acquire_lock("t", 30_000)
        await neighbour.set("k0", "kept")
        await neighbour.subscribe("t")
        assert await mine.clear() == keys
        assert await collect(mine.iter_keys()) == []
        assert await neighbour.get("k0") == "kept"
        assert await neighbour.is_subscribed("t")
        assert await mine.clear() == 0
    finally:
        await neighbour.clear()
        await mine.disconnect()
        await neighbour.disconnect()


async def test_clear_refuses_the_default_prefix(make_state: Any, target: Target) -> None:
    state = make_state(key_prefix="chat-sdk")
    await state.connect()
    try:
        with pytest.raises(ConfigurationError, match="allow_default_prefix=True"):
            await state.clear()
        if target.topology == "memory":  # (a shared server may hold other tests' keys)
            await state.set("k", 1)
            assert await state.clear(allow_default_prefix=True) == 1
    finally:
        await state.disconnect()


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_the_walks_need_a_connection(make_state: Any) -> None:
    state = make_state()
    for name in ("iter_subscriptions", "iter_locks", "iter_queues", "stats", "clear"):
        with pytest.raises(NotConnectedError):
            await collect(getattr(state, name)())


# -- the sans-IO parts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "origin", "acquired_at"),
    [
        ("cs_" + "0123456789abcdef" * 2, "chat-state", None),
        ("ioredis_1700000000123_k3j4h5g6", "state-ioredis", 1700000000123),
        ("redis_1700000000456_0.123456789", "state-redis", 1700000000456),
        ("chat-sdk_1700000000789_" + "ab" * 16, "chat_sdk", 1700000000789),
        ("my-own-token", "unknown", None),
    ],
)
def test_a_holder_is_told_from_its_token(token: str, origin: str, acquired_at: int | None) -> None:
    holder = holder_of(token)
    assert (holder.origin, holder.acquired_at) == (origin, acquired_at)
    assert len(holder.fingerprint) == 8
    assert holder.holds(Lock("t", token, 0))
    assert not holder.holds(Lock("t", token + "x", 0))
    assert token not in repr(holder) + str(holder)
    assert str(holder) == f"{origin} #{holder.fingerprint}"
    assert holder == LockHolder(origin, LockHolder.fingerprint_of(token), acquired_at)


def test_info_is_read_from_text_dicts_and_errors() -> None:
    text = "# Memory\r\nused_memory:1024\r\n# Stats\r\ninstantaneous_ops_per_sec:7\r\n"
    assert server_stats("a:1", text + "connected_clients:3\r\n") == [ServerStats("a:1", 1024, 7, 3)]
    parsed = {"used_memory": 2048, "connected_clients": 2}  # a client library's dict
    assert server_stats("a:1", parsed) == [ServerStats("a:1", 2048, None, 2)]
    per_node = {"n1:1": {"used_memory": 1}, "n2:2": {"used_memory": 2}}
    assert [s.address for s in server_stats("cluster", per_node)] == ["n1:1", "n2:2"]
    assert server_stats("a:1", OSError("down")) == [
        ServerStats("a:1", None, None, None, error="down")
    ]
    assert server_stats("a:1", "# nothing\r\n") == [ServerStats("a:1", None, None, None)]


def test_a_key_is_parsed_into_its_kind_and_name() -> None:
    layout = Layout("bot")
    assert layout.parse("bot:subscriptions") == ("subscriptions", "")
    assert layout.parse("bot:lock:slack:C1:1.2") == ("lock", "slack:C1:1.2")
    assert layout.parse("bot:cache:dedupe:e1") == ("cache", "dedupe:e1")
    assert layout.parse("bot:list:history") == ("list", "history")
    assert layout.parse("bot:queue:t") == ("queue", "t")
    assert layout.parse("bot:lock:") == ("other", "lock:")
    assert layout.parse("bot:mine") == ("other", "mine")


def test_stats_report_at_most_the_deepest_queues() -> None:
    with State.from_url("memory://", key_prefix="deep") as state:
        for n in range(DEEPEST + 5):
            for _ in range(n + 1):
                state.enqueue(f"q{n}", QueueEntry(0, FAR, {}), 100)
        stats = state.stats()
    depths = [q.depth for q in stats.deepest_queues]
    assert depths == list(range(DEEPEST + 5, 5, -1))
    assert stats.queues == DEEPEST + 5


async def test_keys_of_another_type_are_not_locks_or_queues(state: Any, target: Target) -> None:
    """A value no adapter writes under ``lock:`` or ``queue:`` (another writer's) is
    skipped by the walks and counted as other, not an error for the whole walk."""
    target.raw.rpush(target.key("lock", "odd"), "x")  # a list where a lock would be
    target.raw.set(target.key("queue", "odd"), "x")  # a string where a queue would be
    await state.enqueue("real", QueueEntry(1, FAR, {}), 10)
    assert await state.inspect_lock("odd") is None
    assert await collect(state.iter_locks()) == []
    assert [q.thread_id for q in await collect(state.iter_queues())] == ["real"]
    stats = await state.stats()
    assert (stats.locks, stats.queues, stats.other_keys, stats.queued_entries) == (1, 1, 1, 1)


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_an_entry_with_an_impossible_time_is_told_as_unknown(
    state: Any, target: Target
) -> None:
    target.raw.rpush(target.key("queue", "t"), '{"enqueuedAt":1e400,"expiresAt":1,"message":{}}')
    assert await collect(state.iter_queues()) == [QueueInfo("t", 1, None)]
    assert (await state.stats()).deepest_queues == (QueueInfo("t", 1, None),)


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_a_nested_prefix_is_part_of_its_parent(make_state: Any, target: Target) -> None:
    """As the README says: ``bot:eu``'s keys start with ``bot:``, so ``bot`` holds them."""
    parent, nested = make_state(), make_state(key_prefix=f"{target.prefix}:eu")
    await parent.connect()
    await nested.connect()
    try:
        await nested.set("k", 1)
        assert (await parent.stats()).other_keys == 1
        assert await parent.clear() == 1
        assert await nested.get("k") is None
    finally:
        await parent.disconnect()
        await nested.disconnect()
