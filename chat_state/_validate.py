"""Argument checks, run before anything is sent to a server."""

from __future__ import annotations

from typing import Any

__all__ = ["check_lock", "check_name", "check_queue_entry", "check_size", "check_ttl"]


def check_name(name: str, value: object) -> str:
    """A thread id or cache key: a non-empty ``str``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def check_ttl(name: str, value: object, *, optional: bool = False) -> int:
    """A TTL in milliseconds: a positive ``int`` (``None`` → 0 when ``optional``)."""
    if value is None and optional:
        return 0
    ttl = _check_int(name, value)
    if ttl <= 0:
        raise ValueError(f"{name} must be a positive number of milliseconds, got {ttl}")
    return ttl


def check_size(name: str, value: object) -> int:
    """A maximum length: ``None`` or 0 for unbounded, else a positive ``int``."""
    if value is None:
        return 0
    size = _check_int(name, value)
    if size < 0:
        raise ValueError(f"{name} must not be negative, got {size}")
    return size


def check_lock(lock: Any) -> tuple[str, str]:
    """A lock value: anything with a ``thread_id`` and a ``token`` (ours or chat_sdk's)."""
    thread_id = getattr(lock, "thread_id", None)
    token = getattr(lock, "token", None)
    if thread_id is None or token is None:
        raise TypeError(f"lock must be a Lock, not {type(lock).__name__}")
    return check_name("lock.thread_id", thread_id), check_name("lock.token", token)


def check_queue_entry(entry: Any) -> tuple[int, int, Any]:
    """A queue entry: ours, chat_sdk's, or anything with the same three attributes."""
    try:
        enqueued_at, expires_at, message = entry.enqueued_at, entry.expires_at, entry.message
    except AttributeError:
        raise TypeError(f"entry must be a QueueEntry, not {type(entry).__name__}") from None
    return (
        _check_int("entry.enqueued_at", enqueued_at),
        _check_int("entry.expires_at", expires_at),
        message,
    )
