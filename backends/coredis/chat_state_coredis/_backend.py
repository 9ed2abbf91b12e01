"""The coredis backend: clients built from our URLs, replies normalised, errors mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions
from coredis.connection import TCPLocation
from coredis.retry import ExponentialBackoffRetryPolicy
from coredis.tokens import PureToken
from coredis.typing import Node

from chat_state._loops import spawn_detached
from chat_state._portal import PortalBackend
from chat_state._replies import (
    anext_or_none,
    backend_error,
    configuration_error,
    glob_escape,
    text,
)
from chat_state._urls import RedisURL, parse_redis_url
from chat_state.errors import ConfigurationError
from chat_state.protocols import Arg, AsyncRedisLike, NoScriptError, RedisLike

__all__ = ["BACKEND", "AsyncCoredisBackend", "CoredisFactory"]

T = TypeVar("T")

#: As for redis-py: retry a failed connection a few times, briefly; never a timeout.
RETRIES = 3
BACKOFF_BASE_S = 0.025
BACKOFF_MAX_S = 0.25
SCAN_COUNT = 1000

#: redis-py's option names (in :class:`RedisURL`) → coredis's.
_RENAMED = {"socket_timeout": "stream_timeout", "socket_connect_timeout": "connect_timeout"}


def _kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {_RENAMED.get(name, name): value for name, value in options.items()}


def _retry_policy() -> ExponentialBackoffRetryPolicy:
    return ExponentialBackoffRetryPolicy(
        (coredis.exceptions.ConnectionError,),
        RETRIES,
        base_delay=BACKOFF_BASE_S,
        max_delay=BACKOFF_MAX_S,
    )


class _Owner:
    """A task of its own that enters a client's contexts and exits them when told.

    coredis clients must be entered and exited in one task; this task is it, so
    ``connect()`` and ``disconnect()`` may run in any tasks, in any order.
    """

    def __init__(self, contexts: Sequence[Any]) -> None:
        self._contexts = contexts
        self._entered = anyio.Event()
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self.error: BaseException | None = None

    async def _run(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                for context in self._contexts:
                    await stack.enter_async_context(context)
                self._entered.set()
                await self._stop.wait()
        except Exception as exc:  # entering failed: start() reports it to its caller
            self.error = exc
        finally:
            self._entered.set()
            self._done.set()

    async def start(self) -> None:
        spawn_detached(self._run)
        await self._entered.wait()

    async def stop(self) -> None:
        self._stop.set()
        await self._done.wait()


class AsyncCoredisBackend:
    """:class:`~chat_state.protocols.AsyncRedisLike` over a coredis client.

    Args:
        client: A ``coredis.Redis`` or ``coredis.RedisCluster``.
        enter: What ``ping()`` (that is, ``connect()``) enters for a client we created
            (the client, and the Sentinel it came from); empty for the application's.
        secrets: Passwords to scrub from error messages.
    """

    def __init__(self, client: Any, *, enter: Sequence[Any], secrets: Sequence[str]) -> None:
        self._client = client
        self._enter = tuple(enter)
        self._secrets = tuple(secrets)
        self._owner: _Owner | None = None

    @property
    def client(self) -> Any:
        return self._client

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        try:
            return await fn(*args, **kwargs)
        except coredis.exceptions.NoScriptError as exc:
            raise NoScriptError(str(exc)) from exc
        except (coredis.exceptions.RedisError, UnicodeDecodeError) as exc:
            raise backend_error("coredis", exc, self._secrets) from exc

    async def ping(self) -> None:
        if self._enter and self._owner is None:
            owner = _Owner(self._enter)
            await owner.start()
            if owner.error is not None:
                await owner.stop()
                if isinstance(owner.error, coredis.exceptions.RedisError):
                    raise backend_error("coredis", owner.error, self._secrets) from owner.error
                raise owner.error
            try:
                await self._call(self._client.ping)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await owner.stop()
                raise
            self._owner = owner
            return
        await self._call(self._client.ping)

    async def sadd(self, key: str, member: str) -> int:
        return int(await self._call(self._client.sadd, key, [member]))

    async def srem(self, key: str, member: str) -> int:
        return int(await self._call(self._client.srem, key, [member]))

    async def sismember(self, key: str, member: str) -> bool:
        return bool(await self._call(self._client.sismember, key, member))

    async def set(self, key: str, value: str, px: int | None, nx: bool) -> bool:
        condition = PureToken.NX if nx else None
        return bool(await self._call(self._client.set, key, value, px=px, condition=condition))

    async def get(self, key: str) -> str | None:
        return text(await self._call(self._client.get, key))  # type: ignore[no-any-return]

    async def delete(self, key: str) -> int:
        return int(await self._call(self._client.delete, [key]))

    async def lpop(self, key: str) -> str | None:
        return text(await self._call(self._client.lpop, key))  # type: ignore[no-any-return]

    async def llen(self, key: str) -> int:
        return int(await self._call(self._client.llen, key))

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        return [text(item) for item in await self._call(self._client.lrange, key, start, stop)]

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(await self._call(self._client.evalsha, sha, list(keys), list(args)))

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return text(await self._call(self._client.eval, source, list(keys), list(args)))

    async def scan_prefix(self, prefix: str) -> AsyncIterator[str]:
        # coredis's cluster client scans every primary in turn.
        keys = self._client.scan_iter(match=glob_escape(prefix) + "*", count=SCAN_COUNT)
        while (key := await self._call(anext_or_none, keys)) is not None:
            yield text(key)

    async def aclose(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            await owner.stop()


class CoredisFactory:
    """The :class:`~chat_state.protocols.BackendFactory` for coredis (``driver="coredis"``)."""

    name = "coredis"

    def __repr__(self) -> str:
        return "<CoredisFactory>"

    def validate_url(self, url: str) -> None:
        parse_redis_url(url)

    def _build(self, url: RedisURL) -> tuple[Any, list[Any]]:
        """The client for ``url``, and what to enter (and later exit) with it."""
        kwargs = _kwargs(url.connection_kwargs())
        kwargs["retry_policy"] = _retry_policy()
        # coredis decodes strictly; take bytes, and decode them as TypeScript does (U+FFFD).
        kwargs["decode_responses"] = False
        if url.topology == "cluster":
            nodes = [Node(host=host, port=port) for host, port in url.hosts]
            cluster = coredis.RedisCluster(startup_nodes=nodes, **kwargs)
            return cluster, [cluster]
        if url.topology == "sentinel":
            sentinel_kwargs = _kwargs(url.sentinel_kwargs())
            sentinels = [TCPLocation(host, port) for host, port in url.hosts]
            sentinel = coredis.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs)
            primary = sentinel.primary_for(url.service or "", db=url.db)
            return primary, [sentinel, primary]
        if url.topology == "unix":
            client = coredis.Redis(None, None, url.db, unix_socket_path=url.path, **kwargs)
        else:
            host, port = url.hosts[0]
            client = coredis.Redis(host, port, url.db, **kwargs)
        return client, [client]

    def open_async(self, url: str) -> AsyncRedisLike:
        parsed = parse_redis_url(url)
        try:
            client, enter = self._build(parsed)
        except (TypeError, ValueError) as exc:
            error = configuration_error("cannot build a coredis client", exc, parsed.secrets)
        else:
            return AsyncCoredisBackend(client, enter=enter, secrets=parsed.secrets)
        raise error

    def open_sync(self, url: str) -> RedisLike:
        parse_redis_url(url)
        return PortalBackend(lambda: self.open_async(url))

    def adopt_async(self, client: object) -> AsyncRedisLike | None:
        if not isinstance(client, (coredis.Redis, coredis.RedisCluster)):
            return None
        return AsyncCoredisBackend(client, enter=(), secrets=())

    def adopt_sync(self, client: object) -> RedisLike | None:
        if isinstance(client, (coredis.Redis, coredis.RedisCluster)):
            raise ConfigurationError(
                "coredis clients are async: pass this one to AsyncState; State runs coredis "
                'from a URL with driver="coredis", through an anyio portal'
            )
        return None


BACKEND = CoredisFactory()
