"""Every operation's behaviour, on memory and redis-server, through State and AsyncState."""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import anyio
import pytest

from chat_state import (
    MAX_TTL_MS,
    BackendError,
    ConfigurationError,
    Lock,
    NotConnectedError,
    QueueEntry,
    SerializationError,
    State,
)
from chat_state.core.operations import now_ms
from chat_state.core.validate import MAX_SIZE

from .conftest import AsAsync, Target

pytestmark = pytest.mark.anyio


# -- subscriptions ----------------------------------------------------------------------


async def test_subscriptions(state: Any, target: Target) -> None:
    assert await state.is_subscribed("slack:C1:1.2") is False
    await state.subscribe("slack:C1:1.2")
    await state.subscribe("slack:C1:1.2")
    await state.subscribe("teams:x")
    assert await state.is_subscribed("slack:C1:1.2") is True
    assert target.raw.smembers(target.key("subscriptions")) == {"slack:C1:1.2", "teams:x"}
    await state.unsubscribe("slack:C1:1.2")
    await state.unsubscribe("never-subscribed")
    assert await state.is_subscribed("slack:C1:1.2") is False
    assert await state.is_subscribed("teams:x") is True


# -- locks --------------------------------------------------------------------------------


async def test_acquire_lock_returns_a_lock_value(state: Any, target: Target) -> None:
    before = now_ms()
    lock = await state.acquire_lock("th", 30_000)
    after = now_ms()
    assert isinstance(lock, Lock)
    assert lock.thread_id == "th"
    assert before + 30_000 <= lock.expires_at <= after + 30_000
    assert len(lock.token) >= 32
    assert target.raw.get(target.key("lock", "th")) == lock.token
    assert 29_000 < target.raw.pttl(target.key("lock", "th")) <= 30_000
    assert await state.acquire_lock("th", 30_000) is None
    other = await state.acquire_lock("other-thread", 30_000)
    assert other is not None
    assert other.token != lock.token


async def test_release_lock_only_with_its_token(state: Any, target: Target) -> None:
    lock = await state.acquire_lock("th", 30_000)
    await state.release_lock(Lock("th", "not-the-token", lock.expires_at))
    assert target.raw.get(target.key("lock", "th")) == lock.token
    assert await state.acquire_lock("th", 30_000) is None
    await state.release_lock(lock)
    assert target.raw.get(target.key("lock", "th")) is None
    await state.release_lock(lock)  # a second release is a no-op
    assert await state.acquire_lock("th", 30_000) is not None


async def test_release_after_expiry_never_frees_the_next_holder(state: Any) -> None:
    old = await state.acquire_lock("th", 40)
    await anyio.sleep(0.12)
    new = await state.acquire_lock("th", 30_000)
    assert new is not None
    await state.release_lock(old)
    assert await state.extend_lock(old, 30_000) is False
    assert await state.acquire_lock("th", 30_000) is None
    assert await state.extend_lock(new, 30_000) is True


async def test_extend_lock_sets_a_fresh_ttl(state: Any, target: Target) -> None:
    lock = await state.acquire_lock("th", 1_000)
    assert await state.extend_lock(lock, 60_000) is True
    assert 59_000 < target.raw.pttl(target.key("lock", "th")) <= 60_000
    # Not "add to what remains": a shorter TTL shortens the lock.
    assert await state.extend_lock(lock, 5_000) is True
    assert target.raw.pttl(target.key("lock", "th")) <= 5_000
    assert await state.extend_lock(Lock("th", "forged", 0), 60_000) is False
    assert target.raw.pttl(target.key("lock", "th")) <= 5_000


async def test_extend_never_recreates_an_expired_lock(state: Any, target: Target) -> None:
    lock = await state.acquire_lock("th", 30)
    await anyio.sleep(0.1)
    assert await state.extend_lock(lock, 60_000) is False
    assert target.raw.get(target.key("lock", "th")) is None
    assert await state.acquire_lock("th", 1_000) is not None


