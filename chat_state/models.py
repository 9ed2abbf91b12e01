"""The values the state operations take and return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Health",
    "HeldLock",
    "Lock",
    "LockLike",
    "NodeHealth",
    "QueueEntry",
    "QueueEntryLike",
]


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


class HeldLock:
    """A lock held by ``state.lock(...)``, for as long as its block runs.

    Accepted wherever a :class:`Lock` is (``release_lock``, ``extend_lock``, ...).
    While the block runs it is renewed in the background, and ``expires_at`` follows
    each renewal; ``lost`` turns ``True`` once a renewal finds the lock gone or taken
    (or could not reach the server before the lock would have expired).

    Attributes:
        thread_id: The thread the lock is for.
        token: The holder's secret token (kept out of ``repr``).
        expires_at: Unix time in milliseconds at which the lock expires at the latest,
            as of its last renewal (read from the clock before each command is sent).
        lost: Whether the lock is known to be no longer held by this holder.
    """

    __slots__ = ("_expires_at", "_lost", "_thread_id", "_token", "_why")

    def __init__(self, lock: Lock) -> None:
        self._thread_id = lock.thread_id
        self._token = lock.token
        self._expires_at = lock.expires_at
        self._lost = False
        self._why = ""

    @property
    def thread_id(self) -> str:
        return self._thread_id

    @property
    def token(self) -> str:
        return self._token

    @property
    def expires_at(self) -> int:
        return self._expires_at

    @property
    def lost(self) -> bool:
        return self._lost

    def _renewed(self, expires_at: int) -> None:
        self._expires_at = expires_at

    def _lose(self, why: str) -> None:
        if not self._lost:
            self._lost, self._why = True, why

    def __repr__(self) -> str:
        return (
            f"HeldLock(thread_id={self._thread_id!r}, token='***', "
            f"expires_at={self._expires_at}, lost={self._lost})"
        )


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


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """One server in use, as :meth:`~chat_state.State.health` found it.

    ``address`` is ``host:port`` (or a socket path); ``role`` is the server's own
    (``"master"``, ``"replica"``) when it said, ``latency_ms`` the PING's round trip,
    ``error`` why it did not answer (``None`` when ``ok``).
    """

    address: str
    ok: bool
    latency_ms: float | None
    role: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """What :meth:`~chat_state.State.health` reports about the servers in use.

    ``ok``: every node answered. ``latency_ms``: the slowest node's PING round trip
    (``None`` if none answered). ``topology``: ``"memory"``, ``"standalone"``,
    ``"unix"``, ``"cluster"``, ``"sentinel"`` or ``"client"`` (a client passed in).
    ``nodes``: each primary in use. ``server`` and ``version``: what the server calls
    itself (``"redis"``, ``"valkey"``, ``"memory"``) and its version, when it said.
    """

    ok: bool
    latency_ms: float | None
    topology: str
    nodes: tuple[NodeHealth, ...]
    server: str | None = None
    version: str | None = None
