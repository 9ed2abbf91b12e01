"""chat-state's own connections: RESP over hiredis, for every ``redis…``/``valkey…`` URL.

AsyncState's are multiplexed (:mod:`~.multiplexed`: one connection per server, the
commands of one event-loop turn in one write); State's are lean blocking ones
(:mod:`~.blocking`: one per thread in use). Both follow the same Sentinel and Cluster
routes (:mod:`~.routes`, sans-IO), keep their nodes in a :class:`~.nodes.NodeTable`
and are configured by :mod:`~.config` from a parsed URL. The pieces: the wire
format (:mod:`~.protocol`), the failures and the retry schedule (:mod:`~.failures`),
addresses (:mod:`~.address`), the Cluster key slot (:mod:`~.keyslot`). It never
imports a client library: ``get_client()``'s client is made by the caller's
``library_client``. Internal: the names may change between releases.
"""

from __future__ import annotations

from chat_state.backend.urls import RedisURL

from .blocking import BlockingBackend
from .config import LibraryClient, plan_for
from .multiplexed import MultiplexedBackend

__all__ = ["BlockingBackend", "LibraryClient", "MultiplexedBackend", "open_async", "open_sync"]


def open_async(url: RedisURL, library_client: LibraryClient) -> MultiplexedBackend:
    """AsyncState's own connections for ``url`` (nothing is connected yet)."""
    return MultiplexedBackend(plan_for(url, library_client))


def open_sync(url: RedisURL, library_client: LibraryClient) -> BlockingBackend:
    """State's own connections for ``url`` (nothing is connected yet)."""
    return BlockingBackend(plan_for(url, library_client))