async def test_force_release_makes_the_old_holder_a_no_op(state: Any, target: Target) -> None:
    old = await state.acquire_lock("th", 30_000)
    await state.force_release_lock("th")
    assert target.raw.get(target.key("lock", "th")) is None
    await state.force_release_lock("th")  # nothing held: still fine
    assert await state.extend_lock(old, 30_000) is False
    assert target.raw.get(target.key("lock", "th")) is None
    new = await state.acquire_lock("th", 30_000)
    await state.release_lock(old)
    assert await state.extend_lock(old, 30_000) is False
    assert target.raw.get(target.key("lock", "th")) == new.token


async def test_lock_ttl_expires(state: Any) -> None:
    # TTLs long enough that a loaded CI machine still checks "held" within them.
    assert await state.acquire_lock("th", 300) is not None
    assert await state.acquire_lock("th", 300) is None
    await anyio.sleep(0.4)
    assert await state.acquire_lock("th", 300) is not None


async def test_two_adapters_race_for_one_lock(make_state: Any) -> None:
    first, second = make_state(), make_state()
    await first.connect()
    await second.connect()
    try:
        for round_number in range(20):
            thread_id = f"race-{round_number}"
            results: list[Any] = []

            async def grab(adapter: Any, thread_id: str, results: list[Any]) -> None:
                results.append(await adapter.acquire_lock(thread_id, 10_000))

            async with anyio.create_task_group() as group:
                for adapter in (first, second, first, second):
                    group.start_soon(grab, adapter, thread_id, results)
            winners = [lock for lock in results if lock is not None]
            assert len(winners) == 1, results
    finally:
        await first.disconnect()
        await second.disconnect()


# -- cache --------------------------------------------------------------------------------

