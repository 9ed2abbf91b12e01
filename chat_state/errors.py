"""The exceptions chat-state raises.

Every error of ours derives from :class:`ChatStateError`. Errors about what the
caller passed in are also :class:`ValueError`, so code that already catches
``ValueError`` keeps working.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = [
    "BackendError",
    "ChatStateError",
    "ConfigurationError",
    "LockLostError",
    "LockUnavailableError",
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


class _LockError(ChatStateError):
    """An error about one thread's lock (it names the thread, never the token)."""

    def __init__(self, message: str, *, thread_id: str) -> None:
        super().__init__(message)
        self.thread_id = thread_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Picklable (multiprocessing sends errors between processes) with its thread_id.
        return functools.partial(type(self), thread_id=self.thread_id), self.args


class LockUnavailableError(_LockError):
    """``lock()`` could not take the thread's lock within its ``wait_ms``: another
    holder has it.

    Attributes:
        thread_id: The thread whose lock was wanted.
    """


class LockLostError(_LockError):
    """A lock held by ``lock()`` was lost before its block ended: it expired, was
    force-released, or another holder took it, so another worker may have run at the
    same time.

    AsyncState cancels the block as soon as a renewal finds the lock gone and raises
    this from the ``async with``; State cannot interrupt a thread, so the
    :class:`~chat_state.HeldLock` says ``lost`` at once and this is raised when the
    block ends. An exception raised by the block itself is never replaced by this one.

    Attributes:
        thread_id: The thread whose lock was lost.
    """
