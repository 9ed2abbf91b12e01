"""The servers a benchmark run starts, and the CPU pinning it applies.

A run starts its own private ``redis-server`` processes on free loopback ports
(never 6379) through :mod:`chat_state.testing`: one standalone server
(:class:`~chat_state.testing.RedisServer`) and, when a Cluster subject is
selected, a :class:`~chat_state.testing.Cluster` of three primaries without
replicas (replicas would add replication work on the server CPU and measure
nothing chat-state does). Every server is stopped when the :class:`Servers`
context exits, on error too; only the processes it started are signalled.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster

from chat_state.testing import Cluster, Managed, RedisServer, ServerUnavailable, find_redis_server

__all__ = ["Pinning", "Servers", "pin_process", "plan_pinning"]

HOST = "127.0.0.1"
CLUSTER_SHARDS = 3
CLUSTER_FORM_TIMEOUT_S = 30.0
CLUSTER_NODE_TIMEOUT_MS = 5000


@dataclass
class Pinning:
    """Which CPUs the server and the clients run on, and how that was arranged."""

    server_cpu: int | None
    client_cpu: int | None
    taskset: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def applied(self) -> bool:
        """Whether servers and clients are on separate CPUs."""
        return self.server_cpu is not None and self.client_cpu is not None

    def node_prefix(self) -> list[str]:
        """The command prefix that pins a Node process to the client CPU (may be empty)."""
        if self.applied and self.taskset is not None:
            return [self.taskset, "-c", str(self.client_cpu)]
        return []

    def describe(self) -> str:
        """One line for the report."""
        if not self.applied:
            return "none (" + "; ".join(self.notes) + ")"
        node = (
            f"taskset -c {self.client_cpu}" if self.taskset else "inherited from the Python process"
        )
        return (
            f"redis-server (every thread) on CPU {self.server_cpu}; Python clients on CPU "
            f"{self.client_cpu} (os.sched_setaffinity); Node clients on CPU {self.client_cpu} "
            f"({node})"
        )

    def as_json(self) -> dict[str, Any]:
        """The pinning as a JSON object."""
        return {
            "applied": self.applied,
            "server_cpu": self.server_cpu,
            "client_cpu": self.client_cpu,
            "node_taskset": bool(self.applied and self.taskset),
            "description": self.describe(),
            "notes": self.notes,
        }


def plan_pinning(enabled: bool = True) -> Pinning:
    """Choose the server CPU (the lowest available) and the client CPU (the next one).

    Pinning needs two CPUs in this process's affinity mask and Linux's
    ``sched_setaffinity``; without them nothing is pinned and the reason is noted.
    """
    taskset = shutil.which("taskset")
    if not enabled:
        return Pinning(None, None, taskset, ["disabled with --no-pin"])
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(None, None, taskset, ["os.sched_setaffinity is not available"])
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(None, None, taskset, [f"only {len(cpus)} CPU available"])
    notes = [] if taskset else ["taskset not found: Node inherits the Python process's CPU"]
    return Pinning(cpus[0], cpus[1], taskset, notes)


def pin_process(pid: int, cpu: int) -> int:
    """Pin every thread of process ``pid`` to ``cpu``; return how many threads were pinned.

    ``taskset -c`` on a command line pins only threads created later; a server that
    is already running has its threads listed in ``/proc/PID/task``.
    """
    pinned = 0
    for tid in sorted(os.listdir(f"/proc/{pid}/task")):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {cpu})
            pinned += 1
    return pinned


def _admin(port: int) -> redis.Redis:
    """A plain admin client (text replies) for one of our servers."""
    return redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=10)


class Servers(Managed):
    """The run's standalone server and (optionally) its 3-primary cluster.

    Usage::

        with Servers(pinning, cluster=True) as servers:
            servers.flush()
            use(servers.standalone_url, servers.cluster_url)
    """

    def __init__(self, pinning: Pinning, *, cluster: bool) -> None:
        """Describe the servers; nothing starts before ``__enter__``."""
        binary = find_redis_server()
        if binary is None:
            raise ServerUnavailable("redis-server not found (apt-get install redis-server)")
        self.binary = binary
        self.pinning = pinning
        self.want_cluster = cluster
        self.standalone: RedisServer | None = None
        self.cluster: Cluster | None = None
        self._admins: list[Any] = []  # redis.Redis and RedisCluster clients to close

    # -- lifecycle --------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether the servers were started."""
        return self.standalone is not None

    def start(self) -> Servers:
        """Start the standalone server (and the cluster), then pin their threads."""
        self.standalone = RedisServer(binary=self.binary).start()
        if self.want_cluster:
            self.cluster = Cluster(
                self.binary,
                shards=CLUSTER_SHARDS,
                replicas=0,
                node_timeout_ms=CLUSTER_NODE_TIMEOUT_MS,
                startup_timeout=CLUSTER_FORM_TIMEOUT_S,
            ).start()
        if self.pinning.applied:
            assert self.pinning.server_cpu is not None
            for server in self.all_servers():
                if server.pid is not None:
                    pin_process(server.pid, self.pinning.server_cpu)
        return self

    def stop(self) -> None:
        """Stop every server this object started (only those); safe to call twice."""
        for client in self._admins:
            with contextlib.suppress(Exception):
                client.close()
        self._admins.clear()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None
        if self.standalone is not None:
            self.standalone.stop()
            self.standalone = None

    @property
    def cluster_nodes(self) -> list[RedisServer]:
        """The cluster's nodes (its primaries), or none."""
        return list(self.cluster.nodes) if self.cluster is not None else []

    def all_servers(self) -> list[RedisServer]:
        """Every server started, the standalone one first."""
        head = [self.standalone] if self.standalone is not None else []
        return [*head, *self.cluster_nodes]

    # -- what the runner uses ------------------------------------------------------

    @property
    def standalone_url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the standalone server."""
        if self.standalone is None:
            raise RuntimeError("servers are not started")
        return self.standalone.url

    @property
    def cluster_url(self) -> str:
        """``redis+cluster://...`` listing the cluster's primaries."""
        if self.cluster is None:
            raise RuntimeError("no cluster was started")
        return self.cluster.url

    def admin(self) -> redis.Redis:
        """An admin client for the standalone server (closed by :meth:`stop`)."""
        if self.standalone is None:
            raise RuntimeError("servers are not started")
        client = _admin(self.standalone.port)
        self._admins.append(client)
        return client

    def cluster_admin(self) -> redis.cluster.RedisCluster:
        """A cluster client (text replies) for seeding data (closed by :meth:`stop`)."""
        if not self.cluster_nodes:
            raise RuntimeError("no cluster was started")
        node_class: Any = redis.cluster.ClusterNode  # untyped in redis-py
        nodes = [node_class(HOST, n.port) for n in self.cluster_nodes]
        client = redis.cluster.RedisCluster(startup_nodes=nodes, decode_responses=True)
        self._admins.append(client)
        return client

    def flush(self) -> None:
        """FLUSHALL on every server (and reset the standalone server's command stats)."""
        for server in self.all_servers():
            with _admin(server.port) as client:
                client.flushall()
        self.reset_stats()

    def reset_stats(self) -> None:
        """``CONFIG RESETSTAT`` on the standalone server."""
        with _admin(self.standalone_port) as client:
            client.config_resetstat()

    def commandstats(self) -> dict[str, int]:
        """Calls per command on the standalone server since the last reset."""
        with _admin(self.standalone_port) as client:
            stats = client.info("commandstats")
        calls: dict[str, int] = {}
        for name, fields in stats.items():
            if isinstance(fields, dict) and "calls" in fields:
                calls[name.removeprefix("cmdstat_")] = int(fields["calls"])
        for ignored in ("config|resetstat", "info", "flushall", "ping", "hello", "client|setinfo"):
            calls.pop(ignored, None)
        return dict(sorted(calls.items()))

    def version(self) -> str:
        """The standalone server's ``redis_version``."""
        with _admin(self.standalone_port) as client:
            return str(client.info("server").get("redis_version", "?"))

    @property
    def standalone_port(self) -> int:
        """The standalone server's port."""
        if self.standalone is None:
            raise RuntimeError("servers are not started")
        return self.standalone.port
