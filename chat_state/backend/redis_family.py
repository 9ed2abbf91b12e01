"""The backend for redis-py and its fork valkey-py, written once.

:class:`RedisFamily` is parameterised by the client package (``redis`` or
``valkey``) and the names of its classes; ``chat_state_redis`` and
``chat_state_valkey`` bind it. It builds standalone, unix-socket, Cluster and
Sentinel clients (sync and asyncio) from a :class:`~chat_state.backend.RedisURL`,
recognises such clients when the application passes one, normalises replies
(``bytes`` → ``str``, RESP2/RESP3 booleans and integers) and maps the library's
exceptions to ours, with passwords scrubbed from every message.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from chat_state import connections
from chat_state.errors import BackendError, ConfigurationError

from .errors import backend_error, configuration_error
from .interface import Args, AsyncBackend, Backend, NodeReply, NoScriptError
from .loops import on_asyncio
from .policy import BACKOFF_BASE_S, BACKOFF_CAP_S, RETRIES, SCAN_COUNT
from .replies import anext_or_none, normalised, scan_pattern, text
from .urls import RedisURL, parse_redis_url

__all__ = ["RedisFamily"]


#: Retries of a command whose connection failed, with a short bounded backoff, so an
#: operation during a failover fails fast (BackendError) instead of hanging. Timeouts
#: are not retried: the server may have run the command.


class _Base:
    """What the sync and async wrappers share: the client, ownership, error mapping."""

    _each_primary: Callable[[Args], Any]  # (each wrapper's, for a Cluster client)

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
            # Health checks and stats() ask each primary (a plain client: one answer).
            self.each_primary = self._each_primary

    @property
    def client(self) -> Any:
        return self._client

    def _error(self, exc: Exception) -> BackendError:
        if isinstance(exc, self._family.noscript_error):
            return NoScriptError(str(exc))
        return self._family.backend_error(exc, self._secrets)

    def peer(self, key: str | None) -> tuple[str, int | None] | None:
        """Where a command on ``key`` would go now, as far as the client tells."""
        client = self._client
        if isinstance(client, self._family.cluster_types):
            try:
                node = client.get_node_from_key(key) if key else client.get_default_node()
            except self._family.errors:  # no slot table yet
                return None
            return None if node is None else (node.host, node.port)
        kwargs = getattr(client.connection_pool, "connection_kwargs", {})
        if "path" in kwargs:
            return kwargs["path"], None
        if "host" in kwargs:  # (a Sentinel group's primary is not known here)
            return kwargs["host"], kwargs.get("port")
        return None

    def _pattern(self, prefix: str) -> dict[str, Any]:
        return {"match": scan_pattern(prefix), **self._scan_kwargs}


class SyncRedisBackend(_Base):
    """:class:`~chat_state.backend.Backend` over a blocking redis-py/valkey-py client."""

    def call(self, key: str | None, args: Args) -> Any:
        try:
            if key is None:
                return normalised(self._client.execute_command(*args))
            # keys=: what the library's own methods pass (client-side caching uses it)
            return normalised(self._client.execute_command(*args, keys=[key]))
        except self._family.errors as exc:
            raise self._error(exc) from exc

    def _each_primary(self, args: Args) -> list[NodeReply]:
        """A Cluster client's ``each_primary``: ``args`` on each of its primaries."""
        replies = []
        for node in self._client.get_primaries():
            started = time.monotonic()
            try:
                reply = normalised(self._client.execute_command(*args, target_nodes=node))
            except self._family.errors as exc:
                reply = self._error(exc)
            replies.append(NodeReply(f"{node.host}:{node.port}", reply, time.monotonic() - started))
        return replies

    def scan(self, prefix: str) -> Iterator[str]:
        keys = self._client.scan_iter(**self._pattern(prefix))
        while True:
            try:
                key = next(keys, None)
            except self._family.errors as exc:
                raise self._error(exc) from exc
            if key is None:
                return
            yield text(key)

    def close(self) -> None:
        for client in self._owned:
            try:
                client.close()
            except self._family.errors as exc:
                raise self._error(exc) from exc


class AsyncRedisBackend(_Base):
    """:class:`~chat_state.backend.AsyncBackend` over an asyncio redis-py/valkey-py client."""

    async def call(self, key: str | None, args: Args) -> Any:
        if args[0] == "PING":  # what connect() sends first
            self._family.require_asyncio()
        try:
            if key is None:
                return normalised(await self._client.execute_command(*args))
            return normalised(await self._client.execute_command(*args, keys=[key]))
        except self._family.errors as exc:
            raise self._error(exc) from exc

    async def _each_primary(self, args: Args) -> list[NodeReply]:
        """A Cluster client's ``each_primary``: ``args`` on each of its primaries."""
        replies = []
        for node in self._client.get_primaries():
            started = time.monotonic()
            try:
                reply = normalised(await self._client.execute_command(*args, target_nodes=node))
            except self._family.errors as exc:
                reply = self._error(exc)
            replies.append(NodeReply(f"{node.host}:{node.port}", reply, time.monotonic() - started))
        return replies

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        keys = self._client.scan_iter(**self._pattern(prefix))
        while True:
            try:
                key = await anext_or_none(keys)
            except self._family.errors as exc:
                raise self._error(exc) from exc
            if key is None:
                return
            yield text(key)

    async def aclose(self) -> None:
        for client in self._owned:
            try:
                await client.aclose()
            except self._family.errors as exc:
                raise self._error(exc) from exc


