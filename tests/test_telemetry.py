"""chat_state.telemetry: spans and metrics, read back with the OpenTelemetry SDK's
in-memory exporter and reader, on every target and both facades."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import anyio
import pytest
import redis.asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chat_state import (
    AsyncState,
    LockLostError,
    NotConnectedError,
    QueueEntry,
    SerializationError,
    State,
    telemetry,
)
from chat_state.testing import RedisServer

from .conftest import Target
from .otel import Recorded

pytestmark = pytest.mark.anyio


SECRET_VALUE = "v4lue-that-must-not-leak"
SECRET_THREAD = "thread-that-must-not-leak"
SECRET_KEY = "key-that-must-not-leak"


async def run_every_operation(state: Any) -> str:
    """Every operation once (with values and ids that must not leak); → the lock token."""
    await state.subscribe(SECRET_THREAD)
    await state.is_subscribed(SECRET_THREAD)
    await state.unsubscribe(SECRET_THREAD)
    lock = await state.acquire_lock(SECRET_THREAD, 30_000)
    assert lock is not None
    assert await state.acquire_lock(SECRET_THREAD, 30_000) is None
    assert await state.extend_lock(lock, 30_000)
    entry = QueueEntry(message={"text": SECRET_VALUE}, enqueued_at=1, expires_at=2**41)
    assert await state.enqueue(SECRET_THREAD, entry, 10) == 1
    await state.queue_depth(SECRET_THREAD)
    await state.dequeue(SECRET_THREAD)
    await state.release_lock(lock)
    await state.force_release_lock(SECRET_THREAD)
    await state.set(SECRET_KEY, {"v": SECRET_VALUE}, 60_000)
    await state.set_if_not_exists(SECRET_KEY, SECRET_VALUE)
    await state.get(SECRET_KEY)
    await state.delete(SECRET_KEY)
    await state.append_to_list(SECRET_KEY, SECRET_VALUE, max_length=5, ttl_ms=60_000)
    await state.get_list(SECRET_KEY)
    await state.delete(SECRET_KEY)
    await state.ping()
    await state.health()
    return str(lock.token)


SIMPLE = {
    "subscribe": "SADD",
    "unsubscribe": "SREM",
    "is_subscribed": "SISMEMBER",
    "acquire_lock": "SET",
    "extend_lock": "EVALSHA",
    "enqueue": "EVALSHA",
    "queue_depth": "LLEN",
    "dequeue": "LPOP",
    "release_lock": "EVALSHA",
    "force_release_lock": "DEL",
    "set": "SET",
    "set_if_not_exists": "SET",
    "get": "GET",
    "delete": "DEL",
    "append_to_list": "EVALSHA",
    "get_list": "LRANGE",
    "ping": "PING",
    "health": "PING",
}


def expected_system(target: Target) -> str:
    if target.topology == "memory":
        return "memory"
    if target.driver == "coredis" and target.topology == "cluster":
        return "redis"  # coredis's cluster client answers HELLO with no server name
    return "valkey" if target.spec.server == "valkey-server" else "redis"


async def test_every_operation_is_one_client_span_with_the_conventions(
    recorded: Recorded, make_state: Callable[..., Any], target: Target
) -> None:
    state = make_state()
    await state.connect()
    try:
        token = await run_every_operation(state)
    finally:
        await state.disconnect()
    spans = recorded.finished()
    names = [span.name for span in spans]
    assert names.count("chat_state.connect") == 1
    twice = ("acquire_lock", "delete")
    for operation in SIMPLE:
        want = 2 if operation in twice else 1
        assert names.count(f"chat_state.{operation}") == want, operation
    system = expected_system(target)
    for span in spans:
        attributes = dict(span.attributes or {})
        operation = span.name.removeprefix("chat_state.")
        assert span.kind is SpanKind.CLIENT
        assert span.status.status_code is StatusCode.UNSET
        assert attributes["chat_state.operation"] == operation
        assert attributes["chat_state.key_prefix"] == target.prefix
        assert attributes["db.system.name"] == system, span.name
        if operation in SIMPLE:
            assert attributes["db.operation.name"] == SIMPLE[operation], span.name
        if system != "memory":
            assert attributes["db.namespace"] == "0"
        own = target.driver is None and "own_connections=false" not in target.url
        told = target.driver != "coredis" and (
            target.topology in ("standalone", "cluster") or (target.topology == "sentinel" and own)
        )  # (a pooled Sentinel client does not say which primary it used)
        if told and operation in SIMPLE and operation not in ("ping", "health"):
            assert isinstance(attributes["server.address"], str), span.name
            assert isinstance(attributes["server.port"], int), span.name
    leaks = (SECRET_VALUE, SECRET_THREAD, SECRET_KEY, token)
    for span in spans:
        text = json.dumps(dict(span.attributes or {})) + json.dumps(
            [dict(event.attributes or {}) for event in span.events]
        )
        assert not any(leak in text for leak in leaks), span.name


async def test_metrics_count_durations_lock_outcomes_and_queue_depth(
    recorded: Recorded, make_state: Callable[..., Any], target: Target
) -> None:
    state = make_state()
    await state.connect()
    try:
        await run_every_operation(state)
    finally:
        await state.disconnect()
    durations = recorded.points("db.client.operation.duration")
    counted = {(a["chat_state.operation"], a["chat_state.outcome"]): n for a, n in durations}
    assert counted[("get", "ok")] == 1
    assert counted[("acquire_lock", "ok")] == 2
    assert counted[("delete", "ok")] == 2
    outcomes = {
        a["chat_state.lock.outcome"]: n for a, n in recorded.points("chat_state.lock.outcomes")
    }
    assert outcomes == {"acquired": 1, "contended": 1, "renewed": 1}
    assert recorded.histogram("chat_state.queue.depth") == (1, 1)
    state = make_state()
    await state.connect()
    try:
        entry = QueueEntry(message={}, enqueued_at=1, expires_at=2**41)
        assert [await state.enqueue("deep", entry, 10) for _ in range(3)] == [1, 2, 3]
    finally:
        await state.disconnect()
    assert recorded.histogram("chat_state.queue.depth") == (4, 1 + 1 + 2 + 3)  # the depths


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_a_failed_operation_has_error_status_and_type(
    recorded: Recorded, make_state: Callable[..., Any]
) -> None:
    state = make_state()
    await state.connect()
    try:
        with pytest.raises(SerializationError):  # refused before anything is sent
            await state.set(SECRET_KEY, object())
    finally:
        await state.disconnect()
    with pytest.raises(NotConnectedError):
        await state.get_list(SECRET_KEY)
    failed = [s for s in recorded.finished() if s.status.status_code is StatusCode.ERROR]
    assert [s.name for s in failed] == ["chat_state.set", "chat_state.get_list"]
    assert failed[0].attributes is not None
    assert failed[0].attributes["error.type"] == "chat_state.errors.SerializationError"
    assert failed[1].attributes is not None
    assert failed[1].attributes["error.type"] == "chat_state.errors.NotConnectedError"
    assert all(SECRET_KEY not in (s.status.description or "") for s in failed)
    errors = [
        a
        for a, _ in recorded.points("db.client.operation.duration")
        if a["chat_state.outcome"] == "error"
    ]
    assert {a["chat_state.operation"] for a in errors} == {"get_list", "set"}


def assert_parent(recorded: Recorded, outer: str, inner: list[str]) -> None:
    """The span of the operation ``outer`` is the parent of its ``inner`` operations'."""
    spans = {span.name.removeprefix("chat_state."): span for span in recorded.finished()}
    parents = {name: spans[name].parent for name in inner}
    assert {name: p and p.span_id for name, p in parents.items()} == dict.fromkeys(
        inner, spans[outer].context.span_id
    )


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_composite_operations_are_parents_of_theirs(
    recorded: Recorded, make_state: Callable[..., Any]
) -> None:
    state = make_state()
    await state.connect()
    try:
        lock = await state.acquire_lock("composite", 30_000)
        assert lock is not None
        assert await state.release_and_recheck(lock, 30_000) is None
    finally:
        await state.disconnect()
    assert_parent(recorded, "release_and_recheck", ["release_lock", "queue_depth"])
    recorded.spans.clear()
    await state.connect()
    try:
        entry = QueueEntry(message={}, enqueued_at=1, expires_at=2**41)
        assert await state.enqueue_and_recheck("composite", entry, 10, 30_000) is not None
    finally:
        await state.force_release_lock("composite")
        await state.disconnect()
    assert_parent(recorded, "enqueue_and_recheck", ["enqueue", "acquire_lock"])


