"""state.ping() and state.health(): the connections in use, asked; every backend.

The fault tests run on private servers, because they pause (SIGSTOP) or kill them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis

from chat_state import AsyncState, BackendError, Health, State
from chat_state.core.health import identity
from chat_state.testing import Cluster, RedisServer, SentinelGroup

from .conftest import AsAsync, Target
from .test_own_connections import paused

pytestmark = pytest.mark.anyio


async def test_ping_and_health_answer_on_every_target(state: Any, target: Target) -> None:
    latency = await state.ping()
    assert isinstance(latency, float)
    assert latency > 0
    health = await state.health()
    assert isinstance(health, Health)
    assert health.ok
    assert health.latency_ms is not None
    assert health.latency_ms > 0
    assert health.topology == target.topology
    assert health.nodes
    assert all(node.ok and node.error is None for node in health.nodes)
    if target.topology == "memory":
        assert (health.server, health.nodes[0].role) == ("memory", "master")
    elif not (target.driver == "coredis" and target.topology == "cluster"):
        assert health.server in ("redis", "valkey")
        assert health.version
        assert health.version[0].isdigit()


@pytest.mark.targets(
    [
        "redis-server/cluster/redis-py",
        "valkey-server/cluster/valkey-py",
        "redis-server/cluster/redis-py-pooled",  # the client library's Cluster client
    ]
)
async def test_a_cluster_reports_every_primary(state: Any, target: Target) -> None:
    primaries = {f"{node.host}:{node.port}" for node in target.raw.client.get_primaries()}
    health = await state.health()
    assert {node.address for node in health.nodes} == primaries
    assert len(primaries) >= 3
    assert {node.role for node in health.nodes} == {"master"}


@pytest.mark.targets(["redis-server/cluster/redis-py"])
async def test_a_cluster_client_passed_in_reports_every_primary(target: Target) -> None:
    client = target.raw.client  # a redis-py RedisCluster of the application's
    primaries = {f"{node.host}:{node.port}" for node in client.get_primaries()}
    with State(client=client, key_prefix=target.prefix) as state:
        health = state.health()
        assert state.stats().servers[0].used_memory_bytes
        assert {s.address for s in state.stats().servers} == primaries
    assert health.ok
    assert {node.address for node in health.nodes} == primaries


def test_the_server_identity_is_read_from_every_form_of_hello() -> None:
    pairs = ["server", "valkey", "version", "8.1.0", "proto", 2, "role", "master"]
    assert identity(pairs) == ("valkey", "8.1.0", "master")
    assert identity({b"server": b"redis", b"version": b"7.0.15", b"role": b"master"}) == (
        "redis",
        "7.0.15",
        "master",
    )
    per_node = {"127.0.0.1:1": {"server": "redis", "version": "7.2.4", "role": "master"}}
    assert identity(per_node) == ("redis", "7.2.4", "master")
    assert identity("OK") == (None, None, None)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as private:
        yield private


TIMEOUT_S = 0.5


def short_timeout(url: str) -> str:
    return f"{url}?socket_timeout={TIMEOUT_S}&socket_connect_timeout={TIMEOUT_S}"


@pytest.mark.parametrize("own", [True, False], ids=["own", "redis-py"])
def test_state_health_follows_a_paused_then_killed_server(server: RedisServer, own: bool) -> None:
    url = short_timeout(server.url) + ("" if own else "&own_connections=false")
    with State.from_url(url) as state:
        assert state.health().ok
        with paused(server):
            started = time.monotonic()
            with pytest.raises(BackendError):
                state.ping()
            # within the timeout (and redis-py's bounded retries), not forever
            assert time.monotonic() - started < 10 * TIMEOUT_S + 5
            health = state.health()
            assert not health.ok
            assert health.nodes[0].error
            assert state.is_connected  # documented: it does not ask the server
        assert state.ping() > 0
        server.kill()
        with pytest.raises(BackendError):
            state.ping()
        assert not state.health().ok
        server.restart()
        assert state.health().ok


async def test_async_health_follows_a_paused_then_killed_server(server: RedisServer) -> None:
    async with AsyncState.from_url(short_timeout(server.url)) as state:
        assert (await state.health()).ok
        with paused(server):
            with anyio.fail_after(10 * TIMEOUT_S + 5), pytest.raises(BackendError):
                await state.ping()
            health = await state.health()
            assert not health.ok
            assert health.latency_ms is None
        assert await state.ping() > 0
        server.kill()
        with pytest.raises(BackendError):
            await state.ping()
        server.restart()
        assert (await state.health()).ok


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_a_cluster_with_a_paused_primary_is_not_ok(facade: str) -> None:
    with Cluster(replicas=0) as cluster:
        url = short_timeout(cluster.url)
        if facade == "sync":
            with State.from_url(url) as state:
                assert state.health().ok
                first = state.health().nodes[0].address
                with paused(_server_at(cluster, first)):
                    health = state.health()
                    with pytest.raises(BackendError, match=first):
                        state.ping()
        else:
            async with AsyncState.from_url(url) as astate:
                assert (await astate.health()).ok
                first = (await astate.health()).nodes[0].address
                with paused(_server_at(cluster, first)):
                    health = await astate.health()
                    with pytest.raises(BackendError, match=first):
                        await astate.ping()
        assert not health.ok
        assert [n.ok for n in health.nodes].count(False) == 1
        assert len(health.nodes) == 3


@pytest.mark.parametrize(
    ("facade", "own"),
    [("sync", True), ("async", True), ("sync", False)],
    ids=["sync-own", "async-own", "sync-redis-py"],
)
async def test_sentinel_health_follows_a_paused_then_killed_primary(
    facade: str, own: bool, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("the Sentinel group is driven from asyncio (trio adds nothing here)")
    # No failover meanwhile: the Sentinels wait a minute before they call the primary down.
    with SentinelGroup(down_after_ms=60_000) as group:
        url = short_timeout(group.url) + ("" if own else "&own_connections=false")
        state: Any = AsAsync(State.from_url(url)) if facade == "sync" else AsyncState.from_url(url)
        primary = group.primary
        address = f"127.0.0.1:{primary.port}"
        await state.connect()
        try:
            health = await state.health()
            assert health.ok
            assert health.topology == "sentinel"
            if own:  # the client library's pool does not say where its commands went
                assert [n.address for n in health.nodes] == [address]
            with paused(primary):
                with anyio.fail_after(10 * TIMEOUT_S + 5), pytest.raises(BackendError):
                    await state.ping()
                assert not (await state.health()).ok
            assert await state.ping() > 0
            primary.kill()
            with anyio.fail_after(10 * TIMEOUT_S + 10), pytest.raises(BackendError):
                await state.ping()
            assert not (await state.health()).ok
            primary.restart()
            assert (await state.health()).ok
        finally:
            await state.disconnect()


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.parametrize("library", ["redis", "valkey"])
async def test_a_timed_out_command_leaves_no_reply_for_the_next(
    facade: str, library: str, anyio_backend: str
) -> None:
    """A Sentinel client of the library's (``own_connections=false``) whose command timed
    out reads no late reply as the next command's (redis-py's blocking one did)."""
    if anyio_backend != "asyncio":
        pytest.skip("the client libraries' asyncio clients run on asyncio")
    with SentinelGroup(down_after_ms=60_000) as group:
        url = short_timeout(group.url.replace("redis", library, 1)) + "&own_connections=false"
        state: Any = AsAsync(State.from_url(url)) if facade == "sync" else AsyncState.from_url(url)
        await state.connect()
        try:
            await state.set("a", "A")
            await state.set("b", "B")
            with paused(group.primary), pytest.raises(BackendError):
                await state.get("a")  # its reply comes once the server resumes
            await anyio.sleep(0.2)
            assert [await state.get("b"), await state.get("a")] == ["B", "A"]
        finally:
            await state.disconnect()


def _server_at(cluster: Cluster, address: str) -> RedisServer:
    return next(s for s in cluster.nodes if f"127.0.0.1:{s.port}" == address)


def test_a_failed_connect_is_raised_not_also_logged_as_a_warning(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = short_timeout(server.url)
    server.kill()
    state = State.from_url(url)
    with caplog.at_level(logging.DEBUG, logger="chat_state"), pytest.raises(BackendError):
        state.connect()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("could not connect" in r.getMessage() for r in caplog.records)


def test_a_noscript_reload_is_logged_at_debug(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with State.from_url(server.url) as state:
        state.append_to_list("l", 1)
        state.get_client().script_flush()
        with caplog.at_level(logging.DEBUG, logger="chat_state"):
            state.append_to_list("l", 2)
        assert state.get_list("l") == [1, 2]
    lines = [r for r in caplog.records if "script cache" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.DEBUG]


def test_a_client_passed_in_is_reported_as_one_node(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        with State(client=client) as state:
            health = state.health()
            assert (health.ok, health.topology, health.server) == (True, "client", "redis")
            assert [node.address for node in health.nodes] == ["the given client"]
            assert state.ping() > 0
    finally:
        client.close()
