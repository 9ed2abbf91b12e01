"""Concurrent commands on one connection per server: AsyncState's fast path.

redis-py's and valkey-py's asyncio clients take a pooled connection for each command
in flight, so 64 concurrent callers mean 64 sockets, 64 writes and 64 reads, and the
pool, not the server, sets the pace. Here each server node has one connection (a
:class:`Node`): every command issued during one turn of the event loop goes out in one
write, and the replies, which a server sends in the order of the commands, are
matched to their callers first in, first out. hiredis parses the replies and packs
the commands.

What holds on this path:

* A cancelled caller's command is written (or already was); its reply is read and
  dropped. No caller ever receives another's reply, and the stream stays in step.
* A connection that drops, or a reply that does not come within the timeout, fails
  every command in flight on it with :class:`ConnectionLost` (the command may or may not
  have run, so it is never sent again); the next command opens a new connection.
* Opening a connection is bounded by the connect timeout, and retried a few times
  with a short backoff; a command that could not be sent fails with
  :class:`ConnectFailed`.

:class:`Standalone` serves one server (TCP, TLS or a unix socket), :class:`Sentinel`
the primary that the Sentinels name (found again after a failover), and
:class:`Cluster` a Redis Cluster (one node per primary, slots from ``CLUSTER SLOTS``,
``MOVED``/``ASK``/``TRYAGAIN`` followed).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import hiredis

from ._replies import backend_error, glob_escape
from .protocols import NoScriptError

__all__ = [
    "Address",
    "BackendBase",
    "Cluster",
    "ConnectFailed",
    "ConnectionLost",
    "MultiplexedBackend",
    "Node",
    "Sentinel",
    "ServerError",
    "Settings",
    "Standalone",
]

Arg = str | int
Args = tuple[Arg, ...]

#: Attempts to open a connection before a command fails, and the backoff between them
#: (the same bounds as the pooled clients' retry policy).
CONNECT_ATTEMPTS = 4
BACKOFF_BASE_S = 0.025
BACKOFF_CAP_S = 0.25
#: Redirections and retries of one Cluster command (MOVED, ASK, TRYAGAIN, a node
#: that could not be reached) before it fails.
CLUSTER_ATTEMPTS = 16
SLOTS = 16384
SCAN_COUNT = 1000


class ConnectionLost(Exception):
    """The connection failed while the command was in flight (it may have run)."""


class ConnectFailed(ConnectionLost):
    """No connection could be opened, so the command was never sent."""


class ServerError(Exception):
    """The server answered a command with an error reply (hiredis builds these)."""


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def pack(args: Args) -> bytes:
    """One command in RESP. A lone surrogate in the text is written as "?", as redis-py does."""
    # hiredis's stub types the argument as a one-element tuple; it takes any length.
    try:
        packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    except UnicodeEncodeError:
        safe = tuple(a.encode("utf-8", "replace") if isinstance(a, str) else a for a in args)
        packed = hiredis.pack_command(safe)  # type: ignore[arg-type]
    return packed


def new_reader() -> hiredis.Reader:
    """A reply parser: text as ``str`` (U+FFFD for bytes that are not UTF-8, as in
    TypeScript), error replies as :class:`ServerError` values."""
    return hiredis.Reader(encoding="utf-8", errors="replace", replyError=ServerError)


def connect_delays() -> list[float]:
    """Seconds to wait before each attempt to open a connection."""
    return [0.0] + [backoff(attempt) for attempt in range(CONNECT_ATTEMPTS - 1)]


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (for futures whose reply nobody awaits)."""
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class Address:
    """Where a server listens: ``host`` and ``port``, or a unix socket ``path``."""

    host: str = ""
    port: int = 0
    path: str | None = None

    def __str__(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address:
        """``host:port`` (as in a MOVED reply) → an address."""
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))


