"""The backend for redis-py and its fork valkey-py, written once.

:class:`RedisFamily` is parameterised by the client package (``redis`` or
``valkey``) and the names of its classes; ``chat_state_redis`` and
``chat_state_valkey`` bind it. It builds standalone, unix-socket, Cluster and
Sentinel clients (sync and asyncio) from a :class:`~chat_state._urls.RedisURL`,
recognises such clients when the application passes one, normalises replies
(``bytes`` → ``str``, RESP2/RESP3 booleans and integers) and maps the library's
exceptions to ours, with passwords scrubbed from every message.
"""

from __future__ import annotations

import functools
import importlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, TypeVar

from . import _blocking, _mux, _routes, _wire
from ._loops import on_asyncio
from ._replies import anext_or_none, backend_error, configuration_error, glob_escape, text
from ._urls import RedisURL, parse_redis_url
from .errors import BackendError, ConfigurationError
from .protocols import Arg, AsyncRedisLike, NoScriptError, RedisLike

__all__ = ["RedisFamily"]

T = TypeVar("T")

#: Retries of a command whose connection failed, with a short bounded backoff, so an
#: operation during a failover fails fast (BackendError) instead of hanging. Timeouts
#: are not retried: the server may have run the command.
RETRIES = 3
BACKOFF_CAP_S = 0.25
BACKOFF_BASE_S = 0.025
SCAN_COUNT = 1000


class _Base:
    """What the sync and async wrappers share: the client, ownership, error mapping."""

    def __init__(
        self,
        family: RedisFamily,
        client: Any,
        *,
        owned: Sequence[Any],
        secrets: Sequence[str],
    ) -> None:
        self._family = family
        self._client = client
        self._owned = tuple(owned)  # clients we created and must close (none if adopted)
        self._secrets = tuple(secrets)
        self._scan_kwargs: dict[str, Any] = {"count": SCAN_COUNT}
        if isinstance(client, family.cluster_types):
            self._scan_kwargs["target_nodes"] = client.PRIMARIES

    @property
    def client(self) -> Any:
        return self._client

    def _error(self, exc: Exception) -> Exception:
        if isinstance(exc, self._family.noscript_error):
            return NoScriptError(str(exc))
        return self._family.backend_error(exc, self._secrets)


class SyncRedisBackend(_Base):
    """:class:`~chat_state.protocols.RedisLike` over a blocking redis-py/valkey-py client."""

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except self._family.errors as exc:
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
        return text(self._call(self._client.get, key))  # type: ignore[no-any-return]

    def delete(self, key: str) -> int:
        return int(self._call(self._client.delete, key))

    def lpop(self, key: str) -> str | None:
        return text(self._call(self._client.lpop, key))  # type: ignore[no-any-return]

    def llen(self, key: str) -> int:
        return int(self._call(self._client.llen, key))

    def lrange(self, key: str, start: int, stop: int) -> list[str]:
        return [text(item) for item in self._call(self._client.lrange, key, start, stop)]

    def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(self._call(self._client.evalsha, sha, len(keys), *keys, *args))

    def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(self._call(self._client.eval, source, len(keys), *keys, *args))

    def scan_prefix(self, prefix: str) -> Iterator[str]:
        keys = self._client.scan_iter(match=glob_escape(prefix) + "*", **self._scan_kwargs)
        while (key := self._call(next, keys, None)) is not None:
            yield text(key)

    def close(self) -> None:
        for client in self._owned:
            self._call(client.close)


class AsyncRedisBackend(_Base):
    """:class:`~chat_state.protocols.AsyncRedisLike` over an asyncio redis-py/valkey-py client."""

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except self._family.errors as exc:
            raise self._error(exc) from exc

    async def ping(self) -> None:
        self._family.require_asyncio()
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
        return text(await self._call(self._client.get, key))  # type: ignore[no-any-return]

    async def delete(self, key: str) -> int:
        return int(await self._call(self._client.delete, key))

    async def lpop(self, key: str) -> str | None:
        return text(await self._call(self._client.lpop, key))  # type: ignore[no-any-return]

    async def llen(self, key: str) -> int:
        return int(await self._call(self._client.llen, key))

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        return [text(item) for item in await self._call(self._client.lrange, key, start, stop)]

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(await self._call(self._client.evalsha, sha, len(keys), *keys, *args))

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(await self._call(self._client.eval, source, len(keys), *keys, *args))

    async def scan_prefix(self, prefix: str) -> AsyncIterator[str]:
        keys = self._client.scan_iter(match=glob_escape(prefix) + "*", **self._scan_kwargs)
        while (key := await self._call(anext_or_none, keys)) is not None:
            yield text(key)

    async def aclose(self) -> None:
        for client in self._owned:
            await self._call(client.aclose)


