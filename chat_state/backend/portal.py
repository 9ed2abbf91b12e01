"""Blocking access to an async-only backend, through one anyio portal per process.

:class:`State` talks to its own connections (or to redis-py and valkey-py) natively.
A client library with no blocking client (coredis) is driven through
:class:`PortalBackend`: an anyio
blocking portal, an event loop in a daemon thread, started on first use and
shared by every such backend of the process. It is safe to call from many
threads, replaced in a child process after ``fork()`` (the parent's loop thread
does not exist there: gunicorn with ``--preload``), and closed at exit, after
the clients it drives, without resource warnings.

Each call runs as a task of the portal's loop; the backend keeps its client
alive between calls (coredis: in a task of its own, see
:func:`~chat_state.backend.loops.spawn_detached`).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .interface import Args, AsyncBackend

__all__ = ["PortalBackend"]


class _Holder:
    """The process's portal: started lazily, forgotten after fork, stopped at exit."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._context: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None

    def portal(self) -> BlockingPortal:
        with self.lock:
            if self._portal is None:
                self._context = start_blocking_portal(name="chat-state portal")
                self._portal = self._context.__enter__()
            return self._portal

    def stop(self) -> None:
        with self.lock:
            context, self._context, self._portal = self._context, None, None
        if context is not None:
            context.__exit__(None, None, None)

    def forget(self) -> None:
        """In a forked child: the parent's portal thread is not here; start afresh."""
        self.lock = threading.Lock()
        _abandoned.append((self._context, self._portal))  # never finalised in the child
        self._context = self._portal = None


_holder = _Holder()
_backends: weakref.WeakSet[PortalBackend] = weakref.WeakSet()
_abandoned: list[Any] = []


@dataclass
class _Session:
    """One client's life in the portal."""

    pid: int
    portal: BlockingPortal
    backend: AsyncBackend


async def _collect(backend: AsyncBackend, prefix: str) -> list[str]:
    return [key async for key in backend.scan(prefix)]


class PortalBackend:
    """:class:`~chat_state.backend.Backend` over an async backend, through the portal.

    Args:
        open_async: Creates the async backend (and its client); called in the portal.
    """

    def __init__(self, open_async: Callable[[], AsyncBackend]) -> None:
        self._open = open_async
        self._lock = threading.Lock()
        self._session: _Session | None = None
        _backends.add(self)

    def _current(self) -> _Session:
        session = self._session
        if session is not None and session.pid == os.getpid():
            return session
        with self._lock:
            session = self._session
            if session is None or session.pid != os.getpid():
                if session is not None:  # the parent's, in a forked child: leave it be
                    _abandoned.append(session)
                session = self._session = self._start()
            return session

    def _start(self) -> _Session:
        portal = _holder.portal()
        backend = self._open()
        # Connects; a backend that fails to connect holds nothing.
        portal.call(backend.call, None, ("PING",))
        return _Session(os.getpid(), portal, backend)

    @property
    def client(self) -> Any:
        return self._current().backend.client

    def call(self, key: str | None, args: Args) -> Any:
        session = self._current()
        return session.portal.call(session.backend.call, key, args)

    def scan(self, prefix: str) -> Iterator[str]:
        session = self._current()
        return iter(session.portal.call(_collect, session.backend, prefix))

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None and session.pid == os.getpid():
            session.portal.call(session.backend.aclose)


def _shutdown() -> None:
    """At exit: close every client driven through the portal, then the portal."""
    for backend in list(_backends):
        backend.close()
    _holder.stop()


def _after_fork_in_child() -> None:
    _holder.forget()
    for backend in list(_backends):
        backend._lock = threading.Lock()


atexit.register(_shutdown)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
