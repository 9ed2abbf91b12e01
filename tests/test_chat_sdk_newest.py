"""What chat_sdk's newest release (0.4.41, Python 3.12+) adds, on chat-state: the
``burst`` strategy across two ``Chat`` instances, and ``Chat``'s own renewal of a
held lock while a handler outlasts the lock's TTL. ``.ci/run`` runs this on 3.12."""

from __future__ import annotations

import asyncio
import uuid
from importlib.metadata import version
from typing import Any

import chat_sdk.chat
import pytest
from chat_sdk import Chat, ConcurrencyConfig
from chat_sdk.errors import LockError
from chat_sdk.testing import MockAdapter, create_test_message
from packaging.version import Version

from chat_state import AsyncState
from chat_state.integrations.chat_sdk import ChatSdkState

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        Version(version("chat-sdk")) < Version("0.4.41"),
        reason="chat_sdk 0.4.41 (Python 3.12+) brings burst and lock renewal; "
        "this Python has the oldest chat_sdk we support",
    ),
]

THREAD = "slack:C1:1.1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # chat_sdk runs on asyncio


@pytest.fixture(params=["AsyncState", "ChatSdkState"])
def make_state(request: pytest.FixtureRequest, redis_url: str) -> Any:

    prefix = f"new{uuid.uuid4().hex[:8]}"
    kind = AsyncState if request.param == "AsyncState" else ChatSdkState
    return lambda: kind.from_url(redis_url, key_prefix=prefix)


async def test_burst_collapses_messages_from_two_bots_into_one_handler_call(
    make_state: Any,
) -> None:

    burst: Any = "burst"  # (not among the strategies of the chat_sdk mypy may see here)
    config = ConcurrencyConfig(strategy=burst, debounce_ms=400)
    chats, calls = [], []
    for name in ("one", "two"):
        adapter = MockAdapter("slack")
        chat = Chat(
            user_name="bot", adapters={"slack": adapter}, state=make_state(), concurrency=config
        )

        @chat.on_message(r".*")
        async def record(thread: Any, message: Any, context: Any = None, name: str = name) -> None:
            calls.append((name, message.id, [m.id for m in context.skipped]))

        await chat.initialize()
        chats.append((chat, adapter))
    try:
        (one, adapter_one), (two, adapter_two) = chats
        first = asyncio.create_task(
            one.handle_incoming_message(adapter_one, THREAD, create_test_message("m1", "a"))
        )
        await asyncio.sleep(0.1)  # inside the window: the second bot queues behind the first
        for n in (2, 3):
            await two.handle_incoming_message(
                adapter_two, THREAD, create_test_message(f"m{n}", "b")
            )
        await first
        assert calls == [("one", "m3", ["m1", "m2"])]
    finally:
        for chat, _ in chats:
            await chat.shutdown()


async def test_chat_renews_its_lock_while_a_handler_outlasts_the_ttl(
    make_state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(chat_sdk.chat, "DEFAULT_LOCK_TTL_MS", 600)  # renewed every 200 ms
    adapter = MockAdapter("slack")
    chat = Chat(
        user_name="bot", adapters={"slack": adapter}, state=make_state(), concurrency="drop"
    )
    other = Chat(
        user_name="bot", adapters={"slack": adapter}, state=make_state(), concurrency="drop"
    )
    started, handled = asyncio.Event(), []

    @chat.on_message(r"^slow")
    async def slow(thread: Any, message: Any, context: Any = None) -> None:
        started.set()
        await asyncio.sleep(2.0)  # more than three TTLs
        handled.append(message.id)

    await chat.initialize()
    await other.initialize()
    try:
        task = asyncio.create_task(
            chat.handle_incoming_message(adapter, THREAD, create_test_message("s1", "slow"))
        )
        await started.wait()
        await asyncio.sleep(1.5)  # the first TTL is long gone: only renewals keep the lock
        with pytest.raises(LockError):  # still held: the other bot drops its message
            await other.handle_incoming_message(adapter, THREAD, create_test_message("s2", "slow"))
        await task
        assert handled == ["s1"]
    finally:
        await chat.shutdown()
        await other.shutdown()
