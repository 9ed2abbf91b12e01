"""The coredis backend: clients built from our URLs, replies normalised, errors mapped."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import coredis
import coredis.exceptions
from coredis.connection import TCPLocation
from coredis.retry import ExponentialBackoffRetryPolicy
from coredis.tokens import PureToken
from coredis.typing import Node

from chat_state.backend import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    RETRIES,
    SCAN_COUNT,
    Args,
    AsyncBackend,
    Backend,
    NoScriptError,
    PortalBackend,
    RedisURL,
    anext_or_none,
    backend_error,
    configuration_error,
    normalised,
    parse_redis_url,
    scan_pattern,
    script_call,
    set_options,
    spawn_detached,
    text,
)
from chat_state.errors import BackendError, ConfigurationError

__all__ = ["BACKEND", "AsyncCoredisBackend", "CoredisFactory"]


#: As for redis-py: retry a failed connection a few times, briefly; never a timeout.

#: redis-py's option names (in :class:`RedisURL`) → coredis's.
_RENAMED = {"socket_timeout": "stream_timeout", "socket_connect_timeout": "connect_timeout"}


def _kwargs(options: dict[str, Any]) -> dict[str, Any]:
    return {_RENAMED.get(name, name): value for name, value in options.items()}


def _retry_policy() -> ExponentialBackoffRetryPolicy:
    return ExponentialBackoffRetryPolicy(
        (coredis.exceptions.ConnectionError,),
        RETRIES,
        base_delay=BACKOFF_BASE_S,
        max_delay=BACKOFF_CAP_S,
    )


async def _set(client: Any, args: Args) -> str | None:
    """SET key value [PX ms] [NX]: OK when written (coredis says True / False)."""
    try:
        px, nx = set_options(args)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    condition = PureToken.NX if nx else None
    written = await client.set(args[1], args[2], px=px, condition=condition)
    return "OK" if written else None


def _script(run: Callable[[Any], Callable[..., Awaitable[Any]]]) -> Callable[..., Awaitable[Any]]:
    """EVALSHA / EVAL sha-or-source numkeys key... arg..., as coredis takes them."""

    def call(client: Any, args: Args) -> Awaitable[Any]:
        script, keys, argv = script_call(args)
        return run(client)(script, keys, argv)

    return call


#: The commands chat-state sends (see chat_state.backend.interface), as coredis calls.
_COMMANDS: dict[str, Callable[[Any, Args], Awaitable[Any]]] = {
    "PING": lambda client, args: client.ping(),
    "HELLO": lambda client, args: client.hello(),
    "GET": lambda client, args: client.get(args[1]),
    "SET": _set,
    "DEL": lambda client, args: client.delete([args[1]]),
    "SADD": lambda client, args: client.sadd(args[1], [args[2]]),
    "SREM": lambda client, args: client.srem(args[1], [args[2]]),
    "SISMEMBER": lambda client, args: client.sismember(args[1], args[2]),
    "LPOP": lambda client, args: client.lpop(args[1]),
    "LLEN": lambda client, args: client.llen(args[1]),
    "LRANGE": lambda client, args: client.lrange(args[1], args[2], args[3]),
    "EVALSHA": _script(lambda client: client.evalsha),
    "EVAL": _script(lambda client: client.eval),
    # inspection
    "SCARD": lambda client, args: client.scard(args[1]),
    "SSCAN": lambda client, args: client.sscan(args[1], int(args[2]), count=int(args[4])),
    "UNLINK": lambda client, args: client.unlink(list(args[1:])),
    "INFO": lambda client, args: client.info(),
}


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
    """:class:`~chat_state.backend.AsyncBackend` over a coredis client.

    Args:
        client: A ``coredis.Redis`` or ``coredis.RedisCluster``.
        enter: What the first command (``connect()``'s PING) enters for a client we created
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

    async def _enter_client(self) -> None:
        """Enter the client (in a task of its own) on the first connect."""
        owner = _Owner(self._enter)
        await owner.start()
        if owner.error is not None:
            await owner.stop()
            if isinstance(owner.error, coredis.exceptions.RedisError):
                raise backend_error("coredis", owner.error, self._secrets) from owner.error
            raise owner.error
        self._owner = owner

    async def call(self, key: str | None, args: Args) -> Any:
        if self._enter and self._owner is None:  # connect(): PING is the first command
            await self._enter_client()
            try:
                return await self._run(args)
            except BaseException:
                owner, self._owner = self._owner, None
                if owner is not None:
                    with anyio.CancelScope(shield=True):
                        await owner.stop()
                raise
        return await self._run(args)

    async def _run(self, args: Args) -> Any:
        try:
            command = _COMMANDS.get(str(args[0]))
            if command is None:  # as a server answers one it does not know
                raise BackendError(f"ERR unknown command '{args[0]}'")
            return normalised(await command(self._client, args))
        except coredis.exceptions.NoScriptError as exc:
            raise NoScriptError(str(exc)) from exc
        except (coredis.exceptions.RedisError, UnicodeDecodeError) as exc:
            raise backend_error("coredis", exc, self._secrets) from exc

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        # coredis's cluster client scans every primary in turn.
        keys = self._client.scan_iter(match=scan_pattern(prefix), count=SCAN_COUNT)
        while True:
            try:
                key = await anext_or_none(keys)
            except (coredis.exceptions.RedisError, UnicodeDecodeError) as exc:
                raise backend_error("coredis", exc, self._secrets) from exc
            if key is None:
                return
            yield text(key)

    async def aclose(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            await owner.stop()


class CoredisFactory:
    """The :class:`~chat_state.backend.BackendFactory` for coredis (``driver="coredis"``)."""

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

    def open_async(self, url: str) -> AsyncBackend:
        parsed = parse_redis_url(url)
        try:
            client, enter = self._build(parsed)
        except (TypeError, ValueError) as exc:
            error = configuration_error("cannot build a coredis client", exc, parsed.secrets)
        else:
            return AsyncCoredisBackend(client, enter=enter, secrets=parsed.secrets)
        raise error

    def open_sync(self, url: str) -> Backend:
        parse_redis_url(url)
        return PortalBackend(lambda: self.open_async(url))

    def adopt_async(self, client: object) -> AsyncBackend | None:
        if not isinstance(client, (coredis.Redis, coredis.RedisCluster)):
            return None
        return AsyncCoredisBackend(client, enter=(), secrets=())

    def adopt_sync(self, client: object) -> Backend | None:
        if isinstance(client, (coredis.Redis, coredis.RedisCluster)):
            raise ConfigurationError(
                "coredis clients are async: pass this one to AsyncState; State runs coredis "
                'from a URL with driver="coredis", through an anyio portal'
            )
        return None


BACKEND = CoredisFactory()
