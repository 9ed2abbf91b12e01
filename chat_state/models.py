"""The values the state operations take and return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Lock", "LockLike", "QueueEntry", "QueueEntryLike"]


class LockLike(Protocol):
    """What ``release_lock`` and ``extend_lock`` need of a lock: ours, or chat_sdk's."""

    @property
    def thread_id(self) -> str: ...

    @property
    def token(self) -> str: ...


class QueueEntryLike(Protocol):
    """What ``enqueue`` needs of an entry: ours, or chat_sdk's."""

    @property
    def enqueued_at(self) -> int: ...

    @property
    def expires_at(self) -> int: ...

    @property
    def message(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Lock:
    """A per-thread lock, as returned by ``acquire_lock``.

    The lock is a value: whoever holds this object can release or extend the lock,
    and nobody else can (the ``token`` is 128 random bits from ``os.urandom``, the
    source of :mod:`secrets`).

    Attributes:
        thread_id: The thread the lock is for.
        token: The holder's secret token, stored as the lock key's value.
        expires_at: Unix time in milliseconds at which the lock expires at the
            latest. It is computed from the clock *before* the command is sent, so
            it never overstates the lock's life.
    """

    thread_id: str
    token: str
    expires_at: int

    def __repr__(self) -> str:
        # The token is a bearer secret: keep it out of logs.
        return f"Lock(thread_id={self.thread_id!r}, token='***', expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A message waiting in a thread's queue.

    Attributes:
        enqueued_at: Unix time in milliseconds at which it was queued.
        expires_at: Unix time in milliseconds after which the caller should drop it.
        message: The message. On ``enqueue`` an object with a ``to_json()`` method
            is stored as what that returns; anything else must be plain JSON. On
            ``dequeue`` it is the parsed JSON (a ``chat_sdk`` ``Message`` when
            ``chat_sdk`` is in use and the stored message is one).
    """

    enqueued_at: int
    expires_at: int
    message: Any
