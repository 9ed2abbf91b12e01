"""chat-state: shared state for chat bots, on memory, Redis and Valkey.

Thread subscriptions, per-thread locks, a JSON cache with TTLs (webhook
de-duplication), capped lists (message history) and per-thread message queues,
byte-compatible with the Chat SDK's TypeScript Redis adapters.

>>> from chat_state import State
>>> with State.from_url("memory://") as state:
...     state.set_if_not_exists("dedupe:evt-1", True, ttl_ms=600_000)
True
"""

from __future__ import annotations

from .core.validate import MAX_TTL_MS
from .errors import (
    BackendError,
    ChatStateError,
    ConfigurationError,
    LockLostError,
    LockUnavailableError,
    NotConnectedError,
    SerializationError,
    WrongLoopError,
)
from .facades import AsyncState, State
from .locking import AsyncLockContext, LockContext
from .memory import MemoryStore
from .models import (
    Health,
    HeldLock,
    Lock,
    LockHolder,
    LockInfo,
    LockLike,
    NodeHealth,
    QueueEntry,
    QueueEntryLike,
    QueueInfo,
    ServerStats,
    StateStats,
)

__all__ = [
    "MAX_TTL_MS",
    "AsyncLockContext",
    "AsyncState",
    "BackendError",
    "ChatStateError",
    "ConfigurationError",
    "Health",
    "HeldLock",
    "Lock",
    "LockContext",
    "LockHolder",
    "LockInfo",
    "LockLike",
    "LockLostError",
    "LockUnavailableError",
    "MemoryStore",
    "NodeHealth",
    "NotConnectedError",
    "QueueEntry",
    "QueueEntryLike",
    "QueueInfo",
    "SerializationError",
    "ServerStats",
    "State",
    "StateStats",
    "WrongLoopError",
]

__version__ = "0.2.0"
