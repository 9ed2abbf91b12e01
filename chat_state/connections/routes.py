"""Where a command goes in a Sentinel group or a Redis Cluster, written once (sans-IO).

A route is a generator: it yields :class:`Send` (run these arguments on the
connection to that server), :class:`Pause` (wait before trying again) and
:class:`Refresh` (read the slot table again), and is sent each reply or thrown each
failure (:class:`~chat_state.connections.failures.ServerError`,
:class:`~chat_state.connections.failures.ConnectionLost`,
:class:`~chat_state.connections.failures.ConnectFailed`). The asyncio transport
(:mod:`~chat_state.connections.multiplexed`) and the blocking one
(:mod:`~chat_state.connections.blocking`) follow the same routes; the tests follow
them with scripted replies.

* :class:`SentinelRoutes` asks the Sentinels for the primary, sends there, and asks
  again (and sends again) when the primary could not be reached or has become a
  replica, which refuses a write (READONLY) before anything is written.
* :class:`ClusterRoutes` keeps the slot table (``CLUSTER SLOTS``, read once for every
  caller that finds it stale), sends each command to the primary of its key's slot,
  follows ``MOVED`` and ``ASK``, waits out ``TRYAGAIN`` and ``CLUSTERDOWN``, and
  reads the table again after a redirection or a node that could not be reached.

A command that failed in flight (:class:`ConnectionLost`) is never sent again: it may
have run. One that was never sent (:class:`ConnectFailed`, a redirection) is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from chat_state.backend.policy import backoff
from chat_state.core.commands import Args

from .address import Address
from .failures import (
    ConnectFailed,
    ConnectionLost,
    ServerError,
    connect_delays,
    describe,
)
from .keyslot import SLOTS

__all__ = [
    "ClusterRoutes",
    "Pause",
    "Refresh",
    "Route",
    "Routes",
    "Send",
    "SentinelRoutes",
]

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True)
class Refresh:
    """Read the Cluster's slot table again (:meth:`ClusterRoutes.load`), unless it has
    changed since ``seen`` (its version then): callers that find the table stale at
    once share one ``CLUSTER SLOTS``. The driver throws in the load's failure."""

    seen: int


Route = Generator[Send | Pause | Refresh, Any, T]


class RouteEvents(Protocol):
    """Told when the servers in use move (:class:`chat_state.backend.events.ConnectionEvents`
    is one; the routes name no logger or lock of their own)."""

    def new_primary(self, service: str, old: str, new: str) -> None:
        """The Sentinels named ``new`` the primary of ``service`` instead of ``old``."""

    def slots_read(self, primaries: list[str]) -> None:
        """A Cluster's slot table was read; ``primaries``: the primaries it names."""


class _Untold:
    """The :class:`RouteEvents` of routes that nobody listens to."""

    def new_primary(self, service: str, old: str, new: str) -> None:
        pass

    def slots_read(self, primaries: list[str]) -> None:
        pass


class SentinelRoutes:
    """The primary of ``service``, as the Sentinels name it."""

    def __init__(
        self, sentinels: Sequence[Address], service: str, events: RouteEvents | None = None
    ) -> None:
        self._sentinels = list(sentinels)
        self._service = service
        self._events: RouteEvents = events if events is not None else _Untold()
        self.primary: Address | None = None
        self._named: Address | None = None  # the primary the Sentinels named last
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

    def _known_primary(self) -> Route[Address]:
        """The primary, asked of the Sentinels if not known. Read once into a local: a
        State's threads share these routes, and another may forget it meanwhile."""
        primary = self.primary
        if primary is None:
            primary = yield from self._locate()
            if self._named is not None and self._named != primary:
                self._events.new_primary(self._service, str(self._named), str(primary))
            self.primary = self._named = primary
            self.version += 1
        return primary

    def _forget(self, primary: Address | None) -> None:
        """Ask the Sentinels again next time, unless another caller already found a
        primary other than the ``primary`` that failed."""
        if primary is not None and self.primary == primary:
            self.primary = None

    def ready(self) -> Route[list[Address]]:
        """Know the primary; → the primaries in use (that one)."""
        return [(yield from self._known_primary())]

    def call(self, key: str | None, args: Args) -> Route[Any]:
        last: Exception = ConnectFailed("no attempt")
        for delay in connect_delays():
            if delay:
                yield Pause(delay)
            primary = None
            try:
                primary = yield from self._known_primary()
                return (yield Send(primary, args))
            except ConnectFailed as exc:  # never sent; the primary may have moved
                self._forget(primary)
                last = exc
            except ServerError as exc:
                if not str(exc).startswith("READONLY"):
                    raise
                # A primary that became a replica refused the command before it wrote
                # anything (a script fails at its first write): ask again, send again.
                self._forget(primary)
                last = exc
        raise last

    def primaries(self) -> list[Address]:
        primary = self.primary  # once: another thread may forget it meanwhile
        return [] if primary is None else [primary]

    def peer(self, key: str | None) -> Address | None:
        """Where a command would go now (``None``: not known yet)."""
        return self.primary


