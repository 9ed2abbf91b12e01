"""Concurrent commands on one connection per server: AsyncState's own connections.

redis-py's and valkey-py's asyncio clients take a pooled connection for each command
in flight, so 64 concurrent callers mean 64 sockets, 64 writes and 64 reads, and the
pool, not the server, sets the pace. Here each server node has one connection (a
:class:`Node`). A command goes out at once when nothing is in flight; while replies
are awaited, every command issued during one turn of the event loop goes out in one
write. The replies, which a server sends in the order of the commands, are matched
to their callers first in, first out. hiredis parses the replies and packs the
commands.

What holds on this path:

* A cancelled caller's command is written (or already was); its reply is read and
  dropped. No caller ever receives another's reply, and the stream stays in step.
* A connection that drops, or a reply that does not come within the timeout, fails
  every command in flight on it with :class:`~.failures.ConnectionLost` (the command
  may or may not have run, so it is never sent again); the next command opens a new
  connection. One that has been quiet is checked before use.
* Opening a connection is bounded by the connect timeout, and retried a few times
  with a short backoff; a command that could not be sent fails with
  :class:`~.failures.ConnectFailed`.

:class:`Standalone` serves one server (TCP, TLS or a unix socket); :class:`Routed` a
Sentinel group or a Cluster, following the routes of :mod:`~.routes` (which the
blocking connections of :mod:`~.blocking` follow too).
"""

from __future__ import annotations

import asyncio
import functools
import select
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from time import monotonic as _monotonic
from typing import Any, TypeVar, cast

import anyio
import hiredis

from chat_state.backend.events import ConnectionEvents, Logger
from chat_state.backend.interface import NodeReply
from chat_state.backend.policy import SCAN_COUNT
from chat_state.backend.replies import scan_pattern
from chat_state.core.commands import Args

from .address import Address
from .config import ClientOnDemand, Plan, Settings
from .failures import (
    CONNECT_ATTEMPTS,
    ConnectFailed,
    ConnectionLost,
    ServerError,
    connect_delays,
    describe,
    reply_error,
)
from .nodes import NodeTable
from .protocol import new_reader, pack
from .routes import ClusterRoutes, Refresh, Route, Routes, Send

__all__ = ["MultiplexedBackend", "Node", "Routed", "Standalone"]

T = TypeVar("T")

#: A connection quiet for longer than this (seconds) is checked before it is used: its
#: loop may not have run since the server closed it (cheap: one poll, only after a lull).
QUIET_CHECK_S = 0.05


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (for futures whose reply nobody awaits)."""
    if not future.cancelled():
        future.exception()


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
        self._written_at = _monotonic()  # when the last write went out
        self.closed = self._loop.create_future()  # done once the transport is gone
        #: Told the reason when the connection fails with commands in flight.
        self.on_drop: Callable[[str], None] | None = None

    @property
    def usable(self) -> bool:
        return self._failure is None and self._transport is not None

    def stale(self) -> bool:
        """Whether the server closed this quiet connection unseen: then it fails it.

        A quiet connection is checked before a command goes down it, since its loop may
        not have run since the server closed it: a command that was never sent can go
        down a fresh connection instead.
        """
        if self._outbox or self._transport is None or not _readable(self._transport):
            return False
        self.fail("the server closed the connection while it was idle", graceful=True)
        return True

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
                if future.done():  # a cancelled caller's reply is dropped here
                    continue
                if type(reply) is ServerError:  # an error reply is raised where awaited
                    future.set_exception(reply_error(reply))
                else:
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
        """Send ``args``, at once or with the rest of this turn's; → its reply's future
        (an error reply is its exception: :class:`ServerError`, or NOSCRIPT's
        :class:`~chat_state.backend.NoScriptError`)."""
        if self._failure is not None:
            raise ConnectionLost(self._failure)
        future = self._loop.create_future()
        self._outbox.append(pack(args))
        self._waiting.append(future)
        if len(self._outbox) == 1:
            if self._pending:
                # Replies are awaited: gather this turn's commands into one write.
                self._loop.call_soon(self._flush)
            else:
                self._flush()  # nothing in flight: write at once, the lowest latency
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
        self._written_at = _monotonic()
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
        if futures and not graceful and self.on_drop is not None:
            self.on_drop(self._failure)


def _readable(transport: asyncio.BaseTransport) -> bool:
    """Whether an idle connection's socket has something to read: the server closed it
    (or sent what no command asked for)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    if not hasattr(select, "poll"):  # Windows
        return bool(select.select([sock], [], [], 0)[0])
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