@dataclass(frozen=True)
class Settings:
    """How to open and use a connection to a data node."""

    connect_timeout: float
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: ssl.SSLContext | None = None

    def handshake(self) -> list[tuple[Arg, ...]]:
        """The commands that prepare a new connection."""
        commands: list[tuple[Arg, ...]] = []
        if self.password is not None:
            user = () if self.username is None else (self.username,)
            commands.append(("AUTH", *user, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        return commands


class _Link(asyncio.Protocol):
    """One connection: writes batched per event-loop turn, replies matched in order."""

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout = timeout
        self._reader = new_reader()
        self._transport: asyncio.Transport | None = None
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()  # written
        self._outbox: list[bytes] = []  # packed, not yet written
        self._waiting: list[asyncio.Future[Any]] = []  # their futures
        self._timer: asyncio.TimerHandle | None = None
        self._failure: str | None = None
        self.closed = self._loop.create_future()  # done once the transport is gone

    @property
    def usable(self) -> bool:
        return self._failure is None and self._transport is not None

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's do not derive from asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader, pending = self._reader, self._pending
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                future = pending.popleft()[0]
                if not future.done():  # a cancelled caller's reply is dropped here
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.fail(f"the server's reply could not be read ({exc})")
        except IndexError:
            self.fail("the server sent a reply to no command")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("the connection was closed" + (f" ({exc})" if exc else ""))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- commands ---------------------------------------------------------------------

    def send(self, args: Args) -> asyncio.Future[Any]:
        """Queue ``args`` for this turn's write; → the future of its reply."""
        if self._failure is not None:
            raise ConnectionLost(self._failure)
        future = self._loop.create_future()
        self._outbox.append(pack(args))
        self._waiting.append(future)
        if len(self._outbox) == 1:
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self._failure is not None or self._transport is None:
            return  # fail() has failed the waiting futures
        deadline = self._loop.time() + self._timeout
        self._pending.extend((future, deadline) for future in self._waiting)
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._waiting = []
        self._transport.write(data)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._watch)

    def _watch(self) -> None:
        """Fail the connection if its oldest command has waited longer than the timeout."""
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0][1]
        if self._loop.time() >= deadline:
            self.fail(f"no reply within {self._timeout:g} s")
        else:
            self._timer = self._loop.call_at(deadline, self._watch)

    def fail(self, reason: str, *, graceful: bool = False) -> None:
        """Close the connection and fail everything queued or in flight on it."""
        if self._failure is None:
            self._failure = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            if graceful:
                self._transport.close()
            else:
                self._transport.abort()
        futures = [future for future, _ in self._pending] + self._waiting
        self._pending.clear()
        self._outbox.clear()
        self._waiting = []
        for future in futures:
            if not future.done():
                future.set_exception(ConnectionLost(self._failure))


async def _open_link(
    address: Address,
    settings: Settings,
    check: Callable[[_Link], Awaitable[None]] | None = None,
) -> _Link:
    """A new, prepared and checked connection (or OSError, TimeoutError, ConnectionLost...)."""
    loop = asyncio.get_running_loop()
    link = _Link(settings.timeout)
    try:
        with anyio.fail_after(settings.connect_timeout):
            if address.path is not None:
                await loop.create_unix_connection(lambda: link, address.path)
            else:
                await loop.create_connection(
                    lambda: link,
                    address.host,
                    address.port,
                    ssl=settings.tls,
                    server_hostname=address.host if settings.tls else None,
                )
        for future in [link.send(command) for command in settings.handshake()]:
            reply = await future
            if isinstance(reply, ServerError):
                raise reply
        if check is not None:
            await check(link)
    except BaseException:
        link.fail("the connection could not be prepared")
        raise
    return link


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


