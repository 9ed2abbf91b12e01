"""Where a command goes in a Sentinel group or a Redis Cluster, written once (sans-IO).

A route is a generator: it yields :class:`Send` (run these arguments on the
connection to that server) and :class:`Pause` (wait before trying again), and is
sent each reply or thrown each failure (:class:`~chat_state._wire.ServerError`,
:class:`~chat_state._wire.ConnectionLost`, :class:`~chat_state._wire.ConnectFailed`).
The asyncio driver (:mod:`chat_state._mux`) and the blocking one
(:mod:`chat_state._blocking`) run the same routes, as the facades run the same
operations.

* :class:`SentinelRoutes` asks the Sentinels for the primary, sends there, and asks
  again when the primary could not be reached or has become a replica.
* :class:`ClusterRoutes` keeps the slot table (``CLUSTER SLOTS``), sends each command
  to the primary of its key's slot, follows ``MOVED`` and ``ASK``, waits out
  ``TRYAGAIN`` and ``CLUSTERDOWN``, and reads the table again after a redirection or
  a node that could not be reached.

A command that failed in flight (:class:`ConnectionLost`) is never sent again: it may
have run. One that was never sent (:class:`ConnectFailed`, a redirection) is.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._wire import (
    Address,
    Args,
    ConnectFailed,
    ConnectionLost,
    ServerError,
    backoff,
    connect_delays,
    describe,
)

#: Slots of a Redis Cluster.
SLOTS = 16384

__all__ = ["ClusterRoutes", "NodeTable", "Pause", "Route", "Routes", "Send", "SentinelRoutes"]

T = TypeVar("T")
N = TypeVar("N")

#: Redirections and retries of one Cluster command before it fails.
CLUSTER_ATTEMPTS = 16


@dataclass(frozen=True, slots=True)
class Send:
    """Run ``args`` on the connection to ``address``.

    ``sentinel``: the server is a Sentinel (its own credentials). ``asking``: send
    ``ASKING`` first, in the same write (a Cluster slot being imported there).
    """

    address: Address
    args: Args
    sentinel: bool = False
    asking: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before going on."""

    seconds: float


Route = Generator[Send | Pause, Any, T]


class SentinelRoutes:
    """The primary of ``service``, as the Sentinels name it."""

    def __init__(self, sentinels: Sequence[Address], service: str) -> None:
        self._sentinels = list(sentinels)
        self._service = service
        self.primary: Address | None = None
        self.version = 0  # changes whenever the servers in use may have

    def _locate(self) -> Route[Address]:
        failures: list[str] = []
        for address in self._sentinels:
            query = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self._service)
            try:
                reply = yield Send(address, query, sentinel=True)
            except (ConnectionLost, ServerError) as exc:
                failures.append(f"{address}: {describe(exc)}")
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return Address(reply[0], int(reply[1]))
            failures.append(f"{address}: no primary named {self._service!r}")
        raise ConnectFailed("no Sentinel named a primary (" + "; ".join(failures) + ")")

    def ready(self) -> Route[None]:
        """Know the primary."""
        if self.primary is None:
            self.primary = yield from self._locate()
            self.version += 1

    def call(self, key: str | None, args: Args) -> Route[Any]:
        last = ""
        for delay in connect_delays():
            if delay:
                yield Pause(delay)
            try:
                yield from self.ready()
                assert self.primary is not None
                return (yield Send(self.primary, args))
            except ConnectFailed as exc:  # never sent; the primary may have moved
                self.primary, last = None, str(exc)
            except ServerError as exc:
                if str(exc).startswith("READONLY"):  # a primary that became a replica
                    self.primary = None
                raise
        raise ConnectFailed(last)

    def primaries(self) -> list[Address]:
        return [] if self.primary is None else [self.primary]


class ClusterRoutes:
    """A Redis Cluster's slot table, and commands routed by their key's slot."""

    def __init__(self, seeds: Sequence[Address], key_slot: Callable[[bytes], int]) -> None:
        self._seeds = list(seeds)
        self._key_slot = key_slot
        self._slots: list[Address | None] = [None] * SLOTS
        self._stale = True
        self.version = 0  # changes whenever the table does

    def _load(self) -> Route[None]:
        failures: list[str] = []
        for address in dict.fromkeys([*self.primaries(), *self._seeds]):
            try:
                reply = yield Send(address, ("CLUSTER", "SLOTS"))
            except (ConnectionLost, ServerError) as exc:
                failures.append(f"{address}: {describe(exc)}")
                continue
            slots: list[Address | None] = [None] * SLOTS
            for start, end, primary, *_replicas in reply:
                host = primary[0] or address.host  # "" means "the node you asked"
                slots[int(start) : int(end) + 1] = [Address(host, int(primary[1]))] * (
                    int(end) - int(start) + 1
                )
            self._slots, self._stale = slots, False
            self.version += 1
            return
        raise ConnectFailed("no Cluster node answered (" + "; ".join(failures) + ")")

    def ready(self) -> Route[None]:
        """Know the slot table (read it again if it may be out of date)."""
        if self._stale:
            yield from self._load()

    def _owner(self, key: str | None) -> Address:
        if key is None:
            owner = next((a for a in self._slots if a is not None), None)
        else:
            owner = self._slots[self._key_slot(key.encode("utf-8", "replace"))]
        if owner is None:
            raise ConnectFailed("no Cluster node serves the key's slot")
        return owner

    def call(self, key: str | None, args: Args) -> Route[Any]:
        ask: Address | None = None
        last: Exception = ConnectFailed("no attempt")
        for attempt in range(CLUSTER_ATTEMPTS):
            try:
                if ask is not None:
                    return (yield Send(ask, args, asking=True))
                yield from self.ready()
                return (yield Send(self._owner(key), args))
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
                    yield Pause(backoff(attempt))
                else:
                    raise
                last = exc
            except ConnectFailed as exc:  # never sent: safe to send again
                last, ask, self._stale = exc, None, True
                yield Pause(backoff(attempt))
            except ConnectionLost:
                self._stale = True  # a node failed; its replica may be the primary soon
                raise
        raise last

    def primaries(self) -> list[Address]:
        """Every primary in the table."""
        return list(dict.fromkeys(a for a in self._slots if a is not None))


Routes = SentinelRoutes | ClusterRoutes


class NodeTable(Generic[N]):
    """The nodes that routes send to, for either driver: one per (server, whether it is
    a Sentinel), made by ``make`` on first use; those the routes no longer use are
    handed back, to be closed."""

    def __init__(self, routes: Routes, make: Callable[[Address, bool], N]) -> None:
        self._routes = routes
        self._make = make
        self._nodes: dict[tuple[Address, bool], N] = {}
        self._version = routes.version
        self._lock = threading.Lock()  # State's threads share the table

    def get(self, address: Address, sentinel: bool = False) -> N:
        node = self._nodes.get((address, sentinel))
        if node is None:
            with self._lock:
                node = self._nodes.get((address, sentinel))
                if node is None:
                    node = self._nodes[address, sentinel] = self._make(address, sentinel)
        return node

    def unused(self) -> list[N]:
        """The data nodes the routes stopped using since last asked, out of the table."""
        if self._routes.version == self._version:
            return []
        with self._lock:
            self._version = self._routes.version
            used = set(self._routes.primaries())
            gone = [key for key in self._nodes if not key[1] and key[0] not in used]
            return [self._nodes.pop(key) for key in gone]

    def take_all(self) -> list[N]:
        """Every node, out of the table."""
        with self._lock:
            nodes = list(self._nodes.values())
            self._nodes.clear()
        return nodes
