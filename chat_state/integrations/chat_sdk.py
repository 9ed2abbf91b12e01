"""chat-state as ``chat_sdk``'s state, typed as chat_sdk expects it:
``pip install "chat-state[chat-sdk]"``.

:class:`~chat_state.AsyncState` satisfies chat_sdk's ``StateAdapter`` protocol at run
time, but a type checker sees that its locks and queue entries are chat-state's own
classes. :class:`ChatSdkState` takes and returns chat_sdk's ``Lock`` and
``QueueEntry``, so that ``mypy --strict`` accepts it where chat_sdk wants a
``StateAdapter``, without a cast::

    from chat_sdk import Chat, ChatConfig
    from chat_state.integrations.chat_sdk import ChatSdkState

    chat = Chat(ChatConfig(adapters=..., user_name="bot", state=ChatSdkState.from_url(url)))

Every call goes to the :class:`~chat_state.AsyncState` it wraps (``.state``, for
everything else chat-state offers: ``lock()``, ``stats()``, ``health()``...).
"""

from __future__ import annotations

import logging
from typing import Any

from chat_state.core.layout import DEFAULT_PREFIX, QueueFormat
from chat_state.facades import AsyncState

try:
    from chat_sdk.types import Lock, QueueEntry
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        'chat_state.integrations.chat_sdk needs chat_sdk: pip install "chat-state[chat-sdk]"'
    ) from exc

__all__ = ["ChatSdkState"]


class ChatSdkState:
    """chat_sdk's ``StateAdapter``, over an :class:`~chat_state.AsyncState`."""

    __slots__ = ("state",)

    def __init__(self, state: AsyncState) -> None:
        #: The adapter every call goes to.
        self.state = state

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        driver: str | None = None,
        queue_format: QueueFormat = "typescript",
    ) -> ChatSdkState:
        """An adapter for ``url``, as :meth:`chat_state.AsyncState.from_url` makes one."""
        return cls(
            AsyncState.from_url(
                url, key_prefix=key_prefix, logger=logger, driver=driver, queue_format=queue_format
            )
        )

    def __repr__(self) -> str:
        return f"ChatSdkState({self.state!r})"

    async def connect(self) -> None:
        await self.state.connect()

    async def disconnect(self) -> None:
        await self.state.disconnect()

    def get_client(self) -> Any:
        """The client library's client (see :meth:`chat_state.AsyncState.get_client`)."""
        return self.state.get_client()

    # -- subscriptions ------------------------------------------------------------

    async def subscribe(self, thread_id: str) -> None:
        await self.state.subscribe(thread_id)

    async def unsubscribe(self, thread_id: str) -> None:
        await self.state.unsubscribe(thread_id)

    async def is_subscribed(self, thread_id: str) -> bool:
        return await self.state.is_subscribed(thread_id)

    # -- locks: chat_sdk's Lock --------------------------------------------------

    async def acquire_lock(self, thread_id: str, ttl_ms: int) -> Lock | None:
        lock = await self.state.acquire_lock(thread_id, ttl_ms)
        if lock is None:
            return None
        return Lock(thread_id=lock.thread_id, token=lock.token, expires_at=lock.expires_at)

    async def release_lock(self, lock: Lock) -> None:
        await self.state.release_lock(lock)

    async def extend_lock(self, lock: Lock, ttl_ms: int) -> bool:
        return await self.state.extend_lock(lock, ttl_ms)

    async def force_release_lock(self, thread_id: str) -> None:
        await self.state.force_release_lock(thread_id)

    # -- cache and lists ----------------------------------------------------------

    async def get(self, key: str) -> Any | None:
        return await self.state.get(key)

    async def set(self, key: str, value: Any, ttl_ms: int | None = None) -> None:
        await self.state.set(key, value, ttl_ms)

    async def set_if_not_exists(self, key: str, value: Any, ttl_ms: int | None = None) -> bool:
        return await self.state.set_if_not_exists(key, value, ttl_ms)

    async def delete(self, key: str) -> None:
        await self.state.delete(key)

    async def append_to_list(
        self, key: str, value: Any, *, max_length: int | None = None, ttl_ms: int | None = None
    ) -> None:
        await self.state.append_to_list(key, value, max_length=max_length, ttl_ms=ttl_ms)

    async def get_list(self, key: str) -> list[Any]:
        return await self.state.get_list(key)

    # -- queues: chat_sdk's QueueEntry -------------------------------------------

    async def enqueue(self, thread_id: str, entry: QueueEntry, max_size: int) -> int:
        return await self.state.enqueue(thread_id, entry, max_size)

    async def dequeue(self, thread_id: str) -> QueueEntry | None:
        entry = await self.state.dequeue(thread_id)
        if entry is None:
            return None
        return QueueEntry(
            enqueued_at=entry.enqueued_at, expires_at=entry.expires_at, message=entry.message
        )

    async def queue_depth(self, thread_id: str) -> int:
        return await self.state.queue_depth(thread_id)