class Node:
    """One server and the connection to it, opened again whenever it has failed.

    ``locate`` says where the server is now (a Sentinel asks the Sentinels);
    ``check`` runs on each new connection (a Sentinel's primary must still be one).
    """

    def __init__(
        self,
        locate: Callable[[], Awaitable[Address]],
        settings: Settings,
        *,
        attempts: int = CONNECT_ATTEMPTS,
        check: Callable[[_Link], Awaitable[None]] | None = None,
    ) -> None:
        self._locate = locate
        self._settings = settings
        self._attempts = attempts
        self._check = check
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None
        self._closed = False

    async def _open(self) -> _Link:
        last = "timed out"
        for delay in connect_delays()[: self._attempts]:
            if delay:
                await asyncio.sleep(delay)
            try:
                address = await self._locate()
            except ConnectionLost as exc:
                last = str(exc)
                continue
            try:
                link = await _open_link(address, self._settings, self._check)
            except (OSError, TimeoutError, ConnectionLost) as exc:
                last = f"{address}: {_describe(exc)}"
                continue
            if self._closed:
                link.fail("closed by chat-state")
                raise ConnectFailed("the connection was closed by chat-state")
            self._link = link
            return link
        raise ConnectFailed(f"cannot connect to {last}")

    def _opened(self, future: asyncio.Future[_Link]) -> None:
        self._opening = None
        _retrieve(future)

    async def link(self) -> _Link:
        """The open connection, opening one (shared by concurrent callers) if needed."""
        link = self._link
        if link is not None and link.usable:
            return link
        if self._closed:
            raise ConnectFailed("the connection was closed by chat-state")
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    async def call(self, key: str | None, args: Args) -> Any:
        """Run one command; an error reply is raised as :class:`ServerError`.

        ``key`` is the router's argument (which node); one node ignores it.
        """
        link = self._link
        if link is None or not link.usable:
            link = await self.link()
        reply = await link.send(args)
        if isinstance(reply, ServerError):
            if str(reply).startswith("READONLY"):
                # A primary that became a replica: find the primary again next time.
                link.fail("the server is a replica now")
            raise reply
        return reply

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        """Every key matching ``pattern``, by SCAN."""
        cursor = "0"
        while True:
            command = ("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            cursor, keys = await self.call(None, command)
            for key in keys:
                yield key
            if cursor == "0":
                return

    async def aclose(self) -> None:
        """Close the connection, waiting (briefly) until it is gone."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None and link.usable:
            link.fail("closed by chat-state", graceful=True)
            with anyio.move_on_after(self._settings.connect_timeout):
                await asyncio.shield(link.closed)


class Standalone:
    """One server at a fixed address."""

    def __init__(self, address: Address, settings: Settings) -> None:
        async def locate() -> Address:
            return address

        self._use(Node(locate, settings))

    def _use(self, node: Node) -> None:
        self.node = node
        self.call = node.call  # the node's own method: no frame in between

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        async for key in self.node.scan(pattern):
            yield key

    async def aclose(self) -> None:
        await self.node.aclose()


class Sentinel(Standalone):
    """The primary of ``service`` as the Sentinels name it, checked by ROLE on connect."""

    def __init__(
        self,
        sentinels: Sequence[Address],
        service: str,
        settings: Settings,
        sentinel_settings: Settings,
    ) -> None:
        async def locate() -> Address:
            failures: list[str] = []
            for address in sentinels:
                try:
                    link = await _open_link(address, sentinel_settings)
                except (OSError, TimeoutError, ConnectionLost, ServerError) as exc:
                    failures.append(f"{address}: {_describe(exc)}")
                    continue
                try:
                    reply = await link.send(("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service))
                finally:
                    link.fail("closed by chat-state")
                if isinstance(reply, list) and len(reply) == 2:
                    return Address(reply[0], int(reply[1]))
                failures.append(f"{address}: {reply or f'no primary named {service!r}'}")
            raise ConnectionLost("no Sentinel named a primary (" + "; ".join(failures) + ")")

        async def check(link: _Link) -> None:
            role = await link.send(("ROLE",))
            if not isinstance(role, list) or role[:1] != ["master"]:
                raise ConnectionLost("the server the Sentinels named is not a primary (yet)")

        self._use(Node(locate, settings, check=check))


class Cluster:
    """A Redis Cluster: one :class:`Node` per primary, commands routed by key slot."""

    def __init__(
        self,
        seeds: Sequence[Address],
        settings: Settings,
        key_slot: Callable[[bytes], int],
    ) -> None:
        self._seeds = list(seeds)
        self._settings = settings
        self._key_slot = key_slot
        self._nodes: dict[Address, Node] = {}
        self._slots: list[Address | None] = [None] * SLOTS
        self._stale = True
        self._refreshing: asyncio.Future[None] | None = None

    def _node(self, address: Address) -> Node:
        node = self._nodes.get(address)
        if node is None:

            async def locate() -> Address:
                return address

            node = self._nodes[address] = Node(locate, self._settings, attempts=1)
        return node

    # -- the slot table -----------------------------------------------------------------

    async def _load_slots(self) -> None:
        failures: list[str] = []
        for address in dict.fromkeys([*self._nodes, *self._seeds]):
            try:
                reply = await self._node(address).call(None, ("CLUSTER", "SLOTS"))
            except (ConnectionLost, ServerError) as exc:
                failures.append(f"{address}: {_describe(exc)}")
                continue
            slots: list[Address | None] = [None] * SLOTS
            for start, end, primary, *_replicas in reply:
                host = primary[0] or address.host  # "" means "the node you asked"
                owner = Address(host, int(primary[1]))
                slots[int(start) : int(end) + 1] = [owner] * (int(end) - int(start) + 1)
            self._slots = slots
            self._stale = False
            for gone in set(self._nodes) - set(slots) - set(self._seeds):
                await self._nodes.pop(gone).aclose()
            return
        raise ConnectFailed("no Cluster node answered (" + "; ".join(failures) + ")")

    def _refreshed(self, future: asyncio.Future[None]) -> None:
        self._refreshing = None
        _retrieve(future)

    async def _refresh(self) -> None:
        """Read the slot table again (one read shared by concurrent callers)."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._load_slots())
            self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _owner(self, key: str | None) -> Address:
        if key is None:
            owner = next((a for a in self._slots if a is not None), None)
        else:
            owner = self._slots[self._key_slot(key.encode("utf-8", "replace"))]
        if owner is None:
            raise ConnectFailed("no Cluster node serves the key's slot")
        return owner

    # -- commands -----------------------------------------------------------------------

    async def _asking(self, address: Address, args: Args) -> Any:
        """``args`` on ``address`` right after ASKING, in the same write."""
        link = await self._node(address).link()
        asking = link.send(("ASKING",))
        asking.add_done_callback(_retrieve)
        reply = await link.send(args)
        if isinstance(reply, ServerError):
            raise reply
        return reply

    async def call(self, key: str | None, args: Args) -> Any:
        ask: Address | None = None
        last: Exception = ConnectFailed("no attempt")
        for attempt in range(CLUSTER_ATTEMPTS):
            try:
                if ask is not None:
                    return await self._asking(ask, args)
                if self._stale:
                    await self._refresh()
                return await self._node(self._owner(key)).call(key, args)
            except ServerError as exc:
                kind, _, rest = str(exc).partition(" ")
                ask = None
                if kind == "MOVED":
                    slot, _, where = rest.partition(" ")
                    self._slots[int(slot)] = Address.parse(where)
                    self._stale = True  # the rest of the table may have moved too
                elif kind == "ASK":
                    ask = Address.parse(rest.partition(" ")[2])
                elif kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    self._stale = kind == "CLUSTERDOWN"
                    await asyncio.sleep(backoff(attempt))
                else:
                    raise
                last = exc
            except ConnectFailed as exc:  # never sent: safe to send again
                last, ask, self._stale = exc, None, True
                await asyncio.sleep(backoff(attempt))
            except ConnectionLost:
                self._stale = True  # a node failed; its replica may be the primary soon
                raise
        raise last

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        if self._stale:
            await self._refresh()
        for address in dict.fromkeys(a for a in self._slots if a is not None):
            async for key in self._node(address).scan(pattern):
                yield key

    async def aclose(self) -> None:
        nodes = list(self._nodes.values())
        self._nodes.clear()
        for node in nodes:
            await node.aclose()


def ssl_context(
    *,
    ca_certs: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    cert_reqs: str = "required",
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context with the options of a ``rediss://`` URL."""
    context = ssl.create_default_context(cafile=ca_certs)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    context.check_hostname = check_hostname and cert_reqs != "none"
    context.verify_mode = {
        "required": ssl.CERT_REQUIRED,
        "optional": ssl.CERT_OPTIONAL,
        "none": ssl.CERT_NONE,
    }[cert_reqs]
    return context


def set_command(key: str, value: str, px: int | None, nx: bool) -> Args:
    """SET with its options, as the backends' ``set`` takes them."""
    args: Args = ("SET", key, value)
    if px is not None:
        args += ("PX", px)
    if nx:
        args += ("NX",)
    return args


class BackendBase:
    """What chat-state's own backends (asyncio and blocking) share: errors, secrets."""

    def __init__(self, library: str, secrets: Sequence[str]) -> None:
        self._library = library
        self._secrets = tuple(secrets)

    def _error(self, exc: Exception) -> Exception:
        """Our error for ``exc`` (NOSCRIPT is the drivers' cue to send the source)."""
        if isinstance(exc, ServerError) and str(exc).startswith("NOSCRIPT"):
            return NoScriptError(str(exc))
        return backend_error(self._library, exc, self._secrets)


class MultiplexedBackend(BackendBase):
    """:class:`~chat_state.protocols.AsyncRedisLike` over :class:`Standalone`,
    :class:`Sentinel` or :class:`Cluster`, with our errors (secrets scrubbed)."""

    def __init__(self, library: str, router: Standalone | Cluster, secrets: Sequence[str]) -> None:
        super().__init__(library, secrets)
        self._router = router

    @property
    def client(self) -> Standalone | Cluster:
        return self._router

    async def _call(self, key: str | None, args: Args) -> Any:
        try:
            return await self._router.call(key, args)
        except (ServerError, ConnectionLost) as exc:
            raise self._error(exc) from exc

    async def ping(self) -> None:
        await self._call(None, ("PING",))

    async def sadd(self, key: str, member: str) -> int:
        return int(await self._call(key, ("SADD", key, member)))

    async def srem(self, key: str, member: str) -> int:
        return int(await self._call(key, ("SREM", key, member)))

    async def sismember(self, key: str, member: str) -> bool:
        return bool(await self._call(key, ("SISMEMBER", key, member)))

    async def set(self, key: str, value: str, px: int | None, nx: bool) -> bool:
        return await self._call(key, set_command(key, value, px, nx)) is not None

    async def get(self, key: str) -> str | None:
        reply: str | None = await self._call(key, ("GET", key))
        return reply

    async def delete(self, key: str) -> int:
        return int(await self._call(key, ("DEL", key)))

    async def lpop(self, key: str) -> str | None:
        reply: str | None = await self._call(key, ("LPOP", key))
        return reply

    async def llen(self, key: str) -> int:
        return int(await self._call(key, ("LLEN", key)))

    async def lrange(self, key: str, start: int, stop: int) -> list[str]:
        reply: list[str] = await self._call(key, ("LRANGE", key, start, stop))
        return reply

    async def evalsha(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self._call(
            keys[0] if keys else None, ("EVALSHA", sha, len(keys), *keys, *args)
        )

    async def eval(self, source: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        return await self._call(
            keys[0] if keys else None, ("EVAL", source, len(keys), *keys, *args)
        )

    async def scan_prefix(self, prefix: str) -> AsyncIterator[str]:
        try:
            async for key in self._router.scan(glob_escape(prefix) + "*"):
                yield key
        except (ServerError, ConnectionLost) as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        await self._router.aclose()
