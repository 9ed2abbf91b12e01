"""Where the servers are and how a connection to one is prepared, from a parsed URL.

:class:`Settings` says how to open a connection (timeouts, TLS) and what to send on
it first (AUTH, SELECT, ROLE); :class:`Plan` is everything both transports need for
one URL: one server's :class:`Address`, or the routes of a Sentinel group or a
Cluster; :func:`plan_for` builds it. :class:`ClientOnDemand` makes the client
library's own client, for ``get_client()``, on first use.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chat_state.backend.errors import configuration_error
from chat_state.backend.events import ConnectionEvents
from chat_state.backend.urls import RedisURL
from chat_state.core.commands import Args

from .address import Address
from .failures import ConnectionLost, ServerError
from .keyslot import key_slot
from .routes import ClusterRoutes, Routes, SentinelRoutes

__all__ = ["ClientOnDemand", "LibraryClient", "Plan", "Settings", "plan_for"]

One = TypeVar("One")
Many = TypeVar("Many")


@dataclass(frozen=True)
class Settings:
    """How to open and use a connection to a data node (or a Sentinel)."""

    connect_timeout: float
    timeout: float
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    tls: ssl.SSLContext | None = None
    #: Refuse a server that is not a primary (the one a Sentinel named may not be yet).
    primary_only: bool = False

    def handshake(self) -> list[Args]:
        """The commands that prepare a new connection."""
        commands: list[Args] = []
        if self.password is not None:
            user = () if self.username is None else (self.username,)
            commands.append(("AUTH", *user, self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.primary_only:
            commands.append(("ROLE",))
        return commands

    def check(self, replies: Sequence[Any]) -> None:
        """Raise if the handshake's ``replies`` refuse the connection."""
        if self.primary_only:
            *replies, role = replies
            # A user whose ACL forbids ROLE is taken at the Sentinels' word.
            if isinstance(role, list) and role[:1] != ["master"]:
                raise ConnectionLost("the server is not a primary (yet)")
        for reply in replies:
            if isinstance(reply, ServerError):
                raise reply


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


#: Makes the client library's own client for a URL: → (client, every client to close).
LibraryClient = Callable[[], tuple[Any, list[Any]]]


@dataclass(frozen=True)
class Plan:
    """Everything chat-state's own connections for one URL need, asyncio or blocking."""

    settings: Settings  # the data nodes'
    sentinel_settings: Settings  # the Sentinels' (used by a Sentinel group only)
    library_client: LibraryClient  # for get_client()
    events: ConnectionEvents  # the routes' and the nodes'
    address: Address | None = None  # one server...
    routes: Routes | None = None  # ...or a Sentinel group or Cluster

    def build(
        self,
        one: Callable[[Address, Settings, ConnectionEvents], One],
        routed: Callable[[Routes, Settings, Settings, ConnectionEvents], Many],
    ) -> One | Many:
        """A transport's router: ``one`` for one server, else ``routed`` on the routes."""
        if self.routes is None:
            assert self.address is not None
            return one(self.address, self.settings, self.events)
        return routed(self.routes, self.settings, self.sentinel_settings, self.events)


def _tls(url: RedisURL) -> ssl.SSLContext | None:
    """The TLS context for ``url`` (None without TLS)."""
    if not url.tls:
        return None
    options = {k.removeprefix("ssl_"): v for k, v in url.tls_kwargs().items() if k != "ssl"}
    try:
        return ssl_context(**options)
    except (OSError, ValueError) as exc:
        error = configuration_error("cannot set up TLS", exc, url.secrets)
    raise error


def plan_for(url: RedisURL, library_client: LibraryClient) -> Plan:
    """chat-state's own connections for ``url``: one server, or the routes of a
    Sentinel group or a Cluster (``library_client`` makes what ``get_client()`` gives)."""
    tls = _tls(url)
    timeouts = (url.connect_timeout, url.socket_timeout)
    settings = Settings(
        *timeouts,
        url.username,
        url.password,
        url.db,
        tls,
        primary_only=url.topology == "sentinel",
    )
    sentinel = url.sentinel_kwargs()
    sentinel_settings = Settings(*timeouts, sentinel["username"], sentinel["password"], tls=tls)
    hosts = [Address(host, port) for host, port in url.hosts]
    events = ConnectionEvents()
    plan = functools.partial(Plan, settings, sentinel_settings, library_client, events)
    if url.topology == "cluster":
        return plan(routes=ClusterRoutes(hosts, key_slot, events))
    if url.topology == "sentinel":
        assert url.service is not None
        return plan(routes=SentinelRoutes(hosts, url.service, events))
    if url.topology == "unix":
        return plan(address=Address(path=url.path))
    return plan(address=hosts[0])


class ClientOnDemand:
    """The client library's own client for the same server(s), made on first use:
    what ``get_client()`` gives when chat-state's own connections do the work."""

    def __init__(self, make: LibraryClient) -> None:
        self._make = make
        self._client: Any = None
        self._owned: list[Any] = []  # clients made here, to close
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client, self._owned = self._make()
            return self._client

    def forget(self) -> list[Any]:
        """The clients made so far, now forgotten (for the backend to close)."""
        with self._lock:
            owned, self._owned, self._client = self._owned, [], None
        return owned
