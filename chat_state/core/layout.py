"""The data layout shared with the TypeScript adapters: key names, queue entry fields."""

from __future__ import annotations

from typing import Literal

from chat_state.errors import ConfigurationError

from .validate import check_text

__all__ = ["DEFAULT_PREFIX", "QUEUE_FIELDS", "Layout", "QueueFormat"]

DEFAULT_PREFIX = "chat-sdk"

QueueFormat = Literal["typescript", "chat_sdk"]
#: How queue entries name their times: the TypeScript adapters' camelCase (the
#: default, which every chat-state and TypeScript bot reads), or the snake_case of
#: ``chat_sdk.state.redis``, whose adapter reads nothing else (for a fleet that is
#: moving from it to chat-state).
QUEUE_FIELDS: dict[str, tuple[str, str]] = {
    "typescript": ("enqueuedAt", "expiresAt"),
    "chat_sdk": ("enqueued_at", "expires_at"),
}


class Layout:
    """Where one state's data lives: its key names and its queue entries' field names."""

    __slots__ = (
        "_cache",
        "_kinds",
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
        self._kinds = {
            "lock": self._lock,
            "cache": self._cache,
            "list": self._list,
            "queue": self._queue,
        }

    def lock(self, thread_id: str) -> str:
        return self._lock + thread_id

    def cache(self, key: str) -> str:
        return self._cache + key

    def list(self, key: str) -> str:
        return self._list + key

    def queue(self, thread_id: str) -> str:
        return self._queue + thread_id

    def kinds(self) -> dict[str, str]:
        """Each kind of key → what its keys start with (the subscriptions are one key)."""
        return dict(self._kinds)

    def parse(self, key: str) -> tuple[str, str]:
        """A key of this state → ``(kind, name)``: ``("lock", thread_id)``,
        ``("cache", key)``, ``("list", key)``, ``("queue", thread_id)``,
        ``("subscriptions", "")``, or ``("other", the rest)`` for one that none of the
        operations writes (or another prefix's)."""
        if key == self.subscriptions:
            return "subscriptions", ""
        for kind, start in self._kinds.items():
            if key.startswith(start) and len(key) > len(start):
                return kind, key[len(start) :]
        return "other", key.removeprefix(self.all)