VALUES: list[Any] = [
    {"user": "Zoë", "count": 3, "nested": {"list": [1, 2.5, True, None, "日本"]}},
    [1, "two", {"three": 3}],
    "plain text",
    "",
    42,
    -7,
    3.25,
    True,
    False,
    {"emoji": "👋 héllo", "quote": 'say "hi"\n'},
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
async def test_set_get_round_trip(state: Any, value: Any) -> None:
    await state.set("k", value)
    assert await state.get("k") == value


async def test_get_absent_set_overwrite_delete(state: Any, target: Target) -> None:
    assert await state.get("absent") is None
    await state.set("k", {"v": 1})
    await state.set("k", {"v": 2})
    assert await state.get("k") == {"v": 2}
    assert target.raw.pttl(target.key("cache", "k")) == -1
    await state.delete("k")
    await state.delete("k")
    assert await state.get("k") is None
    assert target.raw.keys(target.prefix) == []


async def test_get_returns_raw_text_that_is_not_json(state: Any, target: Target) -> None:
    target.raw.set(target.key("cache", "legacy"), "not json {")
    target.raw.set(target.key("cache", "nan"), "NaN")
    assert await state.get("legacy") == "not json {"
    assert await state.get("nan") == "NaN"


async def test_set_with_ttl_expires(state: Any, target: Target) -> None:
    await state.set("k", "v", 300)
    assert 0 < target.raw.pttl(target.key("cache", "k")) <= 300
    assert await state.get("k") == "v"
    await anyio.sleep(0.4)
    assert await state.get("k") is None


async def test_set_if_not_exists(state: Any, target: Target) -> None:
    assert await state.set_if_not_exists("dedupe:1", True, 600_000) is True
    assert await state.set_if_not_exists("dedupe:1", False, 600_000) is False
    assert await state.get("dedupe:1") is True
    assert 599_000 < target.raw.pttl(target.key("cache", "dedupe:1")) <= 600_000
    assert await state.set_if_not_exists("no-ttl", 1) is True
    assert target.raw.pttl(target.key("cache", "no-ttl")) == -1


async def test_set_if_not_exists_on_an_expired_key(state: Any) -> None:
    assert await state.set_if_not_exists("d", 1, 40) is True
    await anyio.sleep(0.12)
    assert await state.set_if_not_exists("d", 2, 10_000) is True
    assert await state.get("d") == 2


async def test_dedupe_under_concurrency(make_state: Any) -> None:
    adapters = [make_state() for _ in range(3)]
    for adapter in adapters:
        await adapter.connect()
    wins: list[bool] = []

    async def deliver(adapter: Any) -> None:
        wins.append(await adapter.set_if_not_exists("dedupe:evt", True, 600_000))

    async with anyio.create_task_group() as group:
        for index in range(12):
            group.start_soon(deliver, adapters[index % 3])
    for adapter in adapters:
        await adapter.disconnect()
    assert wins.count(True) == 1
    assert len(wins) == 12


# -- lists --------------------------------------------------------------------------------


async def test_lists(state: Any, target: Target) -> None:
    assert await state.get_list("history") == []
    for index in range(5):
        await state.append_to_list("history", {"n": index}, max_length=3, ttl_ms=60_000)
    assert await state.get_list("history") == [{"n": 2}, {"n": 3}, {"n": 4}]
    assert 59_000 < target.raw.pttl(target.key("list", "history")) <= 60_000
    # Lists and cache values are separate keys (unlike the TypeScript memory adapter).
    await state.set("history", "cached")
    assert await state.get("history") == "cached"
    assert len(await state.get_list("history")) == 3


async def test_list_unbounded_and_ttl_kept(state: Any, target: Target) -> None:
    await state.append_to_list("l", "a", ttl_ms=60_000)
    await state.append_to_list("l", "b", max_length=0)
    await state.append_to_list("l", "c", max_length=None, ttl_ms=0)
    assert await state.get_list("l") == ["a", "b", "c"]
    assert 0 < target.raw.pttl(target.key("list", "l")) <= 60_000
    await state.append_to_list("no-ttl", 1)
    assert target.raw.pttl(target.key("list", "no-ttl")) == -1


async def test_list_ttl_expires(state: Any) -> None:
    await state.append_to_list("l", 1, ttl_ms=50)
    await anyio.sleep(0.15)
    assert await state.get_list("l") == []


# -- queues -------------------------------------------------------------------------------


def entry(n: int, expires_in: int = 60_000) -> QueueEntry:
    now = now_ms()
    return QueueEntry(now, now + expires_in, {"id": f"m{n}", "text": f"hello {n}"})


async def test_queue_fifo_and_depth(state: Any) -> None:
    assert await state.queue_depth("th") == 0
    assert await state.dequeue("th") is None
    entries = [entry(n) for n in range(3)]
    for depth, item in enumerate(entries, start=1):
        assert await state.enqueue("th", item, 10) == depth
    assert await state.queue_depth("th") == 3
    for item in entries:
        assert await state.dequeue("th") == item
    assert await state.dequeue("th") is None
    assert await state.queue_depth("th") == 0


async def test_queue_drops_oldest_beyond_max_size(state: Any) -> None:
    entries = [entry(n) for n in range(5)]
    depths = [await state.enqueue("th", item, 2) for item in entries]
    assert depths == [1, 2, 2, 2, 2]
    assert [await state.dequeue("th") for _ in range(3)] == [entries[3], entries[4], None]
    assert await state.enqueue("unbounded", entries[0], 0) == 1
    assert await state.enqueue("unbounded", entries[1], 0) == 2


async def test_queue_ttl_rule(state: Any, target: Target) -> None:
    await state.enqueue("long", entry(1, expires_in=600_000), 10)
    assert 598_000 < target.raw.pttl(target.key("queue", "long")) <= 600_000
    await state.enqueue("short", entry(2, expires_in=1_000), 10)
    assert 59_000 < target.raw.pttl(target.key("queue", "short")) <= 60_000
    await state.enqueue("expired", entry(3, expires_in=-5_000), 10)
    assert 59_000 < target.raw.pttl(target.key("queue", "expired")) <= 60_000
    # An expired entry still counts; the caller filters on expires_at.
    assert await state.queue_depth("expired") == 1


class _Message:
    def __init__(self, text: str) -> None:
        self.text = text

    def to_json(self) -> dict[str, Any]:
        return {"_type": "test:Message", "text": self.text}


async def test_queue_message_with_to_json(state: Any, target: Target) -> None:
    await state.enqueue("th", QueueEntry(1, 2, _Message("hi")), 10)
    stored = target.raw.lrange(target.key("queue", "th"))
    assert stored == [
        '{"enqueuedAt":1,"expiresAt":2,"message":{"_type":"test:Message","text":"hi"}}'
    ]
    assert await state.dequeue("th") == QueueEntry(1, 2, {"_type": "test:Message", "text": "hi"})


async def test_queue_reads_snake_case_entries(state: Any, target: Target) -> None:
    target.raw.rpush(
        target.key("queue", "th"), '{"enqueued_at": 5, "expires_at": 6, "message": {"a": "é"}}'
    )
    assert await state.queue_depth("th") == 1
    assert await state.dequeue("th") == QueueEntry(5, 6, {"a": "é"})


async def test_queue_entry_that_is_not_one(state: Any, target: Target) -> None:
    target.raw.rpush(target.key("queue", "th"), '"just a string"')
    with pytest.raises(SerializationError, match="not a queue entry"):
        await state.dequeue("th")


# -- errors -------------------------------------------------------------------------------


async def test_not_connected(make_state: Any) -> None:
    adapter = make_state()
    with pytest.raises(NotConnectedError, match=r"is not connected\. Call connect\(\) first\."):
        await adapter.get("k")
    await adapter.connect()
    await adapter.set("k", 1)
    await adapter.disconnect()
    with pytest.raises(NotConnectedError):
        await adapter.subscribe("t")
    with pytest.raises(NotConnectedError):
        adapter.sync.get_client() if hasattr(adapter, "sync") else adapter.get_client()


async def test_connect_is_idempotent_and_reconnects(make_state: Any) -> None:
    adapter = make_state()
    await adapter.connect()
    await adapter.connect()
    await adapter.set("k", 1)
    await adapter.disconnect()
    await adapter.disconnect()
    await adapter.connect()
    assert await adapter.is_subscribed("nobody") is False
    await adapter.disconnect()


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("subscribe", ("",), {}, ValueError, "thread_id"),
    ("subscribe", (None,), {}, TypeError, "thread_id"),
    ("acquire_lock", ("", 1000), {}, ValueError, "thread_id"),
    ("acquire_lock", ("t", 0), {}, ValueError, "ttl_ms"),
    ("acquire_lock", ("t", -5), {}, ValueError, "ttl_ms"),
    ("acquire_lock", ("t", 1.5), {}, TypeError, "ttl_ms"),
    ("acquire_lock", ("t", "1000"), {}, TypeError, "ttl_ms"),
    ("acquire_lock", ("t", True), {}, TypeError, "ttl_ms"),
    ("release_lock", ("not a lock",), {}, TypeError, "lock"),
    ("release_lock", (Lock("t", "", 0),), {}, ValueError, "lock.token"),
    ("extend_lock", (Lock("t", "x", 0), 0), {}, ValueError, "ttl_ms"),
    ("force_release_lock", ("",), {}, ValueError, "thread_id"),
    ("get", ("",), {}, ValueError, "key"),
    ("set", ("k", 1, -1), {}, ValueError, "ttl_ms"),  # 0 is "no expiry", as None
    ("set", ("k", float("nan")), {}, SerializationError, "JSON"),
    ("set", ("k", {"x": math.inf}), {}, SerializationError, "JSON"),
    ("set", ("k", object()), {}, SerializationError, "JSON"),
    ("set", ("k", {1, 2}), {}, SerializationError, "JSON"),
    ("set_if_not_exists", ("k", 1, -1), {}, ValueError, "ttl_ms"),
    ("set_if_not_exists", ("k", -math.inf), {}, SerializationError, "JSON"),
    ("append_to_list", ("l", 1), {"max_length": -1}, ValueError, "max_length"),
    ("append_to_list", ("l", 1), {"ttl_ms": -1}, ValueError, "ttl_ms"),
    ("append_to_list", ("l", float("nan")), {}, SerializationError, "JSON"),
    ("enqueue", ("q", QueueEntry(1, 2, "m"), -1), {}, ValueError, "max_size"),
    ("enqueue", ("q", QueueEntry(1, 2, math.nan), 5), {}, SerializationError, "JSON"),
    ("enqueue", ("q", {"message": 1}, 5), {}, TypeError, "entry"),
    ("enqueue", ("q", QueueEntry(1, "2", "m"), 5), {}, TypeError, "entry.expires_at"),  # type: ignore[arg-type]
    ("enqueue", ("", QueueEntry(1, 2, "m"), 5), {}, ValueError, "thread_id"),
    # Numbers beyond their documented range: refused before anything is written.
    ("acquire_lock", ("t", MAX_TTL_MS + 1), {}, ValueError, "ttl_ms must be .* from 1 to"),
    ("acquire_lock", ("t", 10**20), {}, ValueError, "ttl_ms"),
    ("extend_lock", (Lock("t", "x", 0), 10**20), {}, ValueError, "ttl_ms"),
    ("set", ("k", 1, 10**20), {}, ValueError, "ttl_ms"),
    ("set_if_not_exists", ("k", 1, MAX_TTL_MS + 1), {}, ValueError, "ttl_ms"),
    ("append_to_list", ("l", 1), {"ttl_ms": sys.maxsize}, ValueError, "ttl_ms"),
    ("append_to_list", ("l", 1), {"max_length": 2**63}, ValueError, "max_length"),
    ("enqueue", ("q", QueueEntry(1, 2, "m"), 2**63), {}, ValueError, "max_size"),
    ("enqueue", ("q", QueueEntry(1, 10**20, "m"), 5), {}, ValueError, "entry.expires_at"),
    ("enqueue", ("q", QueueEntry(-1, 2, "m"), 5), {}, ValueError, "entry.enqueued_at"),
    ("enqueue", ("q", QueueEntry(1, -2, "m"), 5), {}, ValueError, "entry.expires_at"),
    # Text that UTF-8 cannot encode (a server would store "?"), in names: refused.
    ("set", ("a\ud800", 1), {}, ValueError, "key contains a lone surrogate"),
    ("subscribe", ("t\udfff",), {}, ValueError, "thread_id contains a lone surrogate"),
    ("acquire_lock", ("\ud800", 1000), {}, ValueError, "thread_id"),
    ("release_lock", (Lock("t", "tok\ud800", 0),), {}, ValueError, "lock.token"),
    ("append_to_list", ("l\ud800", 1), {}, ValueError, "key"),
    ("enqueue", ("q\ud800", QueueEntry(1, 2, "m"), 5), {}, ValueError, "thread_id"),
    # Dict keys that JSON would turn into strings (and that could collide): refused.
    ("set", ("k", {1: "a", "1": "b"}), {}, SerializationError, "dict key is 1"),
    ("set", ("k", {"deep": [{None: 1}]}), {}, SerializationError, "dict key is None"),
    ("append_to_list", ("l", {2.5: "x"}), {}, SerializationError, "dict key"),
    ("enqueue", ("q", QueueEntry(1, 2, {True: 1}), 5), {}, SerializationError, "dict key"),
]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "error", "names"),
    BAD_CALLS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)],
)
async def test_bad_input_raises_and_writes_nothing(
    state: Any,
    target: Target,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    names: str,
) -> None:
    with pytest.raises(error, match=names):
        await getattr(state, method)(*args, **kwargs)
    assert target.raw.keys(target.prefix) == []


