"""The exceptions chat-state raises.

Every error of ours derives from :class:`ChatStateError`. Errors about what the
caller passed in are also :class:`ValueError`, so code that already catches
``ValueError`` keeps working.

When the application has imported ``chat_sdk``, an operation on an adapter that is
not connected raises an error that is also chat_sdk's ``StateNotConnectedError``
(see :func:`not_connected`); chat-state itself never imports chat_sdk.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, TypeVar, cast

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
    """An operation was called before ``connect()`` (or after ``disconnect()``).

    When the application has imported ``chat_sdk``, the error an operation raises is
    also an instance of ``chat_sdk.errors.StateNotConnectedError`` (with its
    ``adapter_name``), so that ``except StateNotConnectedError`` catches it as it would
    chat_sdk's own adapters' (``Chat.shutdown()`` disconnects the state).
    """


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


# -- chat_sdk's StateNotConnectedError, when the application uses chat_sdk -----------------

#: Where chat_sdk defines the error its users catch for a state adapter used unconnected.
_SDK_MODULE, _SDK_ERROR = "chat_sdk.errors", "StateNotConnectedError"

N = TypeVar("N", bound=NotConnectedError)

#: (our class, chat_sdk's class) → their subclass (``None``: they cannot be combined).
_combined: dict[tuple[type[NotConnectedError], type[Exception]], type[Any] | None] = {}


class _AlsoChatSdks:
    """What the classes that are both ours and chat_sdk's ``StateNotConnectedError`` add:
    our message as it is (theirs would build its own from ``adapter_name``), theirs
    ``adapter_name``, and pickling (rebuilt as the receiving process's own)."""

    adapter_name: str
    _plain: type[NotConnectedError]  # the class of ours it is combined with

    def __init__(self, message: str = "", *, adapter_name: str = "") -> None:
        # (both optional: ``type(error)(*error.args)`` rebuilds it, as for any error)
        Exception.__init__(cast(Exception, self), message)
        self.adapter_name = adapter_name

    def __reduce__(self) -> tuple[Any, ...]:
        args = cast(Exception, self).args
        revived = (self._plain, args[0] if args else "", self.adapter_name)
        return _revive, revived, dict(self.__dict__)  # (notes and attributes too)


def _chat_sdks_error() -> type[Exception] | None:
    """chat_sdk's ``StateNotConnectedError`` if the application imported chat_sdk."""
    module = sys.modules.get(_SDK_MODULE)
    found = getattr(module, _SDK_ERROR, None) if module is not None else None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _combine(kind: type[NotConnectedError], theirs: type[Exception]) -> type[Any] | None:
    """A subclass of ``kind`` and of ``theirs``, named as ``kind`` (tracebacks and
    telemetry's ``error.type`` read ``chat_state.errors.NotConnectedError`` as before)."""
    namespace = {
        "__module__": kind.__module__,
        "__qualname__": kind.__qualname__,
        "__doc__": kind.__doc__,
        "_plain": kind,
    }
    try:
        return type(kind.__name__, (_AlsoChatSdks, kind, theirs), namespace)
    except TypeError:  # a chat_sdk whose class cannot be combined with ours: ours alone
        return None


def not_connected(kind: type[N], message: str, adapter_name: str) -> N:
    """A ``kind`` error (:class:`NotConnectedError` or a subclass) with ``message``;
    when ``chat_sdk`` has been imported, also an instance of its
    ``StateNotConnectedError``, whose ``adapter_name`` is ``adapter_name``.

    chat_sdk is only looked up in :data:`sys.modules`, never imported; each combined
    class is made once.
    """
    theirs = _chat_sdks_error()
    if theirs is None:
        return kind(message)
    key = (kind, theirs)
    if key in _combined:
        combined = _combined[key]
    else:
        combined = _combined.setdefault(key, _combine(kind, theirs))
    if combined is None:
        return kind(message)
    return cast(N, combined(message, adapter_name=adapter_name))


def _revive(kind: type[NotConnectedError], message: str, adapter_name: str) -> NotConnectedError:
    """Unpickle a combined error: chat_sdk's too if the receiving process imported it."""
    return not_connected(kind, message, adapter_name)
