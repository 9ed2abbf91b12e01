"""The interface between the facades and a backend: send a command, scan, close.

A backend runs one command at a time: ``call(key, args)``, where ``args`` are the
command's words (``("SET", "chat-sdk:cache:k", '"v"', "PX", 60000, "NX")``) and
``key`` is the one key it touches, so that a Cluster can route it (``None`` for a
command with no key, such as ``PING``). The commands are those the operations of
:mod:`chat_state.core.operations` build, and nothing else: ``PING``, ``GET``,
``SET`` (with ``PX`` and ``NX``), ``DEL``, ``SADD``, ``SREM``, ``SISMEMBER``,
``LPOP``, ``LLEN``, ``LRANGE``, ``EVALSHA`` and ``EVAL``, ``HELLO`` without
arguments (health checks), and for the operators' inspection ``SCARD``, ``SSCAN``
(``key cursor COUNT n``), ``UNLINK`` (keys of one slot) and ``INFO`` without
arguments (its text, or a client library's dict of it).

A backend returns replies normalised as the operations read them: text as
``str`` (bytes that are not UTF-8 as U+FFFD), integers as ``int``, nil as ``None``,
arrays as lists; a boolean reply may stand for ``1``/``0`` or for ``OK``. It raises
:class:`~chat_state.errors.BackendError` when the server or the connection fails (a
client library's exception chained, secrets scrubbed: see
:func:`~chat_state.backend.backend_error`), and :class:`NoScriptError`, a
BackendError, for an ``EVALSHA`` whose script the server does not know: the facades
then send the ``EVAL`` once.

A backend may also have ``each_primary(args)``: run the command on every primary it
uses (each of a Cluster's, the one a Sentinel names, the one server) and return a
:class:`NodeReply` for each, the reply or the :class:`BackendError` it got; health
checks and ``stats()`` use it. Without it, they send one command through ``call``.

The sync and async protocols close with different method names (``close`` /
``aclose``), so no class satisfies both by accident.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

from chat_state.core.commands import Arg, Args
from chat_state.errors import BackendError

__all__ = [
    "Arg",
    "Args",
    "AsyncBackend",
    "Backend",
    "BackendFactory",
    "NoScriptError",
    "NodeReply",
]


class NoScriptError(BackendError):
    """The server has no script with that SHA (its script cache was flushed or lost)."""


class NodeReply(NamedTuple):
    """One primary's answer to a command sent to each (``each_primary``)."""

    address: str  # host:port, or a unix socket's path
    reply: Any  # the normalised reply, or the BackendError it failed with
    seconds: float  # how long the round trip took


@runtime_checkable
class Backend(Protocol):
    """A blocking backend."""

    @property
    def client(self) -> Any:
        """The client library's client for the same server(s), for ``get_client()``."""

    def call(self, key: str | None, args: Args) -> Any:
        """Run the command ``args`` (touching ``key``) and return its normalised reply."""

    def scan(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix``, by SCAN on every primary (never KEYS)."""

    def close(self) -> None:
        """Release resources; closes the client only if the backend created it."""


@runtime_checkable
class AsyncBackend(Protocol):
    """An async backend: the same, awaitable.

    ``call`` returns an awaitable (a coroutine or a future) rather than being a
    coroutine function itself, so that the fastest backends add no frame of their
    own. A backend that holds no connection (the memory backend) may set the class
    attribute ``loop_free = True``: an AsyncState then keeps it, and its data, when
    it moves to another event loop (any other backend is opened anew there).
    """

    @property
    def client(self) -> Any:
        """The client library's client for the same server(s), for ``get_client()``."""

    def call(self, key: str | None, args: Args) -> Awaitable[Any]:
        """Run the command ``args`` (touching ``key``); → its normalised reply."""

    def scan(self, prefix: str) -> AsyncIterator[str]:
        """Every key starting with ``prefix``, by SCAN on every primary (never KEYS)."""

    async def aclose(self) -> None:
        """Release resources; closes the client only if the backend created it."""


class BackendFactory(Protocol):
    """What a backend distribution registers for its URL schemes.

    ``validate_url`` runs when an adapter is built, so a bad URL fails before any
    connection is attempted; ``open_*`` create a client from a URL (the backend
    owns and later closes it); ``adopt_*`` wrap a client the application passed
    in (never closed by us) and return ``None`` for a client of another library.
    """

    def validate_url(self, url: str) -> None:
        """Raise :class:`~chat_state.errors.ConfigurationError` for a URL it cannot open."""

    def open_sync(self, url: str) -> Backend: ...
    def open_async(self, url: str) -> AsyncBackend: ...
    def adopt_sync(self, client: object) -> Backend | None: ...
    def adopt_async(self, client: object) -> AsyncBackend | None: ...
