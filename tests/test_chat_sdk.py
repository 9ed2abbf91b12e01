"""chat-state as the Python ``chat_sdk`` package's state, on a real Redis.

``chat_sdk.Chat`` with its mock platform adapter and ``AsyncState`` as ``state=``:
de-duplication across two bot instances, the concurrency strategies chat_sdk
implements (drop, queue, debounce; it has no "burst"), message history, and
queue entries shared with chat_sdk's own Redis adapter. Then what a chat_sdk user
relies on, on memory and a real server: chat_sdk's ``StateNotConnectedError``, a
cache TTL of 0 meaning "no expiry", and ``get_client()`` of a given client before
``connect()``.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio
from chat_sdk import Chat, ConcurrencyConfig
from chat_sdk.errors import ChatError, LockError, StateNotConnectedError
from chat_sdk.state.redis import RedisStateAdapter
from chat_sdk.testing import MockAdapter, create_test_message
from chat_sdk.types import Message
from chat_sdk.types import QueueEntry as SdkQueueEntry

from chat_state import (
    AsyncState,
    ChatStateError,
    Lock,
    MemoryStore,
    NotConnectedError,
    QueueEntry,
    State,
    WrongLoopError,
)
from chat_state.core.operations import now_ms

from .conftest import Target

pytestmark = pytest.mark.anyio
THREAD = "slack:C123:1234.5678"


@pytest.fixture
def prefix() -> str:
    return f"sdk{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_chat(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Chat instances sharing one Redis through chat-state (as two bot processes would)."""
    made: list[Chat] = []

    def make(**config: Any) -> tuple[Chat, MockAdapter, list[Message]]:
        adapter = MockAdapter("slack")
        state = AsyncState.from_url(redis_url, key_prefix=prefix)
        chat = Chat(user_name="bot", adapters={"slack": adapter}, state=state, **config)
        handled: list[Message] = []

        @chat.on_message(r".*")
        async def record(thread: Any, message: Message, context: Any = None) -> None:
            handled.append(message)

        made.append(chat)
        return chat, adapter, handled

    yield make
    for chat in made:
        await chat.shutdown()


async def test_a_webhook_delivered_twice_to_two_bots_is_handled_once(make_chat: Any) -> None:
    (one, adapter_one, handled_one), (two, adapter_two, handled_two) = make_chat(), make_chat()
    await one.initialize()
    await two.initialize()
    message = create_test_message("evt-1", "hello")
    await asyncio.gather(
        one.handle_incoming_message(adapter_one, THREAD, message),
        two.handle_incoming_message(adapter_two, THREAD, create_test_message("evt-1", "hello")),
        one.handle_incoming_message(adapter_one, THREAD, create_test_message("evt-1", "hello")),
    )
    assert [m.id for m in handled_one + handled_two] == ["evt-1"]


async def test_drop_strategy_drops_while_the_thread_is_locked(
    make_chat: Any, redis_url: str, prefix: str
) -> None:
    chat, adapter, handled = make_chat(concurrency="drop")
    await chat.initialize()
    async with AsyncState.from_url(redis_url, key_prefix=prefix) as other_worker:
        lock = await other_worker.acquire_lock(THREAD, 30_000)
        assert lock is not None
        with pytest.raises(LockError):
            await chat.handle_incoming_message(adapter, THREAD, create_test_message("m1", "a"))
        await other_worker.release_lock(lock)
    await chat.handle_incoming_message(adapter, THREAD, create_test_message("m2", "b"))
    assert [m.id for m in handled] == ["m2"]


