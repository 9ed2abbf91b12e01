"""The nodes that routes send to, shared by a backend's callers (and State's threads)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .address import Address
from .routes import Routes

__all__ = ["NodeTable"]

N = TypeVar("N")


class NodeTable(Generic[N]):
    """The nodes that routes send to, for either transport: one per (server, whether it is
    a Sentinel), made by ``make`` on first use; those the routes no longer use are
    handed back, to be closed."""

    def __init__(self, routes: Routes, make: Callable[[Address, bool], N]) -> None:
        self._routes = routes
        self._make = make
        self._nodes: dict[tuple[Address, bool], N] = {}
        self._version = routes.version
        self._lock = threading.Lock()  # State's threads share the table

    def get(self, address: Address, sentinel: bool = False) -> N:
        node = self._nodes.get((address, sentinel))
        if node is None:
            with self._lock:
                node = self._nodes.get((address, sentinel))
                if node is None:
                    node = self._nodes[address, sentinel] = self._make(address, sentinel)
        return node

    def unused(self) -> list[N]:
        """The data nodes the routes stopped using since last asked, out of the table."""
        if self._routes.version == self._version:
            return []
        with self._lock:
            self._version = self._routes.version
            used = set(self._routes.primaries())
            gone = [key for key in self._nodes if not key[1] and key[0] not in used]
            return [self._nodes.pop(key) for key in gone]

    def take_all(self) -> list[N]:
        """Every node, out of the table."""
        with self._lock:
            nodes = list(self._nodes.values())
            self._nodes.clear()
        return nodes
