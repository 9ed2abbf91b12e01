"""``ChatSdkState``: what chat_sdk's type checker and its ``Chat`` expect of a state.

``mypy --strict`` checks ``tests/typecheck/chat_sdk_state.py`` (chat-state where chat_sdk
wants its ``StateAdapter``) against the chat_sdk installed here: the oldest we support
on Python 3.11, the newest on 3.12 (``.ci/run`` runs both)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from chat_sdk import Chat
from chat_sdk.testing import MockAdapter, create_test_message
from chat_sdk.types import Lock, Message, QueueEntry, StateAdapter

from chat_state import AsyncState
from chat_state.core.operations import now_ms
from chat_state.integrations.chat_sdk import ChatSdkState

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
CHECKED = ROOT / "tests" / "typecheck" / "chat_sdk_state.py"


def mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_mypy_strict_accepts_chat_sdk_state_as_chat_sdks_state_adapter() -> None:
    done = mypy(CHECKED)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_refuses_a_plain_async_state_there(tmp_path: Path) -> None:
    """The control: why ChatSdkState exists (AsyncState's Lock is not chat_sdk's)."""
    plain = tmp_path / "plain.py"
    plain.write_text(
        "from chat_sdk.types import StateAdapter\n"
        "from chat_state import AsyncState\n"
        'state: StateAdapter = AsyncState.from_url("memory://")\n'
    )
    done = mypy(plain)
    assert done.returncode == 1
    assert "StateAdapter" in done.stdout


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


async def test_chat_sdk_state_gives_chat_sdks_own_types(url: str, anyio_backend: str) -> None:
    if anyio_backend != "asyncio" and url != "memory://":
        pytest.skip("redis-py's asyncio client runs on asyncio")
    state = ChatSdkState.from_url(url, key_prefix=f"typed{uuid.uuid4().hex[:8]}")
    assert isinstance(state, StateAdapter)  # the runtime protocol check stays
    assert isinstance(AsyncState.from_url("memory://"), StateAdapter)
    await state.connect()
    try:
        lock = await state.acquire_lock("t", 30_000)
        assert type(lock) is Lock
        assert await state.acquire_lock("t", 30_000) is None
        assert await state.extend_lock(lock, 30_000)
        message = create_test_message("m1", "hello")
        entry = QueueEntry(enqueued_at=now_ms(), expires_at=now_ms() + 60_000, message=message)
        assert await state.enqueue("t", entry, 10) == 1
        assert await state.queue_depth("t") == 1
        got = await state.dequeue("t")
        assert type(got) is QueueEntry
        assert isinstance(got.message, Message)
        assert got.message.text == "hello"
        await state.release_lock(lock)
        assert await state.acquire_lock("t", 30_000) is not None
        await state.force_release_lock("t")
        assert await state.set_if_not_exists("k", {"v": 1}, 60_000)
        assert await state.get("k") == {"v": 1}
        await state.append_to_list("l", 1, max_length=5, ttl_ms=60_000)
        assert await state.get_list("l") == [1]
        await state.delete("k")
        await state.subscribe("t")
        assert await state.is_subscribed("t")
        await state.unsubscribe("t")
        assert state.get_client() is not None
        assert "ChatSdkState(AsyncState(" in repr(state)
    finally:
        await state.state.clear()
        await state.disconnect()


async def test_a_chat_handles_messages_on_chat_sdk_state(redis_url: str) -> None:
    adapter = MockAdapter("slack")
    state = ChatSdkState.from_url(redis_url, key_prefix=f"typed{uuid.uuid4().hex[:8]}")
    chat = Chat(user_name="bot", adapters={"slack": adapter}, state=state)
    handled: list[str] = []

    @chat.on_message(r".*")
    async def record(thread: object, message: Message, context: object = None) -> None:
        handled.append(message.id)

    await chat.initialize()
    try:
        for _ in range(2):  # a webhook delivered twice: handled once
            await chat.handle_incoming_message(
                adapter, "slack:C1:1.1", create_test_message("e1", "hi")
            )
        assert handled == ["e1"]
    finally:
        await chat.shutdown()
