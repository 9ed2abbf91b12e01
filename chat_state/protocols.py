"""The thin interface between the operations and a backend.

A backend wraps one client library (or the in-process store). It normalises
replies to ``str`` / ``int`` / ``bool`` / ``None``, maps its client's exceptions to
:class:`~chat_state.errors.BackendError` (with the client's exception chained) and
raises :class:`NoScriptError` when the server does not know a script's SHA.

The sync and async protocols close with different method names (``close`` /
``aclose``), so no class satisfies both by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["AsyncRedisLike", "BackendFactory", "NoScriptError", "RedisLike"]

Arg = str | int


class NoScriptError(Exception):
    """The server has no script with that SHA (its script cache was flushed or lost)."""


@runtime_checkable
class RedisLike(Protocol):
    """A blocking backend: the commands the operations use."""

    @property
    def client(self) -> Any:
        """The underlying client object."""

    def ping(self) -> None: ...
    def sadd(self, key: str, member: str) -> int: ...
    def srem(self, key: str, member: str) -> int: ...
    def sismember(self, key: str, member: str) -> bool: ...
    def set(self, key: str, value: str, px: int | None, nx: bool) -> bool: ...
    def get(self, key: str) -> str | None: ...
    def delete(self, key: str) -> int: ...
    def lpop(self, key: str) -> str | None: ...
    def llen(self, key: str) -> int: ...
    def lrange(self, key: str, start: int, stop: int) -> list[str]: ...
    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...
    def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...
    def scan_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix``, by SCAN on every primary (never KEYS)."""

    def close(self) -> None:
        """Release resources; closes the client only if the backend created it."""


@runtime_checkable
class AsyncRedisLike(Protocol):
    """An async backend: the same commands as :class:`RedisLike`, awaitable.

    A backend that holds no connection (the memory backend) may set the class
    attribute ``loop_free = True``: an AsyncState then keeps it, and its data, when
    it moves to another event loop (any other backend is opened anew there).
    """

    @property
    def client(self) -> Any:
        """The underlying client object."""

    async def ping(self) -> None: ...
    async def sadd(self, key: str, member: str) -> int: ...
    async def srem(self, key: str, member: str) -> int: ...
    async def sismember(self, key: str, member: str) -> bool: ...
    async def set(self, key: str, value: str, px: int | None, nx: bool) -> bool: ...
    async def get(self, key: str) -> str | None: ...
    async def delete(self, key: str) -> int: ...
    async def lpop(self, key: str) -> str | None: ...
    async def llen(self, key: str) -> int: ...
    async def lrange(self, key: str, start: int, stop: int) -> list[str]: ...
    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...
    async def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any: ...
    def scan_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Every key starting with ``prefix``, by SCAN on every primary (never KEYS)."""

    async def aclose(self) -> None:
        """Release resources; closes the client only if the backend created it."""


class BackendFactory(Protocol):
    """What a backend distribution registers for its URL schemes.

    ``validate_url`` runs when an adapter is built, so a bad URL fails before any
    connection is attempted; ``open_*`` create a client from a URL (the backend
    owns and later closes it); ``adopt_*`` wrap a client the application passed
    in (never closed by us) and return ``None`` for a client of another library.
    """

    def validate_url(self, url: str) -> None:
        """Raise :class:`~chat_state.errors.ConfigurationError` for a URL it cannot open."""

    def open_sync(self, url: str) -> RedisLike: ...
    def open_async(self, url: str) -> AsyncRedisLike: ...
    def adopt_sync(self, client: object) -> RedisLike | None: ...
    def adopt_async(self, client: object) -> AsyncRedisLike | None: ...