class ClusterRoutes:
    """A Redis Cluster's slot table, and commands routed by their key's slot."""

    def __init__(
        self,
        seeds: Sequence[Address],
        key_slot: Callable[[bytes], int],
        events: RouteEvents | None = None,
    ) -> None:
        self._seeds = list(seeds)
        self._key_slot = key_slot
        self._events: RouteEvents = events if events is not None else _Untold()
        self._slots: list[Address | None] = [None] * SLOTS
        self._stale = True
        self.version = 0  # changes whenever the table does

    def load(self) -> Route[None]:
        """Read the slot table from a node that answers (known primaries first)."""
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
            self._events.slots_read([str(a) for a in self.primaries()])
            return
        raise ConnectFailed("no Cluster node answered (" + "; ".join(failures) + ")")

    def _current(self) -> Route[None]:
        """Know the slot table (read it again if it may be out of date)."""
        if self._stale:
            yield Refresh(self.version)

    def ready(self) -> Route[list[Address]]:
        """Know the slot table; → the primaries it names (a walk of every slot: not
        for each command, which :meth:`call` routes by its key alone)."""
        yield from self._current()
        return self.primaries()

    def _owner(self, key: str | None) -> Address:
        if key is None:
            owner = next((a for a in self._slots if a is not None), None)
        else:
            owner = self._slots[self._key_slot(key.encode("utf-8", "replace"))]
        if owner is None:
            raise ConnectFailed("no Cluster node serves the key's slot")
        return owner

    def _outdated(self, routed: int, moved: str = "") -> None:
        """A command routed by the table's version ``routed`` was redirected (``moved``:
        ``"<slot> <host:port>"``) or its node could not be reached: the table is stale,
        unless it was read again since (after another caller's failure); the command is
        then sent again by that one, so that callers that failed at once share one read."""
        if self.version != routed:
            return
        if moved:
            slot, _, where = moved.partition(" ")
            self._slots[int(slot)] = Address.parse(where)
        self._stale = True  # the rest of the table may have moved too

    def call(self, key: str | None, args: Args) -> Route[Any]:
        ask: Address | None = None
        last: Exception = ConnectFailed("no attempt")
        for attempt in range(CLUSTER_ATTEMPTS):
            more = attempt < CLUSTER_ATTEMPTS - 1  # no pause after the last attempt
            routed = self.version  # the table this attempt is routed by
            try:
                if ask is not None:
                    return (yield Send(ask, args, asking=True))
                yield from self._current()
                routed = self.version
                return (yield Send(self._owner(key), args))
            except ServerError as exc:
                kind, _, rest = str(exc).partition(" ")
                ask = None
                if kind == "MOVED":
                    self._outdated(routed, moved=rest)
                elif kind == "ASK":
                    ask = Address.parse(rest.partition(" ")[2])
                elif kind in ("TRYAGAIN", "CLUSTERDOWN"):
                    if kind == "CLUSTERDOWN":  # (a TRYAGAIN leaves the table as it was)
                        self._stale = True
                    if more:
                        yield Pause(backoff(attempt))
                else:
                    raise
                last = exc
            except ConnectFailed as exc:  # never sent: safe to send again
                last, ask = exc, None
                self._outdated(routed)
                if more:
                    yield Pause(backoff(attempt))
            except ConnectionLost:
                self._stale = True  # a node failed; its replica may be the primary soon
                raise
        raise last

    def peer(self, key: str | None) -> Address | None:
        """Where a command on ``key`` would go now (``None``: not known yet)."""
        try:
            return self._owner(key)
        except ConnectFailed:
            return None

    def primaries(self) -> list[Address]:
        """Every primary in the table."""
        return list(dict.fromkeys(a for a in self._slots if a is not None))


Routes = SentinelRoutes | ClusterRoutes