async def test_a_key_prefix_that_utf8_cannot_encode_is_refused(make_state: Any) -> None:
    with pytest.raises(ConfigurationError, match="key_prefix contains a lone surrogate"):
        make_state(key_prefix="p\ud800")


async def test_numbers_at_the_edges_of_their_ranges(state: Any, target: Target) -> None:
    """The largest and smallest numbers each argument takes work alike on every backend."""
    lock = await state.acquire_lock("t", MAX_TTL_MS)
    assert lock is not None
    assert MAX_TTL_MS - 60_000 < target.raw.pttl(target.key("lock", "t")) <= MAX_TTL_MS
    assert await state.extend_lock(lock, MAX_TTL_MS) is True
    assert await state.extend_lock(lock, 1) is True  # the shortest: gone a moment later
    await anyio.sleep(0.05)
    assert await state.acquire_lock("t", 1) is not None
    await state.set("k", {"big": 2**70, "tiny": 5e-324}, MAX_TTL_MS)
    assert await state.get("k") == {"big": 2**70, "tiny": 5e-324}
    assert MAX_TTL_MS - 60_000 < target.raw.pttl(target.key("cache", "k")) <= MAX_TTL_MS
    assert await state.set_if_not_exists("n", "", MAX_TTL_MS) is True
    assert await state.get("n") == ""
    await state.append_to_list("l", 1, max_length=MAX_SIZE, ttl_ms=MAX_TTL_MS)
    await state.append_to_list("l", 2, max_length=MAX_SIZE, ttl_ms=0)
    assert await state.get_list("l") == [1, 2]
    assert MAX_TTL_MS - 60_000 < target.raw.pttl(target.key("list", "l")) <= MAX_TTL_MS
    await state.append_to_list("l", 3, max_length=1)
    assert await state.get_list("l") == [3]
    # An entry that never expires (sys.maxsize): the queue lives for MAX_TTL_MS.
    never = QueueEntry(now_ms(), sys.maxsize, {"text": "keep me"})
    assert await state.enqueue("q", never, MAX_SIZE) == 1
    assert MAX_TTL_MS - 60_000 < target.raw.pttl(target.key("queue", "q")) <= MAX_TTL_MS
    assert await state.dequeue("q") == never
    epoch = QueueEntry(0, 0, "the oldest times")
    assert await state.enqueue("q0", epoch, 1) == 1
    assert 59_000 < target.raw.pttl(target.key("queue", "q0")) <= 60_000
    assert await state.dequeue("q0") == epoch