async def test_queue_strategy_hands_queued_messages_to_the_lock_holder(
    make_chat: Any, redis_url: str, prefix: str
) -> None:
    config = ConcurrencyConfig(strategy="queue", max_queue_size=10)
    (first, adapter, handled), (second, adapter_two, handled_two) = (
        make_chat(concurrency=config),
        make_chat(concurrency=config),
    )
    await first.initialize()
    await second.initialize()
    release = asyncio.Event()
    started = asyncio.Event()
    contexts: list[Any] = []

    @first.on_message(r"^slow")
    async def slow(thread: Any, message: Message, context: Any = None) -> None:
        started.set()
        await release.wait()

    @first.on_message(r"^later")
    async def later(thread: Any, message: Message, context: Any = None) -> None:
        contexts.append(context)

    holder = asyncio.create_task(
        first.handle_incoming_message(adapter, THREAD, create_test_message("m1", "slow"))
    )
    await started.wait()
    # Meanwhile another bot instance receives two messages for the thread: queued.
    for n in (2, 3):
        await second.handle_incoming_message(
            adapter_two, THREAD, create_test_message(f"m{n}", f"later {n}")
        )
    async with AsyncState.from_url(redis_url, key_prefix=prefix) as view:
        assert await view.queue_depth(THREAD) == 2
    release.set()
    await holder
    assert [m.id for m in handled] == ["m1", "m3"]  # the latest, with the skipped one in context
    assert handled_two == []
    assert [m.id for m in contexts[0].skipped] == ["m2"]
    assert isinstance(handled[1], Message)
    assert handled[1].author.full_name == "Test User"


async def test_debounce_strategy_handles_only_the_last_message(
    make_chat: Any, redis_url: str, prefix: str
) -> None:
    config = ConcurrencyConfig(strategy="debounce", debounce_ms=500)
    (first, adapter, handled), (second, adapter_two, _) = (
        make_chat(concurrency=config),
        make_chat(concurrency=config),
    )
    await first.initialize()
    await second.initialize()
    holder = asyncio.create_task(
        first.handle_incoming_message(adapter, THREAD, create_test_message("d1", "typing…"))
    )
    async with AsyncState.from_url(redis_url, key_prefix=prefix) as view:
        for _ in range(200):  # bounded: until the holder has queued its own message
            if await view.queue_depth(THREAD) == 1:
                break
            await asyncio.sleep(0.01)
    for n in (2, 3):  # a burst while the first is debouncing: each replaces the last
        await second.handle_incoming_message(adapter_two, THREAD, create_test_message(f"d{n}", "…"))
    await holder
    assert [m.id for m in handled] == ["d3"]


async def test_message_history_round_trips(make_chat: Any, redis_url: str, prefix: str) -> None:
    chat, adapter, _ = make_chat(message_history={"max_messages": 2})
    adapter.persist_message_history = True
    await chat.initialize()
    for n in range(3):
        await chat.handle_incoming_message(
            adapter, THREAD, create_test_message(f"h{n}", f"héllo {n}")
        )
    # (chat_sdk 0.4.41 renamed its cache thread history; the keys stayed ``msg-history:``)
    cache = getattr(chat, "_thread_history", None) or chat._message_history
    history = await cache.get_messages(THREAD)
    assert [m.id for m in history] == ["h1", "h2"]
    assert history[-1].text == "héllo 2"
    async with AsyncState.from_url(redis_url, key_prefix=prefix) as view:
        stored = await view.get_list(f"msg-history:{THREAD}")
    assert [item["id"] for item in stored] == ["h1", "h2"]


async def test_queue_entries_shared_with_chat_sdks_own_redis_adapter(
    redis_url: str, prefix: str
) -> None:
    theirs = RedisStateAdapter(url=redis_url, key_prefix=prefix)
    await theirs.connect()
    try:
        async with AsyncState.from_url(redis_url, key_prefix=prefix) as ours:
            now = now_ms()
            message = create_test_message("q1", "from chat_sdk")
            await theirs.enqueue(THREAD, SdkQueueEntry(now, now + 60_000, message), 10)
            entry = await ours.dequeue(THREAD)  # snake_case, read by chat-state
            assert entry is not None
            assert (entry.enqueued_at, entry.expires_at) == (now, now + 60_000)
            assert isinstance(entry.message, Message)
            assert entry.message.text == "from chat_sdk"
            lock = await theirs.acquire_lock(THREAD, 10_000)
            assert lock is not None
            assert await ours.acquire_lock(THREAD, 10_000) is None  # one lock, two adapters
            await ours.release_lock(lock)  # chat_sdk's Lock works with chat-state
            assert await ours.acquire_lock(THREAD, 10_000) is not None
    finally:
        await theirs.disconnect()