async def _open_link(address: Address, settings: Settings) -> _Link:
    """A new, prepared connection (or OSError, TimeoutError, ConnectionLost, ServerError)."""
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
        futures = [link.send(command) for command in settings.handshake()]
        replies: list[Any] = []
        for future in futures:
            try:
                replies.append(await future)
            except ServerError as refused:  # Settings.check decides
                replies.append(refused)
        settings.check(replies)
    except BaseException:
        link.fail("the connection could not be prepared")
        raise
    return link


class Node:
    """One server and the connection to it, opened again whenever it has failed.

    ``attempts``: how many times to try to open a connection before a command fails
    with :class:`ConnectFailed` (a router that retries itself asks for one).
    """

    def __init__(
        self,
        address: Address,
        settings: Settings,
        events: ConnectionEvents,
        *,
        attempts: int = CONNECT_ATTEMPTS,
    ) -> None:
        self._address = address
        self._settings = settings
        self._events = events
        self._attempts = attempts
        self._link: _Link | None = None
        self._opening: asyncio.Future[_Link] | None = None
        self._closed = False

    async def _open(self) -> _Link:
        last = "timed out"
        for delay in connect_delays()[: self._attempts]:
            if delay:
                await asyncio.sleep(delay)
            try:
                link = await _open_link(self._address, self._settings)
            except (OSError, TimeoutError, ConnectionLost) as exc:
                last = describe(exc)
                continue
            if self._closed:
                link.fail("closed by chat-state")
                raise ConnectFailed("the connection was closed by chat-state")
            self._link = link
            address = str(self._address)
            self._events.connected(address)
            link.on_drop = functools.partial(self._events.dropped, address)
            return link
        self._events.unreachable(str(self._address), last)
        raise ConnectFailed(f"cannot connect to {self._address}: {last}")

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

    def call(self, key: str | None, args: Args) -> Awaitable[Any]:
        """Run one command: → what to await for its reply; an error reply is raised as
        :class:`ServerError` (NOSCRIPT as :class:`~chat_state.backend.NoScriptError`).

        Not a coroutine: on an open connection it is the reply's future itself, so that
        the caller's frame is the only one. ``key`` is the router's argument (which
        node); one node ignores it.
        """
        link = self._link
        # A connection quiet for QUIET_CHECK_S is checked first (tested inline: a call
        # on every command would cost more than the test).
        if (
            link is None
            or not link.usable
            or (
                not link._pending
                and _monotonic() - link._written_at >= QUIET_CHECK_S
                and link.stale()
            )
        ):
            return self._open_and_send(args)
        return link.send(args)

    async def _open_and_send(self, args: Args) -> Any:
        link = await self.link()
        return await link.send(args)

    async def asking(self, args: Args) -> Any:
        """``args`` right after ASKING, in the same write (a Cluster slot being imported)."""
        link = await self.link()
        link.send(("ASKING",)).add_done_callback(_retrieve)
        return await link.send(args)

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

    def close(self) -> _Link | None:
        """Start closing the connection (→ it, to wait for); later commands fail."""
        self._closed = True
        link, self._link = self._link, None
        if link is None or not link.usable:
            return None
        link.fail("closed by chat-state", graceful=True)
        return link

    async def aclose(self) -> None:
        """Close the connection, waiting (briefly) until it is gone."""
        link = self.close()
        if link is not None:
            with anyio.move_on_after(self._settings.connect_timeout):
                await asyncio.shield(link.closed)


async def _timed(address: Address, node: Node, args: Args) -> NodeReply:
    """``args`` on ``node``: its reply (or failure) and how long it took."""
    started = _monotonic()
    try:
        reply = await node.call(None, args)
    except (ServerError, ConnectionLost) as exc:
        reply = exc
    return NodeReply(str(address), reply, _monotonic() - started)


