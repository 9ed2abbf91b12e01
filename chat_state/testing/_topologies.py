"""Redis Cluster and Redis Sentinel topologies of private servers.

Built on :class:`~chat_state.testing.RedisServer`:

* :class:`Cluster`: cluster-mode servers forming ``shards`` primaries (default 3) with
  ``replicas`` replicas each (default 1), assembled with raw ``CLUSTER`` commands (no
  ``redis-cli``/``valkey-cli``);
* :class:`SentinelGroup`: a primary, a replica and three Sentinels watching the service
  ``mymaster`` (quorum 2), optionally with passwords on the data nodes and on the
  Sentinels.

Both take the server binary to run (``redis-server`` by default, or ``valkey-server``;
see :func:`~chat_state.testing.find_server_binary`), bind to 127.0.0.1 on free ports
(never 6379), keep persistence off, and stop only the processes they started.
Failover tests kill a node with :meth:`RedisServer.kill`, wait with ``wait_healthy()``,
and may bring it back with :meth:`RedisServer.restart`.

Every wait is bounded in time and in number of polls; a timeout raises
:class:`RuntimeError` with the state seen last, each node's view and the logs' tails.
Admin commands go through :class:`~chat_state.testing.AdminClient`, one connection per
server.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from chat_state.connections.keyslot import SLOTS
from chat_state.connections.keyslot import key_slot as _key_slot

from ._admin import AdminClient, Arg, ReplyError, parse_info
from ._servers import BIND_FAILURE_MARKERS, HOST, Managed, RedisServer, free_port, require_binary

__all__ = [
    "CLUSTER_SLOTS",
    "Cluster",
    "ClusterNodeView",
    "SentinelGroup",
    "key_slot",
    "slot_ranges",
]

CLUSTER_SLOTS = SLOTS
"""Number of hash slots in a Redis Cluster."""

_POLL_INTERVAL = 0.05
#: Seconds an admin command may take. Above valkey's 2 s default for CLUSTER SETSLOT, which
#: waits for the replicas to acknowledge (on a loaded machine a reply came after 2 s).
_ADMIN_TIMEOUT = 10.0
_START_ATTEMPTS = 5
_DIAG_LOG_LINES = 12
_FAST_SYNC_ARGS = ("--repl-diskless-sync-delay", "0")
"""Data-node options: start a replica's full sync at once (the default waits 5 s)."""


# -- helpers --------------------------------------------------------------------------


def _text(value: Any) -> str:
    """Decode a reply item (bytes or str or number) to ``str``."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _pairs(reply: Any) -> dict[str, str]:
    """Turn a flat ``[key, value, key, value, ...]`` reply into a dict of strings."""
    if isinstance(reply, dict):
        return {_text(k): _text(v) for k, v in reply.items()}
    items = list(reply)
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _parse_info(reply: Any) -> dict[str, str]:
    """Parse an ``INFO`` or ``CLUSTER INFO`` reply into strings."""
    return parse_info(_text(reply))


def key_slot(key: str | bytes) -> int:
    """The Cluster hash slot of ``key``: CRC16 (XMODEM) of it, or of its ``{hash tag}``
    (chat-state's own, which ``tests/test_routes.py`` holds against redis-py's)."""
    return _key_slot(key.encode() if isinstance(key, str) else key)


def slot_ranges(shards: int) -> list[tuple[int, int]]:
    """Split the 16384 slots into ``shards`` contiguous ranges, as ``redis-cli`` does.

    For three shards: ``[(0, 5460), (5461, 10922), (10923, 16383)]``.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    per_shard = CLUSTER_SLOTS / shards
    ranges: list[tuple[int, int]] = []
    first, cursor = 0, 0.0
    for index in range(shards):
        last = int(cursor + per_shard - 1 + 0.5)
        if last > CLUSTER_SLOTS - 1 or index == shards - 1:
            last = CLUSTER_SLOTS - 1
        ranges.append((first, last))
        cursor += per_shard
        first = last + 1
    return ranges


