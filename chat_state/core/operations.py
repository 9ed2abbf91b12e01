"""The contract's operations, written once, without I/O: each one a value.

An operation validates its arguments, encodes the value and returns what goes to
the server, prepared: ``(key, args, finish)``. ``args`` is the one command's words
(``("SET", key, text, "PX", ttl, "NX")``, or an ``EVALSHA`` of one of the
:mod:`~chat_state.core.scripts`), ``key`` the key it touches (a Cluster routes by
it), and ``finish`` turns the backend's normalised reply into the result. A
facade sends the command once and finishes it; a unit test feeds ``finish`` a
scripted reply.

Everything that must be identical on every backend and in both facades lives
here: key layout, JSON encoding, lock tokens, expiry arithmetic and validation.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from chat_state.errors import SerializationError
from chat_state.models import Lock, LockInfo, QueueEntry, QueueInfo

from . import codec
from .commands import SCAN_COUNT, Args, reply_text
from .inspection import holder_of
from .layout import Layout
from .scripts import EXTEND, LOCK_INFO, PUSH, QUEUE_INFO, RELEASE, SCRIPTS, Script
from .validate import (
    MAX_TTL_MS,
    check_list_ttl,
    check_lock,
    check_name,
    check_queue_entry,
    check_size,
    check_ttl,
)

__all__ = ["INFO", "PING", "Prepared", "evaluated", "now_ms"]

T = TypeVar("T")

#: What an operation returns: the key the command touches (for routing), the
#: command's words, and what turns the reply into the result.
Prepared = tuple[str | None, Args, Callable[[Any], T]]

QUEUE_MIN_TTL_MS = 60_000
#: What asks a server whether it answers (connect() sends it).
PING: Args = ("PING",)
#: What asks a server how it is (its memory, clients and rate: :meth:`stats`).
INFO: Args = ("INFO",)


def now_ms() -> int:
    """Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def new_token() -> str:
    """A lock token: 128 random bits from the operating system's CSPRNG (what
    :func:`secrets.token_hex` reads, without its two calls in between)."""
    return "cs_" + os.urandom(16).hex()


def _script(script: Script, key: str, *argv: str | int) -> Args:
    return ("EVALSHA", script.sha, 1, key, *argv)


def evaluated(args: Args) -> Args:
    """The ``EVAL`` of an ``EVALSHA`` command: its script's full source, for a server
    that lost its script cache (NOSCRIPT). Sending it caches the script there again."""
    script = SCRIPTS[str(args[1])]
    return ("EVAL", script.source, *args[2:])


# -- what replies become ------------------------------------------------------------------


def _nothing(reply: Any) -> None:
    return None


def _truth(reply: Any) -> bool:
    return bool(reply)


def _is_one(reply: Any) -> bool:
    return bool(reply == 1)


def _count(reply: Any) -> int:
    return int(reply)


def _value(reply: Any) -> Any:
    return None if reply is None else codec.decode(reply)


def _values(reply: Any) -> list[Any]:
    return [codec.decode(text) for text in reply]


def _entry(reply: Any) -> QueueEntry | None:
    return None if reply is None else codec.decode_queue_entry(reply)


def _lock(lock: Lock, reply: Any) -> Lock | None:
    return lock if reply else None  # SET NX: OK (or True) when taken, else nil


# -- the operations ---------------------------------------------------------------------


def subscribe(layout: Layout, thread_id: str) -> Prepared[None]:
    key = layout.subscriptions
    return key, ("SADD", key, check_name("thread_id", thread_id)), _nothing


def unsubscribe(layout: Layout, thread_id: str) -> Prepared[None]:
    key = layout.subscriptions
    return key, ("SREM", key, check_name("thread_id", thread_id)), _nothing


def is_subscribed(layout: Layout, thread_id: str) -> Prepared[bool]:
    key = layout.subscriptions
    return key, ("SISMEMBER", key, check_name("thread_id", thread_id)), _truth


