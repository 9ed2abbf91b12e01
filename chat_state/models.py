"""The values the state operations take and return."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Protocol

__all__ = [
    "Health",
    "HeldLock",
    "Lock",
    "LockHolder",
    "LockInfo",
    "LockLike",
    "NodeHealth",
    "QueueEntry",
    "QueueEntryLike",
    "QueueInfo",
    "ServerStats",
    "StateStats",
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


class _Reported:
    """A report that turns into plain JSON values (``--json`` in the command line)."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """The fields, nested values included, as a dict of plain values."""
        found: dict[str, Any] = asdict(self)  # type: ignore[call-overload]
        return found


@dataclass(frozen=True, slots=True)
class NodeHealth(_Reported):
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
class Health(_Reported):
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


# -- what the inspection operations report -------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockHolder(_Reported):
    """Whose a lock is, told without its token (which would let anyone release it).

    Attributes:
        origin: What wrote the token: ``"chat-state"``, ``"state-ioredis"`` or
            ``"state-redis"`` (the TypeScript adapters), ``"chat_sdk"`` (its Python
            adapters), or ``"unknown"``.
        fingerprint: 8 hex digits of the token's SHA-256: the same lock, the same
            fingerprint; compare with :meth:`holds`.
        acquired_at: Unix time in milliseconds at which the lock was taken, when the
            token tells it (the TypeScript adapters' and chat_sdk's do), else ``None``.
    """

    origin: str
    fingerprint: str
    acquired_at: int | None = None

    @staticmethod
    def fingerprint_of(token: str) -> str:
        """A token's fingerprint: 8 hex digits of its SHA-256 (no way back to it)."""
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:8]

    def holds(self, lock: LockLike) -> bool:
        """Whether this is the holder of ``lock`` (by its token's fingerprint)."""
        return self.fingerprint_of(lock.token) == self.fingerprint

    def __str__(self) -> str:
        return f"{self.origin} #{self.fingerprint}"


@dataclass(frozen=True, slots=True)
class LockInfo(_Reported):
    """A thread's lock as :meth:`~chat_state.State.inspect_lock` found it.

    Attributes:
        thread_id: The thread.
        ttl_ms: Milliseconds until it expires (``-1``: it has no TTL, which only a
            writer other than the adapters leaves).
        holder: Whose it is.
    """

    thread_id: str
    ttl_ms: int
    holder: LockHolder


@dataclass(frozen=True, slots=True)
class QueueInfo(_Reported):
    """A thread's queue as :meth:`~chat_state.State.iter_queues` found it.

    Attributes:
        thread_id: The thread.
        depth: How many entries it holds (expired ones included, as ``queue_depth``).
        oldest_enqueued_at: Unix time in milliseconds at which its oldest entry was
            queued (``None`` if that entry is not a queue entry).
    """

    thread_id: str
    depth: int
    oldest_enqueued_at: int | None


@dataclass(frozen=True, slots=True)
class ServerStats(_Reported):
    """One primary in use, from its ``INFO`` (``None`` where it did not say: memory://).

    Attributes:
        address: ``host:port`` (or the adapter's redacted URL where the backend cannot
            tell the node).
        used_memory_bytes: ``used_memory``: everything the server holds, not only this
            prefix's keys.
        ops_per_sec: ``instantaneous_ops_per_sec``, the server's recent rate.
        connected_clients: ``connected_clients``.
        error: Why it did not answer (``None`` when it did).
    """

    address: str
    used_memory_bytes: int | None
    ops_per_sec: int | None
    connected_clients: int | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StateStats(_Reported):
    """What :meth:`~chat_state.State.stats` counted under one key prefix.

    Attributes:
        prefix: The key prefix.
        subscriptions: Subscribed threads.
        locks: Locks held.
        cache_keys: ``get``/``set`` keys.
        lists: ``append_to_list`` lists.
        queues: Thread queues.
        queued_entries: Entries in all queues.
        other_keys: Keys under the prefix that none of the above wrote.
        deepest_queues: Up to 10 queues, deepest first.
        servers: Each primary in use.
    """

    prefix: str
    subscriptions: int
    locks: int
    cache_keys: int
    lists: int
    queues: int
    queued_entries: int
    other_keys: int
    deepest_queues: tuple[QueueInfo, ...]
    servers: tuple[ServerStats, ...]