async def test_server_errors_are_backend_errors(state: Any, target: Target) -> None:
    target.raw.set(target.key("queue", "th"), "a string, not a list")
    with pytest.raises(BackendError, match=r"(?i)wrong ?type"):
        await state.enqueue("th", entry(1), 10)
    with pytest.raises(BackendError, match=r"(?i)wrong ?type"):
        await state.queue_depth("th")
    assert target.raw.get(target.key("queue", "th")) == "a string, not a list"


def test_threads_race_for_one_lock_through_one_state(target: Target) -> None:
    state = State.from_url(target.url, key_prefix=target.prefix)
    state.connect()
    barrier = threading.Barrier(8)
    results: list[Lock | None] = []

    def grab(thread_id: str) -> None:
        barrier.wait()
        results.append(state.acquire_lock(thread_id, 10_000))

    try:
        for round_number in range(10):
            workers = [threading.Thread(target=grab, args=(f"r{round_number}",)) for _ in range(8)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=30)
            assert sum(lock is not None for lock in results) == 1
            results.clear()
    finally:
        state.disconnect()


async def all_keys(adapter: Any) -> list[str]:
    """Every key of the adapter's state, through its SCAN helper."""
    if isinstance(adapter, AsAsync):
        return sorted(adapter.sync.iter_keys())
    return sorted([key async for key in adapter.iter_keys()])