def _wait_until(
    check: Callable[[], str | None],
    timeout: float,
    what: str,
    describe: Callable[[], str],
) -> None:
    """Poll ``check`` every 50 ms until it returns ``None`` (done).

    ``check`` returns a short reason while the condition does not hold yet; connection
    and server errors count as "not yet".  Bounded by ``timeout`` seconds and by a number
    of polls; on timeout raises :class:`RuntimeError` with the last reason and
    ``describe()``.
    """
    deadline = time.monotonic() + timeout
    max_polls = int(timeout / _POLL_INTERVAL) + 2
    reason = "never checked"
    for _poll in range(max_polls):
        try:
            result = check()
        except (ReplyError, OSError) as exc:
            result = f"{type(exc).__name__}: {exc}"
        if result is None:
            return
        reason = result
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_INTERVAL)
    try:
        state = describe()
    except Exception as exc:  # diagnostics must not hide the timeout
        state = f"(could not describe the state: {exc!r})"
    raise RuntimeError(f"{what}: not reached within {timeout:g} s; last: {reason}\n{state}")


def _start_with_retries(make: Callable[[], RedisServer]) -> RedisServer:
    """Start ``make()``'s server, retrying with a new one if its port was taken meanwhile."""
    for attempt in range(_START_ATTEMPTS):
        server = make()
        try:
            return server.start()
        except RuntimeError as exc:
            message = str(exc).lower()
            taken = any(marker in message for marker in BIND_FAILURE_MARKERS)
            if not taken or attempt == _START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class _Admin:
    """Cached admin clients, one per server (each keeps one connection)."""

    def __init__(self) -> None:
        """Start with no clients."""
        self._clients: dict[int, tuple[RedisServer, AdminClient]] = {}

    def client(self, server: RedisServer, password: str | None) -> AdminClient:
        """Return the admin client for ``server`` (created on first use)."""
        entry = self._clients.get(id(server))
        if entry is None or entry[0] is not server:
            client = AdminClient(server.port, host=HOST, password=password, timeout=_ADMIN_TIMEOUT)
            entry = (server, client)
            self._clients[id(server)] = entry
        return entry[1]

    def close(self) -> None:
        """Close every client."""
        for _server, client in self._clients.values():
            with contextlib.suppress(OSError):
                client.close()
        self._clients.clear()


def _describe_server(server: RedisServer, name: str, lines: int = _DIAG_LOG_LINES) -> str:
    """One server's identity and the tail of its log, for timeout messages."""
    try:
        port: int | str = server.port
    except RuntimeError:
        port = "-"
    header = f"--- {name} port={port} pid={server.pid} running={server.running}"
    return f"{header}\n{server.log_tail(lines) or '(log is empty)'}"


# -- Redis Cluster --------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeView:
    """One line of ``CLUSTER NODES``: how some node sees a node of the cluster."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    link_state: str
    slots: tuple[tuple[int, int], ...]

    @property
    def is_primary(self) -> bool:
        """Flagged ``master``."""
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        """Flagged ``slave``."""
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged ``fail`` (agreed failure) or ``fail?`` (suspected)."""
        return "fail" in self.flags or "fail?" in self.flags

    def owns(self, slot: int) -> bool:
        """Whether ``slot`` is in this node's slot ranges."""
        return any(first <= slot <= last for first, last in self.slots)

    @classmethod
    def parse(cls, line: str) -> ClusterNodeView:
        """Parse ``<id> <ip:port@cport[,host]> <flags> <primary> <ping> <pong> <epoch>
        <link> <slot> ...``; migrating/importing markers (``[...]``) are skipped.
        """
        fields = line.split()
        address = fields[1].split("@", 1)[0]
        port = int(address.rsplit(":", 1)[1]) if ":" in address else 0
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        return cls(
            node_id=fields[0],
            port=port,
            flags=frozenset(fields[2].split(",")),
            primary_id=None if fields[3] == "-" else fields[3],
            link_state=fields[7],
            slots=tuple(slots),
        )