@pytest.mark.targets(["redis-server/standalone/redis-py"])
async def test_a_waiting_acquire_is_one_span(
    recorded: Recorded, make_state: Callable[..., Any]
) -> None:
    holder, waiter = make_state(), make_state()
    await holder.connect()
    await waiter.connect()
    try:
        assert await holder.acquire_lock("waited", 200) is not None
        assert await waiter.acquire_lock("waited", 30_000, wait_ms=2_000) is not None
    finally:
        await holder.force_release_lock("waited")
        await holder.disconnect()
        await waiter.disconnect()
    names = [s.name for s in recorded.finished()]
    assert names.count("chat_state.acquire_lock") == 2  # the holder's and the waiter's
    outcomes = {
        a["chat_state.lock.outcome"]: n for a, n in recorded.points("chat_state.lock.outcomes")
    }
    assert outcomes == {"acquired": 2}


@pytest.mark.targets(["redis-server/standalone/redis-py", "valkey-server/standalone/valkey-py"])
async def test_a_client_passed_in_is_traced(recorded: Recorded, target: Target) -> None:
    client = redis.asyncio.Redis.from_url("redis://" + target.url.partition("://")[2])
    state = AsyncState(client=client, key_prefix=target.prefix)
    try:
        await state.connect()
        await state.set("k", 1)
        await state.delete("k")
        await state.disconnect()
    finally:
        await client.aclose()
    spans = [s for s in recorded.finished() if s.name == "chat_state.set"]
    assert len(spans) == 1
    attributes = dict(spans[0].attributes or {})
    assert attributes["db.system.name"] == expected_system(target)
    assert attributes["db.operation.name"] == "SET"
    assert isinstance(attributes["server.port"], int)


