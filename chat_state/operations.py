"""The contract's operations, written once, without I/O.

Each operation is a generator that validates its arguments, yields the one
backend call it needs (a :class:`Command` or a :class:`ScriptCall`), receives the
normalised reply and returns the result. The drivers (:mod:`chat_state._drivers`)
feed it from a sync or an async backend; unit tests feed it scripted replies.

Everything that must be identical on every backend and in both facades lives
here: key layout, JSON encoding, lock tokens, expiry arithmetic and validation.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from . import _codec
from ._scripts import EXTEND, PUSH, RELEASE, Script
from ._validate import (
    MAX_TTL_MS,
    check_list_ttl,
    check_lock,
    check_name,
    check_queue_entry,
    check_size,
    check_text,
    check_ttl,
)
from .errors import ConfigurationError
from .models import Lock, QueueEntry
from .protocols import Arg

__all__ = ["Call", "Command", "Layout", "Operation", "ScriptCall"]

T = TypeVar("T")

DEFAULT_PREFIX = "chat-sdk"
QUEUE_MIN_TTL_MS = 60_000

QueueFormat = Literal["typescript", "chat_sdk"]
#: How queue entries name their times: the TypeScript adapters' camelCase (the
#: default, which every chat-state and TypeScript bot reads), or the snake_case of
#: ``chat_sdk.state.redis``, whose adapter reads nothing else (for a fleet that is
#: moving from it to chat-state).
QUEUE_FIELDS: dict[str, tuple[str, str]] = {
    "typescript": ("enqueuedAt", "expiresAt"),
    "chat_sdk": ("enqueued_at", "expires_at"),
}


@dataclass(frozen=True, slots=True)
class Command:
    """One backend method call: ``getattr(backend, name)(*args)``."""

    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One script run on one key."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[Arg, ...]


Call = Command | ScriptCall
Operation = Generator[Call, Any, T]


class Layout:
    """The data layout shared with the TypeScript adapters: key names, queue entry fields."""

    __slots__ = (
        "_cache",
        "_list",
        "_lock",
        "_queue",
        "all",
        "prefix",
        "queue_fields",
        "subscriptions",
    )

    def __init__(
        self, prefix: str = DEFAULT_PREFIX, queue_format: QueueFormat = "typescript"
    ) -> None:
        if queue_format not in QUEUE_FIELDS:
            known = ", ".join(repr(name) for name in QUEUE_FIELDS)
            raise ConfigurationError(f"queue_format must be one of {known}, not {queue_format!r}")
        #: The field names queue entries are written with (both forms are read).
        self.queue_fields = QUEUE_FIELDS[queue_format]
        # An empty prefix falls back to the default, as in TypeScript, so that no
        # key ever starts with ":" and both languages agree on the key names.
        try:
            self.prefix = check_text("key_prefix", prefix) or DEFAULT_PREFIX
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.all = f"{self.prefix}:"  # what every key of this state starts with
        self.subscriptions = f"{self.prefix}:subscriptions"
        self._lock = f"{self.prefix}:lock:"
        self._cache = f"{self.prefix}:cache:"
        self._list = f"{self.prefix}:list:"
        self._queue = f"{self.prefix}:queue:"

    def lock(self, thread_id: str) -> str:
        return self._lock + thread_id

    def cache(self, key: str) -> str:
        return self._cache + key

    def list(self, key: str) -> str:
        return self._list + key

    def queue(self, thread_id: str) -> str:
        return self._queue + thread_id


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def new_token() -> str:
    """A lock token: 128 random bits from :mod:`secrets`."""
    return "cs_" + secrets.token_hex(16)


def subscribe(layout: Layout, thread_id: str) -> Operation[None]:
    yield Command("sadd", (layout.subscriptions, check_name("thread_id", thread_id)))


def unsubscribe(layout: Layout, thread_id: str) -> Operation[None]:
    yield Command("srem", (layout.subscriptions, check_name("thread_id", thread_id)))


def is_subscribed(layout: Layout, thread_id: str) -> Operation[bool]:
    reply = yield Command("sismember", (layout.subscriptions, check_name("thread_id", thread_id)))
    return bool(reply)


def acquire_lock(layout: Layout, thread_id: str, ttl_ms: int) -> Operation[Lock | None]:
    thread_id = check_name("thread_id", thread_id)
    key = layout.lock(thread_id)
    ttl = check_ttl("ttl_ms", ttl_ms)
    token = new_token()
    # Read the clock before sending: expires_at must never overstate the lock's life.
    expires_at = now_ms() + ttl
    acquired = yield Command("set", (key, token, ttl, True))
    return Lock(thread_id, token, expires_at) if acquired else None


def release_lock(layout: Layout, lock: Any) -> Operation[None]:
    thread_id, token = check_lock(lock)
    yield ScriptCall(RELEASE, (layout.lock(thread_id),), (token,))


def extend_lock(layout: Layout, lock: Any, ttl_ms: int) -> Operation[bool]:
    thread_id, token = check_lock(lock)
    ttl = check_ttl("ttl_ms", ttl_ms)
    reply = yield ScriptCall(EXTEND, (layout.lock(thread_id),), (token, ttl))
    return bool(reply == 1)


def force_release_lock(layout: Layout, thread_id: str) -> Operation[None]:
    yield Command("delete", (layout.lock(check_name("thread_id", thread_id)),))


def get(layout: Layout, key: str) -> Operation[Any]:
    text = yield Command("get", (layout.cache(check_name("key", key)),))
    return None if text is None else _codec.decode(text)


def set(layout: Layout, key: str, value: Any, ttl_ms: int | None = None) -> Operation[None]:
    cache_key = layout.cache(check_name("key", key))
    ttl = check_ttl("ttl_ms", ttl_ms, optional=True) or None
    yield Command("set", (cache_key, _codec.encode(value), ttl, False))


def set_if_not_exists(
    layout: Layout, key: str, value: Any, ttl_ms: int | None = None
) -> Operation[bool]:
    cache_key = layout.cache(check_name("key", key))
    ttl = check_ttl("ttl_ms", ttl_ms, optional=True) or None
    written = yield Command("set", (cache_key, _codec.encode(value), ttl, True))
    return bool(written)


def delete(layout: Layout, key: str) -> Operation[None]:
    yield Command("delete", (layout.cache(check_name("key", key)),))


def append_to_list(
    layout: Layout, key: str, value: Any, max_length: int | None = None, ttl_ms: int | None = None
) -> Operation[None]:
    list_key = layout.list(check_name("key", key))
    # 0 means "unbounded" / "keep the list's TTL", as in Redis and TypeScript.
    size = check_size("max_length", max_length)
    ttl = check_list_ttl("ttl_ms", ttl_ms)
    yield ScriptCall(PUSH, (list_key,), (_codec.encode(value), size, ttl))


def get_list(layout: Layout, key: str) -> Operation[list[Any]]:
    texts = yield Command("lrange", (layout.list(check_name("key", key)), 0, -1))
    return [_codec.decode(text) for text in texts]


def enqueue(layout: Layout, thread_id: str, entry: Any, max_size: int) -> Operation[int]:
    queue_key = layout.queue(check_name("thread_id", thread_id))
    size = check_size("max_size", max_size)
    enqueued_at, expires_at, message = check_queue_entry(entry)
    text = _codec.encode_queue_entry(layout.queue_fields, enqueued_at, expires_at, message)
    # As in TypeScript, at least a minute; an entry that never expires (``sys.maxsize``)
    # keeps the queue for MAX_TTL_MS, until a later enqueue sets the TTL from its entry.
    ttl = min(max(expires_at - now_ms(), QUEUE_MIN_TTL_MS), MAX_TTL_MS)
    depth = yield ScriptCall(PUSH, (queue_key,), (text, size, ttl))
    return int(depth)


def dequeue(layout: Layout, thread_id: str) -> Operation[QueueEntry | None]:
    text = yield Command("lpop", (layout.queue(check_name("thread_id", thread_id)),))
    return None if text is None else _codec.decode_queue_entry(text)


def queue_depth(layout: Layout, thread_id: str) -> Operation[int]:
    depth = yield Command("llen", (layout.queue(check_name("thread_id", thread_id)),))
    return int(depth)