class Standalone:
    """One server at a fixed address: its node's ``call`` is the router's."""

    def __init__(self, address: Address, settings: Settings, events: ConnectionEvents) -> None:
        self.address = address
        self.node = Node(address, settings, events)
        self.call = self.node.call  # no frame in between

    def peer(self, key: str | None) -> Address | None:
        return self.address

    async def each_primary(self, args: Args) -> list[NodeReply]:
        return [await _timed(self.address, self.node, args)]

    def scan(self, pattern: str) -> AsyncIterator[str]:
        return self.node.scan(pattern)

    async def aclose(self) -> None:
        await self.node.aclose()


class Routed:
    """A Sentinel group or a Cluster: its routes (:mod:`~.routes`), followed on a
    :class:`Node` per server."""

    def __init__(
        self,
        routes: Routes,
        settings: Settings,
        sentinel_settings: Settings,
        events: ConnectionEvents,
    ) -> None:
        self._routes = routes
        self.peer = routes.peer
        chosen = {False: settings, True: sentinel_settings}
        self._nodes = NodeTable(
            routes, lambda address, sentinel: Node(address, chosen[sentinel], events, attempts=1)
        )
        self._refreshing: asyncio.Future[None] | None = None  # the one CLUSTER SLOTS read

    async def _send(self, send: Send) -> Any:
        node = self._nodes.get(send.address, send.sentinel)
        if send.asking:
            return await node.asking(send.args)
        return await node.call(None, send.args)

    async def _refresh(self, seen: int) -> None:
        """Read the slot table again, once for every caller that found it stale."""
        assert isinstance(self._routes, ClusterRoutes)
        if self._routes.version != seen:
            return  # read since
        if self._refreshing is None or self._refreshing.done():  # (done: not yet cleared)
            self._refreshing = asyncio.ensure_future(self._follow(self._routes.load()))
            self._refreshing.add_done_callback(self._refreshed)
        await asyncio.shield(self._refreshing)

    def _refreshed(self, future: asyncio.Future[None]) -> None:
        if self._refreshing is future:
            self._refreshing = None
        _retrieve(future)

    async def _follow(self, route: Route[T]) -> T:
        """Run ``route`` to its end on the nodes."""
        try:
            step = next(route)
            while True:
                try:
                    if isinstance(step, Send):
                        reply = await self._send(step)
                    elif isinstance(step, Refresh):
                        await self._refresh(step.seen)
                        reply = None
                    else:
                        await asyncio.sleep(step.seconds)
                        reply = None
                except (ServerError, ConnectionLost) as exc:
                    step = route.throw(exc)
                else:
                    step = route.send(reply)
        except StopIteration as done:
            result: T = done.value
            return result
        finally:
            for node in self._nodes.unused():
                node.close()

    def call(self, key: str | None, args: Args) -> Awaitable[Any]:
        return self._follow(self._routes.call(key, args))

    async def scan(self, pattern: str) -> AsyncIterator[str]:
        for address in await self._follow(self._routes.ready()):
            async for key in self._nodes.get(address).scan(pattern):
                yield key

    async def each_primary(self, args: Args) -> list[NodeReply]:
        primaries = await self._follow(self._routes.ready())
        return [await _timed(address, self._nodes.get(address), args) for address in primaries]

    async def aclose(self) -> None:
        for node in self._nodes.take_all():
            await node.aclose()


class MultiplexedBackend:
    """:class:`~chat_state.backend.AsyncBackend` over :class:`Standalone` or
    :class:`Routed`: AsyncState's own connections.

    Its ``call`` is the router's (a node's, for one server): no frame in between; every
    failure is a :class:`~chat_state.errors.BackendError` already.
    """

    def __init__(self, plan: Plan) -> None:
        self._library = ClientOnDemand(plan.library_client)
        self._events = plan.events
        self._router: Standalone | Routed = plan.build(Standalone, Routed)
        self.call = self._router.call

    def use_logger(self, logger: Logger) -> None:
        self._events.logger = logger

    def peer(self, key: str | None) -> tuple[str, int | None] | None:
        address = self._router.peer(key)
        return None if address is None else address.peer()

    @property
    def client(self) -> Any:
        return self._library.client

    def scan(self, prefix: str) -> AsyncIterator[str]:
        return self._router.scan(scan_pattern(prefix))

    def each_primary(self, args: Args) -> Awaitable[list[NodeReply]]:
        return self._router.each_primary(args)

    async def aclose(self) -> None:
        await self._router.aclose()
        for client in self._library.forget():
            await client.aclose()
