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
]


class ChatStateError(Exception):
    """Base class of every error raised by chat-state."""


class NotConnectedError(ChatStateError):
    """An operation was called before ``connect()`` (or after ``disconnect()``)."""


class ConfigurationError(ChatStateError, ValueError):
    """A bad URL, an unknown scheme, a missing client library or a bad option."""


class SerializationError(ChatStateError, ValueError):
    """A value that cannot be stored as plain JSON (NaN and infinities included)."""


class BackendError(ChatStateError):
    """The server or the connection to it failed.

    The client library's exception is chained as ``__cause__``. The message never
    contains a password.
    """
