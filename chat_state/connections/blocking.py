"""Lean blocking connections: State's own connections.

redis-py's blocking client spends more time in Python per command (pool bookkeeping,
retry and observability wrappers, response callbacks) than the server spends
running it. :class:`BlockingNode` keeps its own connections to one server, one per
thread in use (a thread takes an idle one, or opens one, and puts it back): a
command is packed by hiredis, written with one ``sendall`` and its reply parsed by
hiredis, with nothing in between.

What holds on this path, as on the asyncio one (:mod:`~.multiplexed`):

* A reply that does not come within the timeout, or a connection that fails, fails
  the command with :class:`~.failures.ConnectionLost` (it may have run, so it
  is never sent again) and that connection is closed; an idle connection that the
  server closed meanwhile is noticed before it is used, and replaced.
* Opening a connection is bounded by the connect timeout, and retried a few times
  with a short backoff; a command that could not be sent fails with
  :class:`~.failures.ConnectFailed`.
* A forked child never uses its parent's connections.

:class:`BlockingNode` serves one server; :class:`BlockingRouted` a Sentinel group or
a Cluster, following the same routes (:mod:`~.routes`) as AsyncState.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

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
    raise_reply,
)
from .nodes import NodeTable
from .protocol import new_reader, pack
from .routes import ClusterRoutes, Refresh, Route, Routes, Send

__all__ = ["BlockingBackend", "BlockingNode", "BlockingRouted"]

T = TypeVar("T")

BUFFER_BYTES = 65536


class _Link:
    """One blocking connection: a command written, then its reply read."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self._sock = sock
        self._timeout = timeout
        self._reader = new_reader()
        self._buffer = bytearray(BUFFER_BYTES)
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)

    def call(self, commands: Sequence[Args]) -> list[Any]:
        """Send ``commands`` in one write and read their replies (a :class:`ServerError`
        is returned, not raised)."""
        sock, reader, buffer = self._sock, self._reader, self._buffer
        replies: list[Any] = []
        try:
            sock.sendall(b"".join([pack(args) for args in commands]))
            while len(replies) < len(commands):
                reply = reader.gets()
                if reply is not False:
                    replies.append(reply)
                    continue
                received = sock.recv_into(buffer)
                if not received:
                    raise ConnectionLost("the connection was closed")
                reader.feed(buffer, 0, received)  # type: ignore[arg-type]  # any buffer
        except TimeoutError:
            raise ConnectionLost(f"no reply within {self._timeout:g} s") from None
        except OSError as exc:
            raise ConnectionLost(f"the connection was closed ({exc})") from None
        except hiredis.ProtocolError as exc:
            raise ConnectionLost(f"the server's reply could not be read ({exc})") from None
        return replies

    def stale(self) -> bool:
        """Whether the idle connection has something to read: the server closed it."""
        return bool(self._poll.poll(0))

    def close(self) -> None:
        self._sock.close()


