"""What chat-state's own connections share, asyncio and blocking alike.

The commands' and replies' form (hiredis packs and parses), where a server is and how
a connection to it is prepared (:class:`Address`, :class:`Settings`), the failures
(:class:`ConnectionLost`, :class:`ConnectFailed`, :class:`ServerError`), the retry
schedule, and what both backends do with errors.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hiredis

from ._replies import backend_error
from .protocols import NoScriptError

if TYPE_CHECKING:
    from ._routes import Routes

__all__ = [
    "Address",
    "Arg",
    "Args",
    "BackendBase",
    "ConnectFailed",
    "ConnectionLost",
    "LibraryClient",
    "Plan",
    "ServerError",
    "Settings",
    "backoff",
    "connect_delays",
    "describe",
    "new_reader",
    "pack",
    "set_command",
    "ssl_context",
]

Arg = str | int
Args = tuple[Arg, ...]

#: Attempts to open a connection before a command fails, and the backoff between them
#: (the same bounds as the pooled clients' retry policy).
CONNECT_ATTEMPTS = 4
BACKOFF_BASE_S = 0.025
BACKOFF_CAP_S = 0.25
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
    """One command in RESP (the operations have checked that every text has a UTF-8 form)."""
    # hiredis's stub types the argument as a one-element tuple; it takes any length.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def new_reader() -> hiredis.Reader:
    """A reply parser: text as ``str`` (U+FFFD for bytes that are not UTF-8, as in
    TypeScript), error replies as :class:`ServerError` values."""
    return hiredis.Reader(encoding="utf-8", errors="replace", replyError=ServerError)


def describe(exc: BaseException) -> str:
    """A failure in a few words, for a message (a timeout's text is often empty)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__


def connect_delays() -> list[float]:
    """Seconds to wait before each attempt to open a connection."""
    return [0.0] + [backoff(attempt) for attempt in range(CONNECT_ATTEMPTS - 1)]


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


def set_command(key: str, value: str, px: int | None, nx: bool) -> Args:
    """SET with its options, as the backends' ``set`` takes them."""
    args: Args = ("SET", key, value)
    if px is not None:
        args += ("PX", px)
    if nx:
        args += ("NX",)
    return args


#: Makes the client library's own client for a URL: → (client, every client to close).
LibraryClient = Callable[[], tuple[Any, list[Any]]]


@dataclass(frozen=True)
class Plan:
    """Everything chat-state's own connections for one URL need, asyncio or blocking."""

    library: str  # the client library's name, for messages
    secrets: tuple[str, ...]  # scrubbed from every message
    settings: Settings  # the data nodes'
    sentinel_settings: Settings  # the Sentinels' (used by a Sentinel group only)
    library_client: LibraryClient  # for get_client()
    address: Address | None = None  # one server...
    routes: Routes | None = None  # ...or a Sentinel group or Cluster


class BackendBase:
    """What chat-state's own backends (asyncio and blocking) share: errors, secrets,
    and the client library's own client for ``get_client()``, made on first use.
    """

    def __init__(self, plan: Plan) -> None:
        self._library = plan.library
        self._secrets = plan.secrets
        self._make_client = plan.library_client
        self._client: Any = None
        self._owned: list[Any] = []  # clients made here, to close
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        """A client of the library for the same server(s): what ``get_client()`` gives."""
        with self._client_lock:
            if self._client is None:
                self._client, self._owned = self._make_client()
            return self._client

    def _made_clients(self) -> list[Any]:
        """The clients :attr:`client` made, now forgotten (for the backend to close)."""
        with self._client_lock:
            owned, self._owned, self._client = self._owned, [], None
        return owned

    def _error(self, exc: Exception) -> Exception:
        """Our error for ``exc`` (NOSCRIPT is the drivers' cue to send the source)."""
        if isinstance(exc, ServerError) and str(exc).startswith("NOSCRIPT"):
            return NoScriptError(str(exc))
        return backend_error(self._library, exc, self._secrets)
