"""chat-state as the Python ``chat_sdk`` package's state, on a real Redis.

``chat_sdk.Chat`` with its mock platform adapter and ``AsyncState`` as ``state=``:
de-duplication across two bot instances, the concurrency strategies chat_sdk
implements (drop, queue, debounce; it has no "burst"), message history, and
queue entries shared with chat_sdk's own Redis adapter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from chat_sdk import Chat, ConcurrencyConfig
from chat_sdk.errors import LockError
from chat_sdk.state.redis import RedisStateAdapter
from chat_sdk.testing import MockAdapter, create_test_message
from chat_sdk.types import Message
from chat_sdk.types import QueueEntry as SdkQueueEntry

from chat_state import AsyncState, QueueEntry
from chat_state.core.operations import now_ms

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
    history = await chat._message_history.get_messages(THREAD)
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