def test_uninstrument_stops_every_span_and_metric() -> None:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    originals = {name: State.__dict__[name] for name in ("get", "_call", "connect")}
    telemetry.instrument(provider, MeterProvider(metric_readers=[reader]))
    assert telemetry.is_instrumented()
    telemetry.uninstrument()
    assert not telemetry.is_instrumented()
    assert {name: State.__dict__[name] for name in originals} == originals
    with State.from_url("memory://") as state:
        state.set("k", 1)
        assert state.get("k") == 1
    assert spans.get_finished_spans() == ()
    data = reader.get_metrics_data()
    points = [
        point
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    assert points == []


def test_instrumenting_again_replaces_the_providers() -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    providers = []
    for exporter in (first, second):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    try:
        telemetry.instrument(providers[0])
        telemetry.instrument(providers[1])
        with State.from_url("memory://") as state:
            state.get("k")
    finally:
        telemetry.uninstrument()
    assert [s.name for s in first.get_finished_spans()] == []
    assert [s.name for s in second.get_finished_spans()] == ["chat_state.connect", "chat_state.get"]
    assert State.__dict__["get"].__qualname__ == "State.get"


def test_instrument_and_uninstrument_from_many_threads() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    originals = {name: State.__dict__[name] for name in ("get", "_call", "connect")}
    start = threading.Barrier(8)

    def switch(n: int) -> None:
        start.wait(timeout=10)
        for _ in range(50):
            if n % 2:
                telemetry.instrument(provider)
            else:
                telemetry.uninstrument()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython can
    try:
        threads = [threading.Thread(target=switch, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    try:
        telemetry.instrument(provider)
        with State.from_url("memory://") as state:
            state.get("k")
    finally:
        telemetry.uninstrument()
    # each method wrapped once: one span per operation, and the originals back after
    assert [s.name for s in exporter.get_finished_spans()] == [
        "chat_state.connect",
        "chat_state.get",
    ]
    assert {name: State.__dict__[name] for name in originals} == originals


def test_no_password_reaches_any_attribute(recorded: Recorded) -> None:
    with RedisServer(["--requirepass", "s3cret-pw"]) as server:
        url = server.url.replace("redis://", "redis://:s3cret-pw@")
        for driver in ("redis", "valkey"):
            for own in ("", "?own_connections=false"):
                with State.from_url(url + own, driver=driver) as state:
                    state.set("k", "v")
                    state.health()
    spans = recorded.finished()
    assert len(spans) == 12
    for span in spans:
        assert "s3cret-pw" not in json.dumps(dict(span.attributes or {}))
        assert "s3cret-pw" not in (span.status.description or "")


@pytest.mark.parametrize("own", [True, False], ids=["own-connections", "redis-py-pool"])
def test_redis_py_instrumentation_sees_the_commands_only_over_its_pool(
    recorded: Recorded, redis_url: str, own: bool
) -> None:
    """OpenTelemetry's redis-py instrumentation wraps redis-py's ``execute_command``:
    chat-state's own connections bypass it, its pool does not (each redis-py span then
    under the chat-state span of its operation)."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=recorded.tracer_provider)
    try:
        url = redis_url if own else f"{redis_url}?own_connections=false"
        with State.from_url(url, key_prefix="otel-redis-py") as state:
            state.set("k", {"v": 1})
            assert state.get("k") == {"v": 1}
            state.delete("k")
    finally:
        instrumentor.uninstrument()
    spans = recorded.finished()
    ours = {s.context.span_id: s.name for s in spans if s.name.startswith("chat_state.")}
    theirs = [s for s in spans if not s.name.startswith("chat_state.")]
    assert sorted(ours.values()) == sorted(
        f"chat_state.{name}" for name in ("connect", "set", "get", "delete")
    )
    if own:
        assert theirs == []
        return
    # connect() sends PING, and HELLO to learn the server's name (instrumented only)
    assert [s.name for s in theirs] == ["PING", "HELLO", "SET", "GET", "DEL"]
    parents = [ours[s.parent.span_id] for s in theirs if s.parent is not None]
    operations = ("connect", "connect", "set", "get", "delete")
    assert parents == [f"chat_state.{name}" for name in operations]


def lock_outcomes(recorded: Recorded) -> dict[str, int]:
    points = recorded.points("chat_state.lock.outcomes")
    return {a["chat_state.lock.outcome"]: n for a, n in points}


@pytest.fixture(params=["memory", "redis"])
def lock_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


def test_state_counts_the_locks_it_lost(recorded: Recorded, lock_url: str) -> None:
    with State.from_url(lock_url, key_prefix="otel-lost") as state:
        lock = state.acquire_lock("t", 30_000)
        assert lock is not None
        state.force_release_lock("t")
        assert not state.extend_lock(lock, 30_000)  # found gone: lost
        with pytest.raises(LockLostError), state.lock("t", 30_000):
            state.force_release_lock("t")  # gone when the block ends: lost
    assert lock_outcomes(recorded) == {"acquired": 2, "lost": 2}


async def test_async_state_counts_the_locks_it_lost(recorded: Recorded, lock_url: str) -> None:
    async with AsyncState.from_url(lock_url, key_prefix="otel-lost") as state:
        with pytest.raises(LockLostError):
            async with state.lock("t", 30_000):
                await state.force_release_lock("t")
        # A lock expired unrenewed while its block runs: lost once, told to the block.
        with pytest.raises(LockLostError):
            async with state.lock("t", timedelta(milliseconds=300), renew=False):
                await anyio.sleep(0.5)
    assert lock_outcomes(recorded) == {"acquired": 2, "lost": 2}


async def test_a_cancelled_operation_is_counted_as_cancelled(recorded: Recorded) -> None:
    async with AsyncState.from_url("memory://") as state:
        assert await state.acquire_lock("t", 30_000) is not None
        with anyio.move_on_after(0.2) as scope:
            await state.acquire_lock("t", 30_000, wait_ms=5_000)  # held: it waits
        assert scope.cancelled_caught
    durations = recorded.points("db.client.operation.duration")
    outcomes = [(a["chat_state.operation"], a["chat_state.outcome"]) for a, _ in durations]
    assert ("acquire_lock", "cancelled") in outcomes
    (waited,) = [s for s in recorded.finished() if s.name == "chat_state.acquire_lock"][1:]
    assert waited.status.status_code is StatusCode.UNSET  # not the server's failure


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_inspection_operations_are_spans_that_leak_nothing(
    recorded: Recorded, make_state: Callable[..., Any]
) -> None:
    state = make_state()
    await state.connect()
    try:
        lock = await state.acquire_lock(SECRET_THREAD, 30_000)
        assert lock is not None
        assert await state.inspect_lock(SECRET_THREAD) is not None
        assert await state.subscription_count() == 0
        assert await state.peek_queue(SECRET_THREAD) == []
        assert (await state.stats()).locks == 1
        assert await state.clear() == 1
    finally:
        await state.disconnect()
    spans = {s.name: s for s in recorded.finished()}
    first = {"inspect_lock": "EVALSHA", "subscription_count": "SCARD", "peek_queue": "LRANGE"}
    for name, command in first.items():
        assert dict(spans[f"chat_state.{name}"].attributes or {})["db.operation.name"] == command
    assert {"chat_state.stats", "chat_state.clear"} <= spans.keys()
    for span in spans.values():
        text = json.dumps(dict(span.attributes or {}))
        assert SECRET_THREAD not in text
        assert lock.token not in text