def acquire_lock(layout: Layout, thread_id: str, ttl_ms: int | timedelta) -> Prepared[Lock | None]:
    thread_id = check_name("thread_id", thread_id)
    key = layout.lock(thread_id)
    ttl = check_ttl("ttl_ms", ttl_ms)
    token = new_token()
    # Read the clock before sending: expires_at must never overstate the lock's life.
    lock = Lock(thread_id, token, now_ms() + ttl)
    return key, ("SET", key, token, "PX", ttl, "NX"), functools.partial(_lock, lock)


def release_lock(layout: Layout, lock: Any) -> Prepared[None]:
    thread_id, token = check_lock(lock)
    key = layout.lock(thread_id)
    return key, _script(RELEASE, key, token), _nothing


def release_owned(layout: Layout, lock: Any) -> Prepared[bool]:
    """``release_lock``, telling whether the lock was still held under its token."""
    thread_id, token = check_lock(lock)
    key = layout.lock(thread_id)
    return key, _script(RELEASE, key, token), _is_one


def extend_lock(layout: Layout, lock: Any, ttl_ms: int | timedelta) -> Prepared[bool]:
    thread_id, token = check_lock(lock)
    key = layout.lock(thread_id)
    return key, _script(EXTEND, key, token, check_ttl("ttl_ms", ttl_ms)), _is_one


def force_release_lock(layout: Layout, thread_id: str) -> Prepared[None]:
    key = layout.lock(check_name("thread_id", thread_id))
    return key, ("DEL", key), _nothing


def get(layout: Layout, key: str) -> Prepared[Any]:
    cache_key = layout.cache(check_name("key", key))
    return cache_key, ("GET", cache_key), _value


def _set(
    layout: Layout, key: str, value: Any, ttl_ms: int | timedelta | None, *nx: str
) -> tuple[str, Args]:
    cache_key = layout.cache(check_name("key", key))
    # None or 0: no expiry (chat_sdk's dedupe_ttl_ms=0, TypeScript's ttl 0): SET with no PX.
    ttl = check_ttl("ttl_ms", ttl_ms, optional=True)
    text = codec.encode(value)
    if ttl:
        return cache_key, ("SET", cache_key, text, "PX", ttl, *nx)
    return cache_key, ("SET", cache_key, text, *nx)


def set(
    layout: Layout, key: str, value: Any, ttl_ms: int | timedelta | None = None
) -> Prepared[None]:
    cache_key, args = _set(layout, key, value, ttl_ms)
    return cache_key, args, _nothing


def set_if_not_exists(
    layout: Layout, key: str, value: Any, ttl_ms: int | timedelta | None = None
) -> Prepared[bool]:
    cache_key, args = _set(layout, key, value, ttl_ms, "NX")
    return cache_key, args, _truth  # SET: OK (or True) when written, else nil


def delete(layout: Layout, key: str) -> Prepared[None]:
    cache_key = layout.cache(check_name("key", key))
    return cache_key, ("DEL", cache_key), _nothing


def append_to_list(
    layout: Layout,
    key: str,
    value: Any,
    max_length: int | None = None,
    ttl_ms: int | timedelta | None = None,
) -> Prepared[None]:
    list_key = layout.list(check_name("key", key))
    # 0 means "unbounded" / "keep the list's TTL", as in Redis and TypeScript.
    size = check_size("max_length", max_length)
    ttl = check_list_ttl("ttl_ms", ttl_ms)
    return list_key, _script(PUSH, list_key, codec.encode(value), size, ttl), _nothing


def get_list(layout: Layout, key: str) -> Prepared[list[Any]]:
    list_key = layout.list(check_name("key", key))
    return list_key, ("LRANGE", list_key, 0, -1), _values