class Cluster(Managed):
    """A private Redis Cluster: ``shards`` primaries (default 3), ``replicas`` each (1).

    Nodes run with ``--cluster-enabled yes --cluster-config-file nodes.conf
    --cluster-node-timeout 1000`` (by default), an explicit free ``--cluster-port`` (the
    default port+10000 may exceed 65535 for high ephemeral ports), persistence off, and
    ``--cluster-replica-validity-factor 0`` so that a replica always stands for election
    however long its link was down, and ``--repl-diskless-sync-delay 0`` so that replicas
    sync at once (the default 5 s delay dominates start-up otherwise).  Slots are split
    as ``redis-cli --cluster create`` would (0-5460, 5461-10922, 10923-16383 for three
    shards).

    Roles change with failovers: :attr:`primaries` and :attr:`replicas` are as of the last
    :meth:`refresh_roles` (called by :meth:`start` and :meth:`wait_healthy`); a killed
    node is in neither.  :attr:`nodes` always lists all servers, primaries first.

    Usage::

        with Cluster() as cluster:
            with State.from_url(cluster.url) as state:
                state.subscribe("thread-1")
                cluster.node_for_key(b"chat-sdk:subscriptions").kill()
                cluster.wait_healthy(15)
                assert state.is_subscribed("thread-1")
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        shards: int = 3,
        replicas: int = 1,
        password: str | None = None,
        node_timeout_ms: int = 1000,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe a cluster; nothing starts until :meth:`start` (or ``with``).

        Args:
            binary: ``redis-server`` or ``valkey-server`` path (7.0 or later); by
                default :func:`~chat_state.testing.find_redis_server`'s.
            shards: number of primaries.
            replicas: replicas per primary (0 for a cluster of primaries only).
            password: if set, every node requires it (``--requirepass``/``--masterauth``).
            node_timeout_ms: ``cluster-node-timeout``; failure detection takes about this.
            startup_timeout: bound, in seconds, on forming the cluster.
            extra_args: more options for every node's command line.

        Raises:
            ServerUnavailable: ``binary`` is not given and no ``redis-server`` is found.
        """
        if isinstance(extra_args, str):
            raise TypeError("extra_args must be a sequence of str, not a single str")
        if shards < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one shard, and replicas >= 0")
        self.binary: str = require_binary(binary)
        self.shards = shards
        self.replica_count = replicas
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.startup_timeout = startup_timeout
        self.extra_args: list[str] = list(extra_args)
        self.nodes: list[RedisServer] = []
        self.primaries: list[RedisServer] = []
        self.replicas: list[RedisServer] = []
        self._node_ids: dict[int, str] = {}
        self._bus_ports: dict[int, int] = {}
        self._admin = _Admin()

    # -- public API -------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        """Every node's port, the initial primaries first."""
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,...`` listing every node, initial primaries first.

        Every node is listed so that a client can still bootstrap after a seed was
        killed.  No password is included.
        """
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    @property
    def auth_url(self) -> str:
        """:attr:`url` with the password, if any (``redis+cluster://:PW@...``)."""
        if self.password is None:
            return self.url
        hosts = self.url.removeprefix("redis+cluster://")
        return f"redis+cluster://:{quote(self.password, safe='')}@{hosts}"

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node, for ``RedisCluster(startup_nodes=...)``."""
        return [(HOST, port) for port in self.ports]

    def node_id(self, node: RedisServer) -> str:
        """The cluster node id of ``node`` (stable across kill and restart)."""
        return self._node_ids[id(node)]

    def start(self) -> Cluster:
        """Start the nodes, join them, assign slots, attach replicas; return ``self``.

        Raises:
            RuntimeError: a node did not start, or the cluster did not form within
                ``startup_timeout``; the message shows each node's view and log tail.
        """
        if self.nodes:
            raise RuntimeError("cluster already started")
        try:
            used: set[int] = set()
            for _index in range(self.shards * (1 + self.replica_count)):
                self.nodes.append(self._start_node(used))
            self._form()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node this cluster started (only those) and forget them."""
        self._admin.close()
        for node in self.nodes:
            node.stop()
        self.nodes.clear()
        self.primaries.clear()
        self.replicas.clear()
        self._node_ids.clear()
        self._bus_ports.clear()

    def client(self, node: RedisServer) -> AdminClient:
        """The cluster's admin client for ``node`` (with the password; closed by :meth:`stop`).

        One per node, kept: consecutive commands share its connection.
        """
        return self._admin.client(node, self.password)

    def refresh_roles(self) -> None:
        """Ask each running node for its own role and update primaries and replicas.

        A node is a primary if it says ``myself,master`` and owns slots, a replica if it
        says ``myself,slave``; killed, unreachable and slot-less primaries are in
        neither list.  Primaries are ordered by their first slot, replicas by their
        primary's position.
        """
        selves = self._self_views()
        primaries = sorted(
            (node for node, view in selves.items() if view.is_primary and view.slots),
            key=lambda node: min(first for first, _last in selves[node].slots),
        )
        order = {self.node_id(node): index for index, node in enumerate(primaries)}
        replicas = sorted(
            (node for node, view in selves.items() if view.is_replica),
            key=lambda node: order.get(selves[node].primary_id or "", len(order)),
        )
        self.primaries = primaries
        self.replicas = replicas

    def node_for_slot(self, slot: int) -> RedisServer:
        """The running primary that, by its own account, owns ``slot``.

        Raises:
            LookupError: no running node claims the slot (e.g. its primary was killed and
                no replica has taken over yet).
        """
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot must be in 0..{CLUSTER_SLOTS - 1}, not {slot}")
        for node, view in self._self_views().items():
            if view.is_primary and view.owns(slot):
                return node
        raise LookupError(f"no running primary owns slot {slot}")

    def node_for_key(self, key: str | bytes) -> RedisServer:
        """The running primary owning ``key``'s hash slot (hash tags honoured)."""
        return self.node_for_slot(key_slot(key))

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until the running nodes form a healthy cluster, then :meth:`refresh_roles`.

        Healthy means: every running node reports ``cluster_state:ok``; every slot is
        claimed by exactly one running primary; every running node's ``CLUSTER NODES``
        assigns slots only to those primaries; every other running node is a replica of
        one of them with its replication link up.

        Raises:
            RuntimeError: not healthy within ``timeout`` seconds (with diagnostics).
        """
        _wait_until(self._health_problem, timeout, "cluster healthy", self.describe)
        self.refresh_roles()

    def describe(self) -> str:
        """Each node's port, pid, role and ``CLUSTER NODES`` view, and its log tail."""
        parts: list[str] = []
        for index, node in enumerate(self.nodes):
            name = f"node {index} id={self._node_ids.get(id(node), '?')[:12]}"
            parts.append(_describe_server(node, name))
            if node.running:
                try:
                    parts.append("CLUSTER NODES:\n" + self._cluster_nodes_text(node).rstrip())
                except (ReplyError, OSError) as exc:
                    parts.append(f"CLUSTER NODES failed: {exc!r}")
        return "\n".join(parts)

    @property
    def started(self) -> bool:
        """Whether the nodes were started."""
        return bool(self.nodes)

    def __repr__(self) -> str:
        """Show the binary and the ports."""
        ports = [node._port for node in self.nodes]
        return f"Cluster(binary={self.binary!r}, ports={ports})"

    # -- internals --------------------------------------------------------------------

    def _cmd(self, node: RedisServer, *args: Arg) -> Any:
        """Run one admin command on ``node`` and return the raw reply."""
        return self.client(node).execute_command(*args)

    def _cluster_nodes_text(self, node: RedisServer) -> str:
        """``CLUSTER NODES`` as text."""
        return _text(self._cmd(node, "CLUSTER", "NODES"))

    def _views(self, node: RedisServer) -> list[ClusterNodeView]:
        """``node``'s ``CLUSTER NODES``, parsed."""
        text = self._cluster_nodes_text(node)
        return [ClusterNodeView.parse(line) for line in text.splitlines() if line.strip()]

    def _self_views(self) -> dict[RedisServer, ClusterNodeView]:
        """Each running, reachable node's ``myself`` line."""
        selves: dict[RedisServer, ClusterNodeView] = {}
        for node in self.nodes:
            if not node.running:
                continue
            try:
                views = self._views(node)
            except (ReplyError, OSError):
                continue
            for view in views:
                if "myself" in view.flags:
                    selves[node] = view
        return selves

    def _start_node(self, used: set[int]) -> RedisServer:
        """Start one cluster-mode node on a fresh port pair (client and bus)."""

        def fresh_port() -> int:
            for _attempt in range(100):
                port = free_port()
                if port not in used:
                    used.add(port)
                    return port
            raise RuntimeError("no free port found")

        chosen: dict[str, int] = {}

        def make() -> RedisServer:
            chosen["port"], chosen["bus"] = fresh_port(), fresh_port()
            auth: list[str] = []
            if self.password is not None:
                auth = ["--requirepass", self.password, "--masterauth", self.password]
            return RedisServer(
                [
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                    "--cluster-port", str(chosen["bus"]),
                    "--cluster-replica-validity-factor", "0",
                    *_FAST_SYNC_ARGS,
                    *auth,
                    *self.extra_args,
                ],
                binary=self.binary,
                port=chosen["port"],
            )  # fmt: skip

        node = _start_with_retries(make)
        self._bus_ports[id(node)] = chosen["bus"]
        return node

    def _form(self) -> None:
        """Join the started nodes into a cluster, assign slots and attach the replicas."""
        primaries = self.nodes[: self.shards]
        replicas = self.nodes[self.shards :]
        for epoch, node in enumerate(self.nodes, start=1):
            self._node_ids[id(node)] = _text(self._cmd(node, "CLUSTER", "MYID"))
            # Distinct config epochs up front, as redis-cli does (no collision dance).
            self._cmd(node, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self._cmd(first, "CLUSTER", "MEET", HOST, node.port, self._bus_ports[id(node)])
        for node, (low, high) in zip(primaries, slot_ranges(self.shards), strict=True):
            self._cmd(node, "CLUSTER", "ADDSLOTSRANGE", low, high)

        def joined() -> str | None:
            for index, node in enumerate(self.nodes):
                info = _parse_info(self._cmd(node, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok":
                    return f"node {index}: cluster_state={info.get('cluster_state')}"
                known = info.get("cluster_known_nodes")
                if known != str(len(self.nodes)):
                    return f"node {index}: cluster_known_nodes={known}"
            return None

        deadline = time.monotonic() + self.startup_timeout
        _wait_until(joined, self.startup_timeout, "cluster joined", self.describe)
        # Replica i follows primary i mod shards: with one replica each, replica i of
        # primary i.
        pairs = [(replica, primaries[i % self.shards]) for i, replica in enumerate(replicas)]
        for replica, primary in pairs:
            self._cmd(replica, "CLUSTER", "REPLICATE", self.node_id(primary))
        expected = {self.node_id(replica): self.node_id(primary) for replica, primary in pairs}

        def replicated() -> str | None:
            for index, replica in enumerate(replicas):
                info = _parse_info(self._cmd(replica, "INFO", "replication"))
                if info.get("master_link_status") != "up":
                    return f"replica {index}: master_link_status={info.get('master_link_status')}"
            for index, node in enumerate(self.nodes):
                seen = {
                    view.node_id: view.primary_id for view in self._views(node) if view.is_replica
                }
                if seen != expected:
                    return f"node {index} sees replicas {seen}"
            return self._health_problem()

        remaining = max(1.0, deadline - time.monotonic())
        _wait_until(replicated, remaining, "cluster replicas attached", self.describe)
        self.refresh_roles()

    def _health_problem(self) -> str | None:
        """Why the running nodes are not a healthy cluster, or ``None`` if they are."""
        running = [node for node in self.nodes if node.running]
        if not running:
            return "no node is running"
        selves: dict[RedisServer, ClusterNodeView] = {}
        for node in running:
            info = _parse_info(self._cmd(node, "CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok":
                return f"port {node.port}: cluster_state={info.get('cluster_state')}"
            mine = [view for view in self._views(node) if "myself" in view.flags]
            if not mine:
                return f"port {node.port}: no 'myself' line in CLUSTER NODES"
            selves[node] = mine[0]
        live = {view.node_id for view in selves.values() if view.is_primary and view.slots}
        return (
            self._slots_problem(selves, live)
            or self._views_problem(running, live)
            or self._replicas_problem(selves, live)
        )

    @staticmethod
    def _slots_problem(selves: dict[RedisServer, ClusterNodeView], live: set[str]) -> str | None:
        """Why not every slot is claimed by exactly one live primary, or ``None``."""
        owners = [0] * CLUSTER_SLOTS
        for view in selves.values():
            if view.node_id in live:
                for first, last in view.slots:
                    for slot in range(first, last + 1):
                        owners[slot] += 1
        for slot, count in enumerate(owners):
            if count != 1:
                return f"slot {slot} is claimed by {count} running primaries"
        return None

    def _views_problem(self, running: list[RedisServer], live: set[str]) -> str | None:
        """Why some running node gives slots to a node that is not a live primary."""
        for node in running:
            for view in self._views(node):
                if view.slots and view.node_id not in live:
                    return f"port {node.port} gives slots to {view.node_id[:12]} (port {view.port})"
        return None

    def _replicas_problem(
        self, selves: dict[RedisServer, ClusterNodeView], live: set[str]
    ) -> str | None:
        """Why some running node is neither a live primary nor a linked replica of one."""
        for node, view in selves.items():
            if view.node_id in live:
                continue
            if not view.is_replica or view.primary_id not in live:
                return f"port {node.port} is neither a live primary nor replica of one"
            info = _parse_info(self._cmd(node, "INFO", "replication"))
            if info.get("master_link_status") != "up":
                return f"replica port {node.port}: link {info.get('master_link_status')}"
        return None


# -- Redis Sentinel -------------------------------------------------------------------


class SentinelGroup(Managed):
    """A primary, a replica and ``sentinels`` Sentinels (default 3) watching ``mymaster``.

    Sentinels run with quorum 2, ``down-after-milliseconds 1000``,
    ``failover-timeout 5000`` and ``parallel-syncs 1`` by default.  With ``password`` the
    data nodes require it (``--requirepass``/``--masterauth``) and the Sentinels know it
    (``sentinel auth-pass``); with ``sentinel_password`` the Sentinels require theirs
    (``requirepass`` in their configuration, which they also use with one another).
    Data nodes run with ``--repl-diskless-sync-delay 0`` so that the replica syncs at once.

    :attr:`data_nodes` lists the initial primary then the initial replica; after a
    failover :attr:`primary` (asked of the Sentinels) is the other one.

    Usage::

        with SentinelGroup(password="pw") as group:
            with State.from_url(group.auth_url) as state:
                state.subscribe("thread-1")
                group.primary.kill()
                group.wait_healthy(15)
                state.is_subscribed("thread-1")  # maybe lost: replication is asynchronous
    """

    service = "mymaster"
    """The monitored service name."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        startup_timeout: float = 30.0,
    ) -> None:
        """Describe a group; nothing starts until :meth:`start` (or ``with``).

        Args:
            binary: ``redis-server`` or ``valkey-server`` path; by default
                :func:`~chat_state.testing.find_redis_server`'s.
            password: password required by the data nodes (and given to the Sentinels).
            sentinel_password: password required by the Sentinels themselves.
            sentinels: how many Sentinels.
            quorum: Sentinels needed to agree that the primary is down.
            down_after_ms: ``sentinel down-after-milliseconds``.
            failover_timeout_ms: ``sentinel failover-timeout``.
            startup_timeout: bound, in seconds, on the whole start-up.

        Raises:
            ServerUnavailable: ``binary`` is not given and no ``redis-server`` is found.
        """
        self.binary: str = require_binary(binary)
        self.password = password
        self.sentinel_password = sentinel_password
        self.sentinel_count = sentinels
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.startup_timeout = startup_timeout
        self.data_nodes: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        self._admin = _Admin()

    # -- public API -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`` (no password)."""
        hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def auth_url(self) -> str:
        """:attr:`url` with the passwords, if any.

        The data nodes' password goes in the userinfo (``redis+sentinel://:PW@...``), the
        Sentinels' in ``?sentinel_password=``, as chat-state's URL parser expects.
        """
        hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        userinfo = "" if self.password is None else f":{quote(self.password, safe='')}@"
        query = ""
        if self.sentinel_password is not None:
            query = f"?sentinel_password={quote(self.sentinel_password, safe='')}"
        return f"redis+sentinel://{userinfo}{hosts}/{self.service}{query}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel, for ``redis.sentinel.Sentinel([...])``."""
        return [(HOST, sentinel.port) for sentinel in self.sentinels]

    @property
    def primary(self) -> RedisServer:
        """The current primary, as the Sentinels report it (see :meth:`current_primary`)."""
        return self.current_primary()

    @property
    def replica(self) -> RedisServer:
        """The data node that is not the current primary."""
        primary = self.current_primary()
        return next(node for node in self.data_nodes if node is not primary)

    def current_primary(self) -> RedisServer:
        """The data node most running Sentinels name in ``GET-MASTER-ADDR-BY-NAME``.

        Raises:
            RuntimeError: no Sentinel answers, or they name an unknown address.
        """
        answers = self._primary_addresses()
        if not answers:
            raise RuntimeError("no running Sentinel answers GET-MASTER-ADDR-BY-NAME")
        (_host, port), _count = Counter(answers.values()).most_common(1)[0]
        for node in self.data_nodes:
            if node.port == port:
                return node
        raise RuntimeError(f"Sentinels name {_host}:{port}, which is not a data node")

    def start(self) -> SentinelGroup:
        """Start primary, replica and Sentinels, and wait until all see each other.

        Raises:
            RuntimeError: something did not come up within ``startup_timeout``; the
                message has each server's state and log tail.
        """
        if self.data_nodes or self.sentinels:
            raise RuntimeError("sentinel group already started")
        deadline = time.monotonic() + self.startup_timeout
        try:
            auth = self._auth_args()
            primary = _start_with_retries(lambda: RedisServer(auth, binary=self.binary))
            self.data_nodes.append(primary)
            replica_args = [*auth, "--replicaof", HOST, str(primary.port)]
            replica = _start_with_retries(lambda: RedisServer(replica_args, binary=self.binary))
            self.data_nodes.append(replica)
            _wait_until(
                lambda: self._replica_problem(replica, primary),
                max(1.0, deadline - time.monotonic()),
                "replica linked",
                self.describe,
            )
            config = self._sentinel_config(primary.port)
            for _index in range(self.sentinel_count):
                self.sentinels.append(
                    _start_with_retries(
                        lambda: RedisServer(binary=self.binary, sentinel_config=config)
                    )
                )
            _wait_until(
                self._discovery_problem,
                max(1.0, deadline - time.monotonic()),
                "Sentinels discovered replica and each other",
                self.describe,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the Sentinels, then the data nodes (only servers this group started)."""
        self._admin.close()
        for server in [*self.sentinels, *self.data_nodes]:
            server.stop()
        self.sentinels.clear()
        self.data_nodes.clear()

    def client(self, server: RedisServer) -> AdminClient:
        """The group's admin client for a data node or Sentinel (closed by :meth:`stop`).

        One per server, with its password, kept: consecutive commands share its
        connection.
        """
        password = self.sentinel_password if server.is_sentinel else self.password
        return self._admin.client(server, password)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until the running servers agree on a working primary.

        Healthy means: every running Sentinel names the same primary, a running data node
        that says it is a master, and flags it plain ``master`` (not down, no failover in
        progress); every other running data node replicates it with its link up and every
        running Sentinel lists it as a replica that is not down.

        Raises:
            RuntimeError: not healthy within ``timeout`` seconds (with diagnostics).
        """
        _wait_until(self._health_problem, timeout, "sentinel group healthy", self.describe)

    def describe(self) -> str:
        """Each server's state and log tail, and each Sentinel's view of the primary."""
        parts: list[str] = []
        for index, node in enumerate(self.data_nodes):
            parts.append(_describe_server(node, f"data node {index}"))
        for index, sentinel in enumerate(self.sentinels):
            parts.append(_describe_server(sentinel, f"sentinel {index}"))
            if sentinel.running:
                try:
                    master = self._sentinel_master(sentinel)
                    keys = ("ip", "port", "flags", "num-slaves", "num-other-sentinels")
                    parts.append("SENTINEL MASTER: " + str({k: master.get(k) for k in keys}))
                except (ReplyError, OSError) as exc:
                    parts.append(f"SENTINEL MASTER failed: {exc!r}")
        return "\n".join(parts)

    @property
    def started(self) -> bool:
        """Whether the servers were started."""
        return bool(self.sentinels)

    def __repr__(self) -> str:
        """Show the binary and the ports."""
        data = [node._port for node in self.data_nodes]
        sentinels = [sentinel._port for sentinel in self.sentinels]
        return f"SentinelGroup(binary={self.binary!r}, data={data}, sentinels={sentinels})"

    # -- internals --------------------------------------------------------------------

    def _auth_args(self) -> list[str]:
        """Command-line options for every data node: fast sync, and the password if any."""
        if self.password is None:
            return [*_FAST_SYNC_ARGS]
        return [*_FAST_SYNC_ARGS, "--requirepass", self.password, "--masterauth", self.password]

    def _sentinel_config(self, primary_port: int) -> str:
        """The Sentinels' configuration text (the ``monitor`` line must come first)."""
        name = self.service
        lines = [
            f"sentinel monitor {name} {HOST} {primary_port} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        if self.password is not None:
            lines.append(f"sentinel auth-pass {name} {self.password}")
        if self.sentinel_password is not None:
            lines.append(f"requirepass {self.sentinel_password}")
        return "\n".join(lines) + "\n"

    def _sentinel_master(self, sentinel: RedisServer) -> dict[str, str]:
        """``SENTINEL MASTER mymaster`` as a dict of strings."""
        return _pairs(self.client(sentinel).execute_command("SENTINEL", "MASTER", self.service))

    def _sentinel_replicas(self, sentinel: RedisServer) -> list[dict[str, str]]:
        """``SENTINEL REPLICAS mymaster`` as dicts of strings."""
        reply = self.client(sentinel).execute_command("SENTINEL", "REPLICAS", self.service)
        return [_pairs(item) for item in reply]

    def _primary_addresses(self) -> dict[RedisServer, tuple[str, int]]:
        """Each running, reachable Sentinel's ``GET-MASTER-ADDR-BY-NAME`` answer."""
        answers: dict[RedisServer, tuple[str, int]] = {}
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            try:
                reply = self.client(sentinel).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
            except (ReplyError, OSError):
                continue
            if reply:
                answers[sentinel] = (_text(reply[0]), int(reply[1]))
        return answers

    def _replica_problem(self, replica: RedisServer, primary: RedisServer) -> str | None:
        """Why ``replica`` does not replicate ``primary`` with its link up, or ``None``."""
        info = _parse_info(self.client(replica).execute_command("INFO", "replication"))
        if info.get("role") != "slave" or info.get("master_port") != str(primary.port):
            return f"port {replica.port}: role={info.get('role')} of {info.get('master_port')}"
        if info.get("master_link_status") != "up":
            return f"port {replica.port}: master_link_status={info.get('master_link_status')}"
        return None

    def _discovery_problem(self) -> str | None:
        """Why the Sentinels do not yet see the replica and each other, or ``None``."""
        for index, sentinel in enumerate(self.sentinels):
            master = self._sentinel_master(sentinel)
            if master.get("flags") != "master":
                return f"sentinel {index}: master flags={master.get('flags')}"
            if master.get("num-slaves") != str(len(self.data_nodes) - 1):
                return f"sentinel {index}: num-slaves={master.get('num-slaves')}"
            others = master.get("num-other-sentinels")
            if others != str(len(self.sentinels) - 1):
                return f"sentinel {index}: num-other-sentinels={others}"
        return self._health_problem()

    def _health_problem(self) -> str | None:
        """Why the running servers are not a healthy group, or ``None`` if they are."""
        answers = self._primary_addresses()
        if not answers:
            return "no running Sentinel answers"
        addresses = set(answers.values())
        if len(addresses) != 1:
            return f"Sentinels disagree on the primary: {sorted(addresses)}"
        primary = self.current_primary()
        return self._primary_problem(primary, answers) or self._replicas_problem(primary, answers)

    def _primary_problem(
        self, primary: RedisServer, answers: dict[RedisServer, tuple[str, int]]
    ) -> str | None:
        """Why the named ``primary`` is not a running master every Sentinel flags so."""
        if not primary.running:
            return f"Sentinels still name port {primary.port}, which is not running"
        info = _parse_info(self.client(primary).execute_command("INFO", "replication"))
        if info.get("role") != "master":
            return f"port {primary.port} (named primary) says role={info.get('role')}"
        for sentinel in answers:
            flags = self._sentinel_master(sentinel).get("flags")
            if flags != "master":
                return f"Sentinel port {sentinel.port}: master flags={flags}"
        return None

    def _replicas_problem(
        self, primary: RedisServer, answers: dict[RedisServer, tuple[str, int]]
    ) -> str | None:
        """Why some other running data node is not a linked replica the Sentinels see."""
        for node in self.data_nodes:
            if node is primary or not node.running:
                continue
            problem = self._replica_problem(node, primary)
            if problem is not None:
                return problem
            for sentinel in answers:
                listed = {
                    item.get("port"): item.get("flags", "")
                    for item in self._sentinel_replicas(sentinel)
                }
                flags = listed.get(str(node.port))
                if flags is None or "s_down" in flags or "disconnected" in flags:
                    return f"Sentinel port {sentinel.port}: replica {node.port} flags={flags}"
        return None
