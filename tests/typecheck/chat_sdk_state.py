"""Type-checked by tests/test_chat_sdk_typing.py with ``mypy --strict`` (never run): chat-state
where chat_sdk expects its ``StateAdapter``, without a cast."""

from __future__ import annotations

from chat_sdk import ChatConfig
from chat_sdk.testing import MockAdapter
from chat_sdk.types import Lock, QueueEntry, StateAdapter

from chat_state.integrations.chat_sdk import ChatSdkState


def config(url: str) -> ChatConfig:
    return ChatConfig(
        adapters={"mock": MockAdapter("mock")},
        user_name="bot",
        state=ChatSdkState.from_url(url, key_prefix="bot"),
    )


async def chat_sdk_types(state: StateAdapter) -> tuple[Lock | None, QueueEntry | None]:
    return await state.acquire_lock("t", 30_000), await state.dequeue("t")


async def used(url: str) -> None:
    await chat_sdk_types(ChatSdkState.from_url(url))