def enqueue(layout: Layout, thread_id: str, entry: Any, max_size: int) -> Prepared[int]:
    queue_key = layout.queue(check_name("thread_id", thread_id))
    size = check_size("max_size", max_size)
    enqueued_at, expires_at, message = check_queue_entry(entry)
    text = codec.encode_queue_entry(layout.queue_fields, enqueued_at, expires_at, message)
    # As in TypeScript, at least a minute; an entry that never expires (``sys.maxsize``)
    # keeps the queue for MAX_TTL_MS, until a later enqueue sets the TTL from its entry.
    ttl = min(max(expires_at - now_ms(), QUEUE_MIN_TTL_MS), MAX_TTL_MS)
    return queue_key, _script(PUSH, queue_key, text, size, ttl), _count


def dequeue(layout: Layout, thread_id: str) -> Prepared[QueueEntry | None]:
    queue_key = layout.queue(check_name("thread_id", thread_id))
    return queue_key, ("LPOP", queue_key), _entry


def queue_depth(layout: Layout, thread_id: str) -> Prepared[int]:
    queue_key = layout.queue(check_name("thread_id", thread_id))
    return queue_key, ("LLEN", queue_key), _count


# -- inspection (for operators: none of these writes, except clear's UNLINK) -------------


def _lock_info(thread_id: str, reply: Any) -> LockInfo | None:
    if reply is None:
        return None
    return LockInfo(thread_id, int(reply[1]), holder_of(reply_text(reply[0])))


def lock_info(layout: Layout, thread_id: str) -> Prepared[LockInfo | None]:
    """The thread's lock: its TTL and holder (one script: both read at one instant)."""
    return lock_info_at(layout.lock(check_name("thread_id", thread_id)), thread_id)


def lock_info_at(key: str, thread_id: str) -> Prepared[LockInfo | None]:
    """:func:`lock_info` of a lock key a scan found (its thread id as the key has it)."""
    return key, _script(LOCK_INFO, key), functools.partial(_lock_info, thread_id)


def _enqueued_at(text: str) -> int | None:
    try:
        return codec.decode_queue_entry(text).enqueued_at
    except SerializationError:
        return None


def _queue_info(thread_id: str, reply: Any) -> QueueInfo | None:
    if reply is None:
        return None
    return QueueInfo(thread_id, int(reply[0]), _enqueued_at(reply_text(reply[1])))


def queue_info_at(key: str, thread_id: str) -> Prepared[QueueInfo | None]:
    """A queue key's depth and oldest entry (one script: both read at one instant)."""
    return key, _script(QUEUE_INFO, key), functools.partial(_queue_info, thread_id)


def _entries(reply: Any) -> list[QueueEntry]:
    return [codec.decode_queue_entry(reply_text(text)) for text in reply]


def peek_queue(layout: Layout, thread_id: str, limit: int) -> Prepared[list[QueueEntry]]:
    """The thread's ``limit`` oldest queue entries, left in the queue."""
    queue_key = layout.queue(check_name("thread_id", thread_id))
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be an int of at least 1, not {limit!r}")
    return queue_key, ("LRANGE", queue_key, 0, limit - 1), _entries


def subscription_count(layout: Layout) -> Prepared[int]:
    key = layout.subscriptions
    return key, ("SCARD", key), _count


def _page(reply: Any) -> tuple[str, list[str]]:
    cursor, members = reply[0], reply[1]
    return str(int(cursor)), [reply_text(member) for member in members]


def subscriptions_page(layout: Layout, cursor: str) -> Prepared[tuple[str, list[str]]]:
    """One SSCAN page of the subscribed threads: → (the next cursor, the members);
    ``"0"`` starts and ends the walk."""
    key = layout.subscriptions
    return key, ("SSCAN", key, cursor, "COUNT", SCAN_COUNT), _page


def unlink(keys: list[str]) -> Prepared[int]:
    """Remove ``keys`` (freed in the background on a server): → how many were there.
    On a Cluster they must share a slot."""
    return keys[0], ("UNLINK", *keys), _count
