"""How a command on one of chat-state's own connections can fail, and the retry schedule.

Every failure is a :class:`~chat_state.errors.BackendError`: what reaches the caller
needs no translation (the messages hold no secret: a server never repeats a
password, and addresses are not secret). The routes tell them apart: a command that
failed in flight (:class:`ConnectionLost`) may have run and is never sent again; one
that could not be sent (:class:`ConnectFailed`) may be.
"""

from __future__ import annotations

from chat_state.backend.interface import NoScriptError
from chat_state.backend.policy import RETRIES, backoff
from chat_state.errors import BackendError

__all__ = [
    "CONNECT_ATTEMPTS",
    "ConnectFailed",
    "ConnectionLost",
    "ServerError",
    "connect_delays",
    "describe",
    "raise_reply",
    "reply_error",
]

#: Attempts to open a connection before a command fails (the kit's policy, which the
#: pooled clients' retries follow too).
CONNECT_ATTEMPTS = RETRIES + 1


class ConnectionLost(BackendError):
    """The connection failed while the command was in flight (it may have run)."""


class ConnectFailed(ConnectionLost):
    """No connection could be opened, so the command was never sent."""


class ServerError(BackendError):
    """The server answered a command with an error reply (hiredis builds these)."""


def reply_error(reply: ServerError) -> BackendError:
    """What an error reply raises: NOSCRIPT as :class:`NoScriptError`, others as they are."""
    if str(reply).startswith("NOSCRIPT"):
        return NoScriptError(str(reply))
    return reply


def raise_reply(reply: ServerError) -> None:
    """Raise an error reply (see :func:`reply_error`)."""
    raise reply_error(reply)


def connect_delays() -> list[float]:
    """Seconds to wait before each attempt to open a connection."""
    return [0.0] + [backoff(attempt) for attempt in range(CONNECT_ATTEMPTS - 1)]


def describe(exc: BaseException) -> str:
    """A failure in a few words, for a message (a timeout's text is often empty)."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return str(exc) or type(exc).__name__