def _dropping_failed_reads(connection_class: type[Any]) -> type[Any]:
    """``connection_class``, but a read that fails (a timeout above all) drops the
    connection, as the library's other connections do.

    redis-py's blocking ``SentinelManagedConnection`` reads with
    ``disconnect_on_error=False``, and a timeout is not among the errors its retry
    closes a connection for: the connection went back to the pool with the late reply
    still unread, and the next command on it read that reply as its own (a ``GET b``
    answered ``GET a``'s value, tested in ``tests/test_health.py``).
    """

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("disconnect_on_error", True)
        return super(dropping, self).read_response(*args, **kwargs)

    dropping: type[Any] = type(
        connection_class.__name__, (connection_class,), {"read_response": read_response}
    )
    return dropping


class RedisFamily:
    """A :class:`~chat_state.backend.BackendFactory` for redis-py or valkey-py.

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
        sentinel = load("sentinel")
        self._sync_sentinel: type[Any] = sentinel.Sentinel
        #: The blocking Sentinel client's connections, plain and TLS, made to drop a
        #: connection whose read failed (see :func:`_dropping_failed_reads`).
        self._sync_sentinel_connections: tuple[type[Any], type[Any]] = (
            _dropping_failed_reads(sentinel.SentinelManagedConnection),
            _dropping_failed_reads(sentinel.SentinelManagedSSLConnection),
        )
        self._async_sentinel: type[Any] = load("asyncio.sentinel").Sentinel
        self._sync_retry: Callable[..., Any] = load("retry").Retry
        self._async_retry: Callable[..., Any] = load("asyncio.retry").Retry
        self._backoff: Callable[..., Any] = load("backoff").ExponentialBackoff
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
            if not asynchronous:  # the class says TLS or not (as the pool would choose)
                plain, tls = self._sync_sentinel_connections
                kwargs["connection_class"] = tls if kwargs.pop("ssl", False) else plain
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

    def open_sync(self, url: str) -> Backend:
        parsed = parse_redis_url(url)
        if parsed.own_connections:
            return connections.open_sync(parsed, self._library_client(url, asynchronous=False))
        client, owned, secrets = self._open(url, asynchronous=False)
        return SyncRedisBackend(self, client, owned=owned, secrets=secrets)

    def require_asyncio(self) -> None:
        """Refuse, clearly, to run the asyncio client under another event loop."""
        if not on_asyncio():
            raise ConfigurationError(
                f"{self.name}'s asyncio client runs only under asyncio, and this is "
                'another event loop (trio?): use driver="coredis" or memory:// there'
            )

    def open_async(self, url: str) -> AsyncBackend:
        self.require_asyncio()
        parsed = parse_redis_url(url)
        if parsed.own_connections:
            return connections.open_async(parsed, self._library_client(url, asynchronous=True))
        client, owned, secrets = self._open(url, asynchronous=True)
        return AsyncRedisBackend(self, client, owned=owned, secrets=secrets)

    def _library_client(self, url: str, *, asynchronous: bool) -> connections.LibraryClient:
        """What makes ``get_client()``'s client for chat-state's own connections."""
        return lambda: self._open(url, asynchronous=asynchronous)[:2]

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

    def adopt_sync(self, client: object) -> Backend | None:
        if isinstance(client, (self.async_client, self.async_cluster)):
            raise ConfigurationError(
                f"{type(client).__name__} is an asyncio client: use it with AsyncState, "
                f"or pass a blocking {self.name} client to State"
            )
        if not isinstance(client, (self.sync_client, self.sync_cluster)):
            return None
        return SyncRedisBackend(self, client, owned=(), secrets=self._client_secrets(client))

    def adopt_async(self, client: object) -> AsyncBackend | None:
        if isinstance(client, (self.sync_client, self.sync_cluster)):
            raise ConfigurationError(
                f"{type(client).__name__} is a blocking client: use it with State, "
                f"or pass an asyncio {self.name} client to AsyncState"
            )
        if not isinstance(client, (self.async_client, self.async_cluster)):
            return None
        return AsyncRedisBackend(self, client, owned=(), secrets=self._client_secrets(client))