async def test_queue_entries_for_chat_sdks_adapter_during_a_migration(
    redis_url: str, prefix: str
) -> None:
    """chat_sdk's adapter reads only snake_case entries: queue_format="chat_sdk" writes them."""
    theirs = RedisStateAdapter(url=redis_url, key_prefix=prefix)
    await theirs.connect()
    try:
        migrating = AsyncState.from_url(redis_url, key_prefix=prefix, queue_format="chat_sdk")
        async with migrating as ours:
            now = now_ms()
            message = create_test_message("q2", "from chat-state")
            assert await ours.enqueue(THREAD, QueueEntry(now, now + 60_000, message), 10) == 1
            entry = await theirs.dequeue(THREAD)
            assert entry is not None
            assert (entry.enqueued_at, entry.expires_at) == (now, now + 60_000)
            assert isinstance(entry.message, Message)
            assert entry.message.text == "from chat-state"
    finally:
        await theirs.disconnect()


# -- after chat.shutdown(): chat_sdk's StateNotConnectedError -----------------------------


async def test_after_chat_shutdown_an_operation_raises_state_not_connected_error(
    redis_url: str, prefix: str
) -> None:
    adapter = MockAdapter("slack")
    state = AsyncState.from_url(redis_url, key_prefix=prefix)
    chat = Chat(user_name="bot", adapters={"slack": adapter}, state=state)
    await chat.initialize()
    assert await state.set_if_not_exists("dedupe:slack:x", True, 60_000) is True
    await chat.shutdown()  # disconnects the state
    caught: Exception | None = None
    try:
        await state.set_if_not_exists("dedupe:slack:y", True, 60_000)
    except StateNotConnectedError as exc:  # what chat_sdk tells its users to catch
        caught = exc
    assert isinstance(caught, NotConnectedError)
    assert isinstance(caught, ChatStateError)
    assert isinstance(caught, ChatError)
    assert str(caught) == "AsyncState is not connected. Call connect() first."
    assert caught.adapter_name == "AsyncState"  # type: ignore[attr-defined]
    # The same as chat_sdk's own adapter says after its disconnect().
    theirs = RedisStateAdapter(url=redis_url, key_prefix=prefix)
    with pytest.raises(StateNotConnectedError) as their_error:
        await theirs.get("k")
    assert str(their_error.value).replace("RedisStateAdapter", "AsyncState") == str(caught)


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_not_connected_is_chat_sdks_error_too_on_both_facades(make_state: Any) -> None:
    state = make_state()
    name = type(getattr(state, "sync", state)).__name__
    with pytest.raises(StateNotConnectedError) as before:
        await state.get("k")
    await state.connect()
    await state.set("k", 1)
    await state.disconnect()
    with pytest.raises(StateNotConnectedError) as after:
        await state.subscribe("t")
    for caught in (before.value, after.value):
        assert isinstance(caught, NotConnectedError)
        assert isinstance(caught, ChatStateError)
        assert not isinstance(caught, WrongLoopError)
        assert str(caught) == f"{name} is not connected. Call connect() first."
        assert caught.adapter_name == name
        # Named as before (tracebacks, telemetry's error.type); one class, made once.
        assert type(caught).__module__ == "chat_state.errors"
        assert type(caught).__qualname__ == "NotConnectedError"
    assert type(before.value) is type(after.value)
    vars(after.value)["__notes__"] = ["while shutting down"]  # (add_note, from 3.11)
    copied = pickle.loads(pickle.dumps(after.value))  # multiprocessing sends errors
    assert type(copied) is type(after.value)
    assert (str(copied), copied.adapter_name) == (str(after.value), name)
    assert getattr(copied, "__notes__", None) == ["while shutting down"]
    rebuilt = type(after.value)(*after.value.args)  # as some libraries re-raise
    assert str(rebuilt) == str(after.value)
    assert isinstance(rebuilt, StateNotConnectedError)