async def test_nothing_is_left_behind(state: Any, target: Target) -> None:
    await state.subscribe("t")
    lock = await state.acquire_lock("t", 30_000)
    await state.set("k", 1)
    await state.set_if_not_exists("dedupe:1", True, 600_000)
    await state.append_to_list("l", 1)
    await state.enqueue("t", entry(1), 10)
    assert await all_keys(state) == sorted(
        target.key(*parts)
        for parts in [
            ("subscriptions",),
            ("lock", "t"),
            ("cache", "k"),
            ("cache", "dedupe:1"),
            ("list", "l"),
            ("queue", "t"),
        ]
    )
    await state.unsubscribe("t")
    await state.release_lock(lock)
    await state.delete("k")
    await state.delete("dedupe:1")
    assert await state.dequeue("t") is not None
    assert await all_keys(state) == [target.key("list", "l")]
    target.raw.delete(target.key("list", "l"))  # the contract has no list delete
    assert await all_keys(state) == []
    assert target.raw.keys(target.prefix) == []


async def test_key_scan_takes_the_prefix_literally(make_state: Any, target: Target) -> None:
    glob_prefix = target.prefix + "*[x]?"
    literal = make_state(key_prefix=glob_prefix)
    decoy = make_state(key_prefix=target.prefix + "zzzxy")  # what the unescaped glob matches
    await literal.connect()
    await decoy.connect()
    try:
        await literal.set("mine", 1)
        await decoy.set("not-mine", 2)
        assert await all_keys(literal) == [f"{glob_prefix}:cache:mine"]
        assert await all_keys(decoy) == [f"{target.prefix}zzzxy:cache:not-mine"]
    finally:
        await decoy.delete("not-mine")
        await literal.delete("mine")
        await literal.disconnect()
        await decoy.disconnect()
