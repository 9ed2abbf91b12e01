"""What happens to a backend's connections, told once: logs an operator can act on,
and the counters :mod:`chat_state.telemetry` keeps.

A backend makes one :class:`ConnectionEvents` and calls it where a connection is
opened, lost or cannot be opened, and where a Sentinel group or a Cluster moves.
The facade hands it the adapter's logger (the backend's optional
``use_logger(logger)``). None of these is on the path of a command that succeeds
on an open connection: they cost nothing there.

* A server that was reached before and now cannot be is an outage: one WARNING,
  however many commands fail meanwhile; the first connection opened again ends it
  with one INFO line and how long it lasted (and counts a reconnect). A connection
  that drops but opens again at once is DEBUG (a reconnect too).
* A server never reached is not an outage: the command's error says it (a failed
  ``connect()`` is the caller's to report).
* A new primary named by the Sentinels (a failover) and a Cluster slot table read
  again are INFO (the first read is DEBUG); a change of a Cluster's primaries
  counts a failover.

Addresses are ``host:port`` or a socket's path: never a password.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

__all__ = ["ConnectionEvents", "Listener", "add_listener", "emit", "remove_listener"]

#: Told of every counted event: its name (``"reconnect"``, ``"failover"``,
#: ``"lock_lost"``) and its attributes.
Listener = Callable[[str, Mapping[str, str | int]], None]

_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Tell ``listener`` of every counted event from now on."""
    _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop telling ``listener`` (no error if it was not told)."""
    if listener in _listeners:
        _listeners.remove(listener)


def emit(name: str, **attributes: str | int) -> None:
    """Tell every listener of the event ``name``."""
    for listener in list(_listeners):
        listener(name, attributes)


#: (A string: ``LoggerAdapter`` takes a type argument only from Python 3.11.)
def _server(address: str) -> dict[str, str | int]:
    """``host:port`` (or a socket's path) as the conventions' ``server.address`` and
    ``server.port``."""
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit():
        return {"server.address": host.strip("[]"), "server.port": int(port)}
    return {"server.address": address}


Logger: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"


class ConnectionEvents:
    """One backend's connection events: which servers are down since when, which were
    ever reached, and the logger to tell. Shared by the backend's threads."""

    def __init__(self, logger: Logger | None = None) -> None:
        self.logger: Logger = logger if logger is not None else logging.getLogger("chat_state")
        self._lock = threading.Lock()
        self._reached: set[str] = set()
        #: address → when its outage began (monotonic), and whether it was told
        self._down: dict[str, tuple[float, bool]] = {}
        self._primaries: frozenset[str] | None = None  # a Cluster's, as last read

    def dropped(self, address: str, reason: str) -> None:
        """A connection to ``address`` failed with commands in flight: an outage begins
        (told if no connection can be opened again, see :meth:`unreachable`)."""
        with self._lock:
            if address in self._down:
                return
            self._down[address] = (time.monotonic(), False)
        self.logger.debug("chat-state lost a connection to %s (%s)", address, reason)

    def unreachable(self, address: str, reason: str) -> None:
        """No connection to ``address`` could be opened."""
        if address not in self._reached:
            return
        with self._lock:
            began, warned = self._down.get(address, (time.monotonic(), False))
            if warned:
                return
            self._down[address] = (began, True)
        self.logger.warning(
            "chat-state cannot reach %s (%s); retrying as commands need it", address, reason
        )

    def connected(self, address: str) -> None:
        """A connection to ``address`` was opened."""
        with self._lock:
            self._reached.add(address)
            began, warned = self._down.pop(address, (None, False))
        if began is None:
            return
        outage = time.monotonic() - began
        if warned:
            self.logger.info("chat-state reconnected to %s after %.1f s", address, outage)
        else:
            self.logger.debug("chat-state reconnected to %s at once", address)
        emit("reconnect", **_server(address))

    def new_primary(self, service: str, old: str, new: str) -> None:
        """The Sentinels named ``new`` the primary of ``service`` instead of ``old``."""
        self.logger.info(
            "chat-state follows a failover: the Sentinels name %s the primary of %r (was %s)",
            new,
            service,
            old,
        )
        emit("failover", topology="sentinel")

    def slots_read(self, primaries: list[str]) -> None:
        """A Cluster's slot table was read; ``primaries``: the primaries it names."""
        now = frozenset(primaries)
        with self._lock:
            before, self._primaries = self._primaries, now
        if before is None:
            self.logger.debug("chat-state read the Cluster's slot table: %d primaries", len(now))
            return
        new = sorted(now - before)
        self.logger.info(
            "chat-state read the Cluster's slot table again: %d primaries%s",
            len(now),
            f" (new: {', '.join(new)})" if new else "",
        )
        if new:  # (a node that left, or a table read half-way, promotes nobody)
            emit("failover", topology="cluster")