def test_wrong_loop_error_is_chat_sdks_error_too() -> None:
    state = AsyncState.from_url("memory://")

    async def first() -> None:
        await state.connect()
        await state.set("k", 1)

    async def second() -> None:
        with pytest.raises(StateNotConnectedError) as caught:
            await state.get("k")
        assert isinstance(caught.value, WrongLoopError)
        assert isinstance(caught.value, NotConnectedError)
        assert "Call `await state.connect()` in this event loop" in str(caught.value)
        await state.connect()
        assert await state.get("k") == 1
        await state.disconnect()

    asyncio.run(first())
    asyncio.run(second())  # the loop that connected it has finished


def _child(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_without_chat_sdk_imported_chat_sdk_is_never_imported() -> None:
    """The error is chat_sdk's only where the application imported chat_sdk."""
    code = """
        import asyncio, sys
        import chat_state
        from chat_state import AsyncState, State

        async def use():
            state = AsyncState.from_url("memory://")
            try:
                await state.get("k")
            except chat_state.NotConnectedError as exc:
                print(type(exc) is chat_state.NotConnectedError, exc)
            async with state:
                await state.set_if_not_exists("k", True, 0)
                state.get_client()
            try:
                await state.get("k")
            except chat_state.NotConnectedError as exc:
                print(type(exc) is chat_state.NotConnectedError)

        asyncio.run(use())
        try:
            State.from_url("memory://").get("k")
        except chat_state.NotConnectedError as exc:
            print(type(exc) is chat_state.NotConnectedError)
        print("chat_sdk" in sys.modules, "chat_sdk.errors" in sys.modules)
        import chat_sdk  # now the application uses chat_sdk
        try:
            State.from_url("memory://").get("k")
        except chat_sdk.StateNotConnectedError as exc:
            print(isinstance(exc, chat_state.NotConnectedError), exc.adapter_name)
    """
    assert _child(code).splitlines() == [
        "True AsyncState is not connected. Call connect() first.",
        "True",
        "True",
        "False False",
        "True State",
    ]


# -- a cache TTL of 0: no expiry, as None (chat_sdk's dedupe_ttl_ms=0) --------------------


class RecordingState(AsyncState):
    """An AsyncState that records the TTLs chat_sdk's ``Chat`` passes for de-duplication."""

    ttls: list[Any]

    async def set_if_not_exists(self, key: str, value: Any, ttl_ms: Any = None) -> bool:
        self.ttls.append(ttl_ms)
        return await super().set_if_not_exists(key, value, ttl_ms)


async def test_chat_with_dedupe_ttl_0_deduplicates(redis_url: str, prefix: str) -> None:
    """chat_sdk 0.4.41 passes ``dedupe_ttl_ms=0`` on as "no expiry"; 0.4.27.1's ``Chat``
    takes 0 for its default (5 minutes). Either way the duplicate is dropped and what
    reaches chat-state is stored as it says."""
    adapter = MockAdapter("slack")
    state = RecordingState.from_url(redis_url, key_prefix=prefix)
    state.ttls = []
    chat = Chat(user_name="bot", adapters={"slack": adapter}, state=state, dedupe_ttl_ms=0)
    handled: list[str] = []

    @chat.on_message(r".*")
    async def record(thread: Any, message: Message, context: Any = None) -> None:
        handled.append(message.id)

    await chat.initialize()
    try:
        for _ in range(2):
            await chat.handle_incoming_message(adapter, THREAD, create_test_message("e0", "hi"))
    finally:
        await chat.shutdown()
    assert handled == ["e0"]
    assert state.ttls[0] in (0, 300_000), state.ttls
    with redis.Redis.from_url(redis_url) as raw:
        ttl = raw.pttl(f"{prefix}:cache:dedupe:slack:e0")
    if state.ttls[0] == 0:
        assert ttl == -1  # no expiry
    else:
        assert 0 < ttl <= 300_000


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_set_if_not_exists_with_ttl_0_never_expires(state: Any, target: Target) -> None:
    """What chat_sdk 0.4.41's ``Chat(dedupe_ttl_ms=0)`` sends: ``(key, True, 0)``."""
    assert await state.set_if_not_exists("dedupe:slack:e1", True, 0) is True
    assert await state.set_if_not_exists("dedupe:slack:e1", True, 0) is False
    assert await state.get("dedupe:slack:e1") is True
    assert target.raw.pttl(target.key("cache", "dedupe:slack:e1")) == -1
    assert await state.set_if_not_exists("d2", "x", timedelta(0)) is True
    assert target.raw.pttl(target.key("cache", "d2")) == -1


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_set_with_ttl_0_is_set_with_none(state: Any, target: Target) -> None:
    for ttl in (0, timedelta(0), None):
        await state.set("k", 1, 60_000)
        assert target.raw.pttl(target.key("cache", "k")) > 0
        await state.set("k", 2, ttl)  # no expiry, and the old TTL is gone
        assert target.raw.pttl(target.key("cache", "k")) == -1
        assert await state.get("k") == 2


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
@pytest.mark.parametrize("ttl", [-1, timedelta(milliseconds=-1), -(2**60), 1.5])
async def test_a_negative_cache_ttl_is_still_refused(state: Any, ttl: Any) -> None:
    error = TypeError if isinstance(ttl, float) else ValueError
    with pytest.raises(error, match="ttl_ms"):
        await state.set("k", 1, ttl)
    with pytest.raises(error, match="ttl_ms"):
        await state.set_if_not_exists("k", 1, ttl)
    assert await state.get("k") is None


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
@pytest.mark.parametrize("ttl", [0, timedelta(0)])
async def test_a_lock_ttl_of_0_is_still_refused(state: Any, ttl: Any) -> None:
    """A lock that never expired would outlive a crashed holder."""
    with pytest.raises(ValueError, match="ttl_ms"):
        await state.acquire_lock("t", ttl)
    with pytest.raises(ValueError, match="ttl_ms"):
        await state.extend_lock(Lock("t", "x", 0), ttl)
    with pytest.raises(ValueError, match="ttl_ms"):
        await state.release_and_recheck(Lock("t", "x", 0), ttl)
    with pytest.raises(ValueError, match="ttl_ms"):
        getattr(state, "sync", state).lock("t", ttl)
    assert await state.inspect_lock("t") is None


# -- get_client() of a given client, before connect() -----------------------------------


async def test_get_client_gives_a_given_client_before_connect(redis_url: str) -> None:
    mine = redis.asyncio.Redis.from_url(redis_url)
    theirs = RedisStateAdapter(client=mine)
    assert theirs.get_client() is mine  # chat_sdk's adapter, not connected
    state = AsyncState(client=mine)
    assert state.get_client() is mine
    async with state:
        assert state.get_client() is mine
        await state.get_client().set("raw", "1")
    assert state.get_client() is mine  # after disconnect() too: it is the caller's
    assert await mine.get("raw") == b"1"  # never closed by chat-state
    await mine.delete("raw")
    await mine.aclose()
    blocking = redis.Redis.from_url(redis_url)
    sync_state = State(client=blocking)
    assert sync_state.get_client() is blocking
    with sync_state:
        assert sync_state.get_client() is blocking
    assert sync_state.get_client() is blocking
    blocking.close()


def test_get_client_gives_a_given_memory_store_before_connect() -> None:
    store = MemoryStore()
    assert State(client=store).get_client() is store
    assert AsyncState(client=store).get_client() is store  # no event loop needed


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_get_client_of_a_url_still_needs_a_connection(make_state: Any) -> None:
    state = make_state()
    adapter = getattr(state, "sync", state)  # get_client() is not a coroutine
    with pytest.raises(StateNotConnectedError):
        adapter.get_client()
    await state.connect()
    assert adapter.get_client() is not None
    await state.disconnect()
    with pytest.raises(NotConnectedError):
        adapter.get_client()