class RedisFamily:
    """A :class:`~chat_state.protocols.BackendFactory` for redis-py or valkey-py.

    Args:
        package: The client package's name (``"redis"`` or ``"valkey"``).
        client_class: Its standalone client's name (``"Redis"`` / ``"Valkey"``),
            found both in the package and in its ``asyncio`` subpackage.
        cluster_class: Its cluster client's name (``"RedisCluster"`` / ``"ValkeyCluster"``),
            in ``<package>.cluster`` and ``<package>.asyncio.cluster``.
        base_error: Its base exception's name (``"RedisError"`` / ``"ValkeyError"``).
        cluster_error: The cluster clients' own base exception, which does not derive
            from ``base_error`` (``"RedisClusterException"`` / ``"ValkeyClusterException"``).
    """

    def __init__(
        self,
        package: str,
        *,
        client_class: str,
        cluster_class: str,
        base_error: str,
        cluster_error: str,
    ) -> None:
        def load(name: str) -> ModuleType:
            return importlib.import_module(f"{package}.{name}" if name else package)

        sync, asyncio = load(""), load("asyncio")
        sync_cluster, async_cluster = load("cluster"), load("asyncio.cluster")
        self.name = package
        self.sync_client: type[Any] = getattr(sync, client_class)
        self.async_client: type[Any] = getattr(asyncio, client_class)
        self.sync_cluster: type[Any] = getattr(sync_cluster, cluster_class)
        self.async_cluster: type[Any] = getattr(async_cluster, cluster_class)
        self.cluster_types = (self.sync_cluster, self.async_cluster)
        self._sync_node: type[Any] = sync_cluster.ClusterNode
        self._async_node: type[Any] = async_cluster.ClusterNode
        self._sync_sentinel: type[Any] = load("sentinel").Sentinel
        self._async_sentinel: type[Any] = load("asyncio.sentinel").Sentinel
        self._sync_retry: Callable[..., Any] = load("retry").Retry
        self._async_retry: Callable[..., Any] = load("asyncio.retry").Retry
        self._backoff: Callable[..., Any] = load("backoff").ExponentialBackoff
        self._key_slot: Callable[[bytes], int] = load("crc").key_slot
        exceptions = load("exceptions")
        #: Every exception of the library that a command can raise (an application's
        #: client that decodes strictly raises UnicodeDecodeError on bytes not UTF-8).
        self.errors: tuple[type[Exception], ...] = (
            getattr(exceptions, base_error),
            getattr(exceptions, cluster_error),
            UnicodeDecodeError,
        )
        self.noscript_error: type[Exception] = exceptions.NoScriptError
        self._connection_error: type[Exception] = exceptions.ConnectionError

    def __repr__(self) -> str:
        return f"<RedisFamily {self.name}>"

    def backend_error(self, exc: Exception, secrets: Sequence[str]) -> BackendError:
        """Our error for the library's ``exc``, with every secret scrubbed."""
        return backend_error(self.name, exc, secrets)

    # -- building clients -----------------------------------------------------------

    def validate_url(self, url: str) -> None:
        parse_redis_url(url)

    def _retry(self, retry_class: Callable[..., Any]) -> Any:
        backoff = self._backoff(cap=BACKOFF_CAP_S, base=BACKOFF_BASE_S)
        return retry_class(backoff, RETRIES, supported_errors=(self._connection_error,))

    def _build(self, url: RedisURL, *, asynchronous: bool) -> tuple[Any, list[Any]]:
        """The client for ``url`` and every client to close with it."""
        # Bytes that are not UTF-8 (a third writer's) read as U+FFFD, as in TypeScript.
        kwargs = {**url.connection_kwargs(), "encoding_errors": "replace"}
        retry = self._retry(self._async_retry if asynchronous else self._sync_retry)
        if url.topology == "cluster":
            cluster = self.async_cluster if asynchronous else self.sync_cluster
            node = self._async_node if asynchronous else self._sync_node
            nodes = [node(host, port) for host, port in url.hosts]
            client = cluster(startup_nodes=nodes, retry=retry, **kwargs)
            return client, [client]
        if url.topology == "sentinel":
            sentinel_class = self._async_sentinel if asynchronous else self._sync_sentinel
            sentinel = sentinel_class(
                list(url.hosts), sentinel_kwargs=url.sentinel_kwargs(), retry=retry, **kwargs
            )
            master = sentinel.master_for(url.service, db=url.db)
            return master, [master, *sentinel.sentinels]
        client_class = self.async_client if asynchronous else self.sync_client
        if url.topology == "unix":
            client = client_class(unix_socket_path=url.path, db=url.db, retry=retry, **kwargs)
        else:
            host, port = url.hosts[0]
            client = client_class(host=host, port=port, db=url.db, retry=retry, **kwargs)
        return client, [client]

    def _open(self, url_text: str, *, asynchronous: bool) -> tuple[Any, list[Any], list[str]]:
        url = parse_redis_url(url_text)
        try:
            # A blocking cluster client connects (and can fail) as it is built.
            client, owned = self._build(url, asynchronous=asynchronous)
        except self.errors as exc:
            raise self.backend_error(exc, url.secrets) from exc
        except (TypeError, ValueError) as exc:
            error = configuration_error(f"cannot build a {self.name} client", exc, url.secrets)
        else:
            return client, owned, url.secrets
        raise error

    def open_sync(self, url: str) -> RedisLike:
        parsed = parse_redis_url(url)
        if parsed.own_connections:
            return _blocking.BlockingBackend(self._plan(url, parsed, asynchronous=False))
        client, owned, secrets = self._open(url, asynchronous=False)
        return SyncRedisBackend(self, client, owned=owned, secrets=secrets)

    def require_asyncio(self) -> None:
        """Refuse, clearly, to run the asyncio client under another event loop."""
        if not on_asyncio():
            raise ConfigurationError(
                f"{self.name}'s asyncio client runs only under asyncio, and this is "
                'another event loop (trio?): use driver="coredis" or memory:// there'
            )

    def open_async(self, url: str) -> AsyncRedisLike:
        self.require_asyncio()
        parsed = parse_redis_url(url)
        if parsed.own_connections:
            return _mux.MultiplexedBackend(self._plan(url, parsed, asynchronous=True))
        client, owned, secrets = self._open(url, asynchronous=True)
        return AsyncRedisBackend(self, client, owned=owned, secrets=secrets)

    @staticmethod
    def _tls(url: RedisURL) -> ssl.SSLContext | None:
        """The TLS context of chat-state's own connections for ``url`` (None without TLS)."""
        if not url.tls:
            return None
        options = {k.removeprefix("ssl_"): v for k, v in url.tls_kwargs().items() if k != "ssl"}
        try:
            return _wire.ssl_context(**options)
        except (OSError, ValueError) as exc:
            error = configuration_error("cannot set up TLS", exc, url.secrets)
        raise error

    @classmethod
    def _settings(cls, url: RedisURL, sentinel: bool = False) -> _wire.Settings:
        """How chat-state's own connections to the data nodes (or the Sentinels) open."""
        tls = cls._tls(url)
        timeouts = (url.connect_timeout, url.socket_timeout)
        if sentinel:
            kwargs = url.sentinel_kwargs()
            return _wire.Settings(*timeouts, kwargs["username"], kwargs["password"], tls=tls)
        return _wire.Settings(
            *timeouts,
            url.username,
            url.password,
            url.db,
            tls,
            primary_only=url.topology == "sentinel",
        )

    def _plan(self, url_text: str, url: RedisURL, *, asynchronous: bool) -> _wire.Plan:
        """chat-state's own connections for ``url_text`` (parsed: ``url``): one server,
        or the routes of a Sentinel group or a Cluster."""
        plan = functools.partial(
            _wire.Plan,
            self.name,
            tuple(url.secrets),
            self._settings(url),
            self._settings(url, sentinel=True),
            lambda: self._open(url_text, asynchronous=asynchronous)[:2],
        )
        hosts = [_wire.Address(host, port) for host, port in url.hosts]
        if url.topology == "cluster":
            return plan(routes=_routes.ClusterRoutes(hosts, self._key_slot))
        if url.topology == "sentinel":
            assert url.service is not None
            return plan(routes=_routes.SentinelRoutes(hosts, url.service))
        if url.topology == "unix":
            return plan(address=_wire.Address(path=url.path))
        return plan(address=hosts[0])

    # -- adopting the application's clients -----------------------------------------------

    @staticmethod
    def _client_secrets(client: Any) -> list[str]:
        holders = (
            getattr(getattr(client, "connection_pool", None), "connection_kwargs", None),
            getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None),
            getattr(client, "connection_kwargs", None),
        )
        return [
            holder["password"]
            for holder in holders
            if isinstance(holder, dict) and isinstance(holder.get("password"), str)
        ]

    def adopt_sync(self, client: object) -> RedisLike | None:
        if isinstance(client, (self.async_client, self.async_cluster)):
            raise ConfigurationError(
                f"{type(client).__name__} is an asyncio client: use it with AsyncState, "
                f"or pass a blocking {self.name} client to State"
            )
        if not isinstance(client, (self.sync_client, self.sync_cluster)):
            return None
        return SyncRedisBackend(self, client, owned=(), secrets=self._client_secrets(client))

    def adopt_async(self, client: object) -> AsyncRedisLike | None:
        if isinstance(client, (self.sync_client, self.sync_cluster)):
            raise ConfigurationError(
                f"{type(client).__name__} is a blocking client: use it with State, "
                f"or pass an asyncio {self.name} client to AsyncState"
            )
        if not isinstance(client, (self.async_client, self.async_cluster)):
            return None
        return AsyncRedisBackend(self, client, owned=(), secrets=self._client_secrets(client))