def _connect(address: Address, settings: Settings) -> _Link:
    """A new, prepared connection (or OSError, ConnectionLost, ServerError)."""
    if address.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(settings.connect_timeout)
            sock.connect(address.path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(
            (address.host, address.port), timeout=settings.connect_timeout
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if settings.tls is not None:
            sock = settings.tls.wrap_socket(sock, server_hostname=address.host)
        sock.settimeout(settings.timeout)
        link = _Link(sock, settings.timeout)
        handshake = settings.handshake()
        if handshake:
            settings.check(link.call(handshake))
    except BaseException:
        sock.close()
        raise
    return link


def _timed(address: Address, node: BlockingNode, args: Args) -> NodeReply:
    """``args`` on ``node``: its reply (or failure) and how long it took."""
    started = time.monotonic()
    try:
        reply = node.call(None, args)
    except (ServerError, ConnectionLost) as exc:
        reply = exc
    return NodeReply(str(address), reply, time.monotonic() - started)


class BlockingNode:
    """One server and blocking connections to it, one per thread in use."""

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
        self._idle: list[_Link] = []  # list.pop / append are atomic: no lock needed
        self._pid = os.getpid()
        self._closed = False
        self._lock = threading.Lock()  # only for close()

    def _open(self) -> _Link:
        last = "timed out"
        for delay in connect_delays()[: self._attempts]:
            if delay:
                time.sleep(delay)
            try:
                link = _connect(self._address, self._settings)
            except (OSError, ConnectionLost) as exc:
                last = describe(exc)
                continue
            self._events.connected(str(self._address))
            return link
        self._events.unreachable(str(self._address), last)
        raise ConnectFailed(f"cannot connect to {self._address}: {last}")

    def _take(self) -> _Link:
        if self._pid != os.getpid():  # a forked child: the connections are the parent's
            self._idle, self._pid = [], os.getpid()
        if self._closed:
            raise ConnectFailed("the connection was closed by chat-state")
        while True:
            try:
                link = self._idle.pop()
            except IndexError:
                return self._open()
            if not link.stale():
                return link
            link.close()

    def call(self, key: str | None, args: Args) -> Any:
        """Run one command; an error reply is raised as :class:`ServerError` (NOSCRIPT as
        :class:`~chat_state.backend.NoScriptError`).

        ``key`` is the router's argument (which node); one node ignores it.
        """
        return self._run((args,))

    def asking(self, args: Args) -> Any:
        """``args`` right after ASKING, in the same write (a Cluster slot being imported)."""
        return self._run((("ASKING",), args))

    def _run(self, commands: tuple[Args, ...]) -> Any:
        """Write ``commands`` at once; → the last one's reply."""
        link = self._take()
        try:
            reply = link.call(commands)[-1]
        except BaseException as exc:  # a timeout, a failure or an interrupt: the stream
            link.close()  # is lost
            if isinstance(exc, ConnectionLost):
                self._events.dropped(str(self._address), str(exc))
            raise
        with self._lock:
            if self._closed:
                link.close()
            else:
                self._idle.append(link)
        if type(reply) is ServerError:
            raise_reply(reply)
        return reply

    def scan(self, pattern: str) -> Iterator[str]:
        """Every key matching ``pattern``, by SCAN."""
        cursor = "0"
        while True:
            cursor, keys = self.call(None, ("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT))
            yield from keys
            if cursor == "0":
                return

    def each_primary(self, args: Args) -> list[NodeReply]:
        return [_timed(self._address, self, args)]

    def peer(self, key: str | None) -> Address | None:
        return self._address

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for link in idle:
            link.close()


class BlockingRouted:
    """A Sentinel group or a Cluster: its routes, followed on a :class:`BlockingNode` per
    server."""

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
            routes,
            lambda address, sentinel: BlockingNode(address, chosen[sentinel], events, attempts=1),
        )
        self._refresh_lock = threading.Lock()  # one CLUSTER SLOTS read at a time
        self._pid = os.getpid()

    def _send(self, send: Send) -> Any:
        node = self._nodes.get(send.address, send.sentinel)
        return node.asking(send.args) if send.asking else node.call(None, send.args)

    def _refresh(self, seen: int) -> None:
        """Read the slot table again, once for every thread that found it stale."""
        assert isinstance(self._routes, ClusterRoutes)
        if self._pid != os.getpid():  # a forked child: the lock may be held by a thread
            self._refresh_lock, self._pid = threading.Lock(), os.getpid()  # it lacks
        with self._refresh_lock:
            if self._routes.version == seen:  # not read since
                self._follow(self._routes.load())

    def _follow(self, route: Route[T]) -> T:
        """Run ``route`` to its end on the nodes."""
        try:
            step = next(route)
            while True:
                try:
                    if isinstance(step, Send):
                        reply = self._send(step)
                    elif isinstance(step, Refresh):
                        self._refresh(step.seen)
                        reply = None
                    else:
                        time.sleep(step.seconds)
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

    def call(self, key: str | None, args: Args) -> Any:
        return self._follow(self._routes.call(key, args))

    def scan(self, pattern: str) -> Iterator[str]:
        for address in self._follow(self._routes.ready()):
            yield from self._nodes.get(address).scan(pattern)

    def each_primary(self, args: Args) -> list[NodeReply]:
        primaries = self._follow(self._routes.ready())
        return [_timed(a, self._nodes.get(a), args) for a in primaries]

    def close(self) -> None:
        for node in self._nodes.take_all():
            node.close()


class BlockingBackend:
    """:class:`~chat_state.backend.Backend` over a :class:`BlockingNode` or
    :class:`BlockingRouted`: State's own connections.

    Its ``call`` is the node's or the router's; every failure is a
    :class:`~chat_state.errors.BackendError` already.
    """

    def __init__(self, plan: Plan) -> None:
        self._library = ClientOnDemand(plan.library_client)
        self._events = plan.events
        self._node: BlockingNode | BlockingRouted = plan.build(BlockingNode, BlockingRouted)
        self.call = self._node.call

    def use_logger(self, logger: Logger) -> None:
        self._events.logger = logger

    def peer(self, key: str | None) -> tuple[str, int | None] | None:
        address = self._node.peer(key)
        return None if address is None else address.peer()

    @property
    def client(self) -> Any:
        return self._library.client

    def scan(self, prefix: str) -> Iterator[str]:
        return self._node.scan(scan_pattern(prefix))

    def each_primary(self, args: Args) -> list[NodeReply]:
        return self._node.each_primary(args)

    def close(self) -> None:
        self._node.close()
        for client in self._library.forget():
            client.close()
