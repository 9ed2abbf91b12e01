"""The backend for redis-py and its fork valkey-py, written once.

:class:`RedisFamily` is parameterised by the client module (``redis`` or
``valkey``) and the names of its classes; ``chat_state_redis`` binds it to
redis-py. It normalises replies (``bytes`` → ``str``, RESP2/RESP3 booleans and
integers) and maps the library's exceptions to ours, with passwords scrubbed from
every message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from .errors import BackendError, ConfigurationError
from .protocols import Arg, AsyncRedisLike, NoScriptError, RedisLike

__all__ = ["RedisFamily"]

T = TypeVar("T")

#: Bounded waits by default; a URL's own ``socket_timeout=`` / ``socket_connect_timeout=`` win.
DEFAULT_TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 10.0}


def _text(reply: Any) -> Any:
    return reply.decode() if isinstance(reply, bytes) else reply


def scrub(message: str, secrets: Sequence[str]) -> str:
    """``message`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


class _Base:
    """What the sync and async wrappers share: the client, ownership, error mapping."""

    def __init__(
        self, family: RedisFamily, client: Any, *, owned: bool, secrets: Sequence[str]
    ) -> None:
        self._family = family
        self._client = client
        self._owned = owned
        self._secrets = tuple(secrets)

    @property
    def client(self) -> Any:
        return self._client

    def _error(self, exc: Exception) -> Exception:
        if isinstance(exc, self._family.noscript_error):
            return NoScriptError(str(exc))
        detail = scrub(f"{type(exc).__name__}: {exc}", self._secrets)
        return BackendError(f"{self._family.name} command failed: {detail}")


class SyncRedisBackend(_Base):
    """:class:`~chat_state.protocols.RedisLike` over a blocking redis-py/valkey-py client."""

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._family.base_error as exc:
            raise self._error(exc) from exc

    def ping(self) -> None:
        self._call(self._client.ping)

    def sadd(self, key: str, member: str) -> int:
        return int(self._call(self._client.sadd, key, member))

    def srem(self, key: str, member: str) -> int:
        return int(self._call(self._client.srem, key, member))

    def sismember(self, key: str, member: str) -> bool:
        return bool(self._call(self._client.sismember, key, member))

    def set(self, key: str, value: str, px: int | None, nx: bool) -> bool:
        return bool(self._call(self._client.set, key, value, px=px, nx=nx))

    def get(self, key: str) -> str | None:
        return _text(self._call(self._client.get, key))  # type: ignore[no-any-return]

    def delete(self, key: str) -> int:
        return int(self._call(self._client.delete, key))

    def lpop(self, key: str) -> str | None:
        return _text(self._call(self._client.lpop, key))  # type: ignore[no-any-return]

    def llen(self, key: str) -> int:
        return int(self._call(self._client.llen, key))

    def lrange(self, key: str, start: int, stop: int) -> list[str]:
        return [_text(item) for item in self._call(self._client.lrange, key, start, stop)]

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return _text(self._call(self._client.evalsha, sha, len(keys), *keys, *args))

    def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return _text(self._call(self._client.eval, source, len(keys), *keys, *args))

    def close(self) -> None:
        if self._owned:
            self._call(self._client.close)


class AsyncRedisBackend(_Base):
    """:class:`~chat_state.protocols.AsyncRedisLike` over an asyncio redis-py/valkey-py client."""

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except self._family.base_error as exc:
            raise self._error(exc) from exc

    async def ping(self) -> None:
        await self._call(self._client.ping)

    async def sadd(self, key: str, member: str) -> int:
        return int(await self._call(self._client.sadd, key, member))

    async def srem(self, key: str, member: str) -> int:
        return int(await self._call(self._client.srem, key, member))

    async def sismember(self, key: str, member: str) -> bool:
        return bool(await self._call(self._client.sismember, key, member))

    async def set(self, key: str, value: str, px: int | None, nx: bool) -> bool:
        return bool(await self._call(self._client.set, key, value, px=px, nx=nx))

    async def get(self, key: str) -> str | None:
        return _text(await self._call(self._client.get, key))  # type: ignore[no-any-return]

    async def delete(self, key: str) -> int:
        return int(await self._call(self._client.delete, key))

    async def lpop(self, key: str) -> str | None:
        return _text(await self._call(self._client.lpop, key))  # type: ignore[no-any-return]

    async def llen(self, key: str) -> int:
        return int(await self._call(self._client.llen, key))

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        return [_text(item) for item in await self._call(self._client.lrange, key, start, stop)]

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return _text(await self._call(self._client.evalsha, sha, len(keys), *keys, *args))

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return _text(await self._call(self._client.eval, source, len(keys), *keys, *args))

    async def aclose(self) -> None:
        if self._owned:
            await self._call(self._client.aclose)


class RedisFamily:
    """A :class:`~chat_state.protocols.BackendFactory` for redis-py or valkey-py.

    Args:
        module: The client package (``redis`` or ``valkey``), already imported.
        client_class: Its standalone client's name (``"Redis"`` / ``"Valkey"``),
            found both in the package and in its ``asyncio`` subpackage.
        base_error: Its base exception's name (``"RedisError"`` / ``"ValkeyError"``).
    """

    def __init__(self, module: ModuleType, *, client_class: str, base_error: str) -> None:
        self.name = module.__name__
        self.sync_client: type[Any] = getattr(module, client_class)
        self.async_client: type[Any] = getattr(module.asyncio, client_class)
        self.base_error: type[Exception] = getattr(module.exceptions, base_error)
        self.noscript_error: type[Exception] = module.exceptions.NoScriptError
        self._parse_url: Callable[[str], dict[str, Any]] = module.connection.parse_url

    def __repr__(self) -> str:
        return f"<RedisFamily {self.name}>"

    @staticmethod
    def _url_secrets(url: str) -> list[str]:
        password = urlsplit(url).password
        return [password, unquote(password)] if password else []

    @staticmethod
    def _client_secrets(client: Any) -> list[str]:
        pool = getattr(client, "connection_pool", None)
        password = getattr(pool, "connection_kwargs", {}).get("password")
        return [password] if isinstance(password, str) else []

    def validate_url(self, url: str) -> None:
        try:
            self._parse_url(url)
        except (ValueError, TypeError) as exc:
            detail = scrub(str(exc), self._url_secrets(url))
            raise ConfigurationError(f"bad {self.name} URL: {detail}") from None

    def _from_url(self, client_class: type[Any], url: str) -> tuple[Any, list[str]]:
        self.validate_url(url)
        client = client_class.from_url(url, decode_responses=True, **DEFAULT_TIMEOUTS)
        return client, self._url_secrets(url)

    def open_sync(self, url: str) -> RedisLike:
        client, secrets = self._from_url(self.sync_client, url)
        return SyncRedisBackend(self, client, owned=True, secrets=secrets)

    def open_async(self, url: str) -> AsyncRedisLike:
        client, secrets = self._from_url(self.async_client, url)
        return AsyncRedisBackend(self, client, owned=True, secrets=secrets)

    def adopt_sync(self, client: object) -> RedisLike | None:
        if isinstance(client, self.async_client):
            raise ConfigurationError(
                f"{type(client).__name__} is an asyncio client: use it with AsyncState, "
                f"or pass a {self.sync_client.__module__}.{self.sync_client.__name__} to State"
            )
        if not isinstance(client, self.sync_client):
            return None
        return SyncRedisBackend(self, client, owned=False, secrets=self._client_secrets(client))

    def adopt_async(self, client: object) -> AsyncRedisLike | None:
        if isinstance(client, self.sync_client):
            raise ConfigurationError(
                f"{type(client).__name__} is a blocking client: use it with State, "
                f"or pass a {self.async_client.__module__}.{self.async_client.__name__} "
                "to AsyncState"
            )
        if not isinstance(client, self.async_client):
            return None
        return AsyncRedisBackend(self, client, owned=False, secrets=self._client_secrets(client))
