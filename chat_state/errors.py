"""The exceptions chat-state raises.

Every error of ours derives from :class:`ChatStateError`. Errors about what the
caller passed in are also :class:`ValueError`, so code that already catches
``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ChatStateError",
    "ConfigurationError",
    "NotConnectedError",
    "SerializationError",
    "WrongLoopError",
]


class ChatStateError(Exception):
    """Base class of every error raised by chat-state."""


class NotConnectedError(ChatStateError):
    """An operation was called before ``connect()`` (or after ``disconnect()``)."""


class WrongLoopError(NotConnectedError):
    """An :class:`~chat_state.AsyncState` used outside the event loop, or the process,
    that connected it.

    Its connections belong to that loop and process, so nothing was sent. The message
    says what to do: ``await state.connect()`` in this loop (which lets go of the old
    connections once their loop no longer runs, or in a forked child), one AsyncState
    per event loop, or :class:`~chat_state.State` from synchronous code.
    """


class ConfigurationError(ChatStateError, ValueError):
    """A bad URL, an unknown scheme, a missing client library or a bad option."""


class SerializationError(ChatStateError, ValueError):
    """A value that cannot be stored as plain JSON (NaN and infinities included)."""


class BackendError(ChatStateError):
    """The server or the connection to it failed.

    With chat-state's own connections (the default) the message is the server's error
    reply (``WRONGTYPE ...``) or what happened to the connection (``no reply within
    2 s``); with a client library's client (``own_connections=false``, ``client=``,
    coredis) it names the library's exception, which is chained as ``__cause__``. The
    message never contains a password.
    """
