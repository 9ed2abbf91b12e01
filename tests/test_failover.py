"""Faults under load: a Sentinel primary killed, a Cluster primary killed, a slot migrated.

Each test runs a steady load of lock and cache operations, through ``State`` or
``AsyncState``, while the fault happens, and records every operation. It checks
that every failure is a ``BackendError``, that the state recovers by itself,
that nothing written (and replicated) before the fault is lost, and, for a slot
migration, that no error reaches the caller at all. The figures (how long until
operations succeeded again, the slowest operation) are printed in the test
summary under "fault-test figures"; they are measurements, not assertions.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from chat_state import AsyncState, BackendError, Lock, State
from chat_state.core.operations import now_ms
from chat_state.testing import AdminClient, Cluster, RedisServer, SentinelGroup, key_slot

from .conftest import FIGURES, SERVERS, AsAsync, _unavailable
from .otel import Recorded

HOT = "{hot}"  # a hash tag: every key of the load lives in one Cluster slot
LOAD_KEYS = 20
SEEDED = 200
RECOVERY_LIMIT_S = 30.0  # a bound on the test, not a goal: the figures are reported
TAIL_S = 1.5  # operations that must all succeed once the state has recovered


@dataclass
class Sample:
    started: float
    ended: float
    error: BaseException | None


@dataclass
class Load:
    """A steady load of lock/cache operations on one adapter, recorded op by op."""

    adapter: Any
    samples: list[Sample] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    appended: int = 0

    async def _op(self, call: Callable[[], Any]) -> None:
        started = time.monotonic()
        try:
            await call()
        except Exception as exc:  # recorded; the test checks that each one is ours
            self.samples.append(Sample(started, time.monotonic(), exc))
            await anyio.sleep(0.01)
        else:
            self.samples.append(Sample(started, time.monotonic(), None))

    async def run(self) -> None:
        adapter, n = self.adapter, 0
        while not self.stop.is_set():
            thread = f"{HOT}:{n % LOAD_KEYS}"

            async def lock_cycle(thread: str = thread) -> None:
                lock = await adapter.acquire_lock(thread, 5_000)
                if lock is not None:
                    await adapter.release_lock(lock)

            async def cache_cycle(thread: str = thread, n: int = n) -> None:
                await adapter.set(f"{thread}:value", {"n": n}, 60_000)
                await adapter.get(f"{thread}:value")

            await self._op(lock_cycle)
            await self._op(cache_cycle)
            n += 1

    def errors(self) -> list[BaseException]:
        return [s.error for s in self.samples if s.error is not None]


@pytest.fixture(params=list(SERVERS))
def binary(request: pytest.FixtureRequest) -> str:
    path = SERVERS[request.param]()
    if path is None:
        _unavailable(f"no {request.param} binary")
    return path


def _adapter(url: str, facade: str, prefix: str, logger: logging.Logger | None = None) -> Any:
    if facade == "sync":
        return AsAsync(State.from_url(url, key_prefix=prefix, logger=logger))
    return AsyncState.from_url(url, key_prefix=prefix, logger=logger)


def _in_thread(load: Load) -> threading.Thread:
    """Run ``load`` in its own thread and event loop (the blocking State needs one)."""

    async def main() -> None:
        await load.adapter.connect()
        try:
            await load.run()
        finally:
            await load.adapter.disconnect()

    thread = threading.Thread(target=anyio.run, args=(main,), daemon=True)
    thread.start()
    return thread


def _seed(url: str, prefix: str) -> None:
    with State.from_url(url, key_prefix=prefix) as state:
        for n in range(SEEDED):
            state.set(f"{HOT}:seed:{n}", {"n": n, "text": "héllo"})
        state.subscribe(f"{HOT}:subscribed")


def _check_seeded(url: str, prefix: str) -> None:
    with State.from_url(url, key_prefix=prefix) as state:
        lost = [
            n for n in range(SEEDED) if state.get(f"{HOT}:seed:{n}") != {"n": n, "text": "héllo"}
        ]
        assert lost == [], f"{len(lost)} values written before the failover were lost"
        assert state.is_subscribed(f"{HOT}:subscribed")


def _wait_replicated(primary: AdminClient) -> None:
    """Wait until the replica acknowledged everything written: the failover is then clean.

    WAIT counts only the calling connection's writes, so write a marker on this
    connection first (in the load's slot): replication offsets are ordered, so once
    the marker is acknowledged, every earlier write, from any connection, is too.
    """
    primary.execute_command("SET", f"{HOT}:replicated-marker", "1")
    acknowledged = primary.execute_command("WAIT", 1, 5_000)
    assert acknowledged >= 1, "the replica did not acknowledge the writes"


def _measure(load: Load, killed_at: float, title: str) -> None:
    """Let the load run until it has recovered (bounded), then record the figures."""
    deadline = killed_at + RECOVERY_LIMIT_S
    recovered_at: float | None = None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        after = [s for s in load.samples if s.started >= killed_at]
        failures = [s for s in after if s.error is not None]
        last_failure = max((s.ended for s in failures), default=killed_at)
        tail = [s for s in after if s.started > last_failure]
        if tail and tail[-1].ended - tail[0].started >= TAIL_S:
            recovered_at = tail[0].ended
            break
    load.stop.set()
    after = [s for s in load.samples if s.started >= killed_at]
    for error in load.errors():
        assert isinstance(error, BackendError), f"not a BackendError: {error!r}"
    assert recovered_at is not None, (
        f"{title}: operations had not succeeded steadily {RECOVERY_LIMIT_S:.0f} s after "
        f"the fault ({len(load.errors())} errors)"
    )
    slowest = max(s.ended - s.started for s in after)
    FIGURES.append(
        f"{title}: operations succeeded again {recovered_at - killed_at:.2f} s after the "
        f"kill; {len(load.errors())} of {len(load.samples)} operations failed with "
        f"BackendError; slowest operation {slowest:.2f} s"
    )


@pytest.fixture
def sentinel_group(binary: str) -> Iterator[SentinelGroup]:
    with SentinelGroup(binary) as group:
        yield group


#: The load's logger: what the routes tell on it is checked (the adapter's ``logger=``).
LOAD_LOGGER = "test.failover.load"


def _kill_under_load(
    url: str, facade: str, primary: RedisServer, admin: AdminClient, title: str
) -> None:
    """Seed data, wait for its replication, kill ``primary`` under load, measure."""
    prefix = f"fo-{facade}"
    _seed(url, prefix)
    _wait_replicated(admin)
    load = Load(_adapter(url, facade, prefix, logging.getLogger(LOAD_LOGGER)))
    worker = _in_thread(load)
    time.sleep(0.5)
    killed_at = time.monotonic()
    primary.kill()
    try:
        _measure(load, killed_at, title)
    finally:
        load.stop.set()
        worker.join(timeout=30)
    assert not worker.is_alive()


def _told(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The INFO lines the load's adapter logged."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOAD_LOGGER and r.levelno == logging.INFO
    ]


@pytest.mark.parametrize("facade", ["sync", "async"])
def test_sentinel_primary_killed_under_load(
    sentinel_group: SentinelGroup, facade: str, caplog: pytest.LogCaptureFixture, recorded: Recorded
) -> None:
    group = sentinel_group
    old_primary = group.primary
    title = f"Sentinel ({_name(group.binary)}, {facade})"
    caplog.set_level(logging.INFO, logger=LOAD_LOGGER)
    _kill_under_load(group.url, facade, old_primary, group.client(old_primary), title)
    group.wait_healthy(30)
    assert group.primary is not old_primary
    _check_seeded(group.url, f"fo-{facade}")
    # The failover, told once on the adapter's logger and counted once.
    followed = [line for line in _told(caplog) if "follows a failover" in line]
    assert len(followed) == 1, _told(caplog)
    assert f"127.0.0.1:{group.primary.port} the primary of 'mymaster'" in followed[0]
    assert f"(was 127.0.0.1:{old_primary.port})" in followed[0]
    assert (
        recorded.total("chat_state.connection.failovers", {"chat_state.topology": "sentinel"}) == 1
    )


@pytest.fixture
def cluster(binary: str) -> Iterator[Cluster]:
    with Cluster(binary) as started:
        yield started


@pytest.mark.parametrize("facade", ["sync", "async"])
def test_cluster_primary_killed_under_load(
    cluster: Cluster, facade: str, caplog: pytest.LogCaptureFixture, recorded: Recorded
) -> None:
    hot_primary = cluster.node_for_key(HOT)
    title = f"Cluster ({_name(cluster.binary)}, {facade})"
    caplog.set_level(logging.INFO, logger=LOAD_LOGGER)
    _kill_under_load(cluster.url, facade, hot_primary, cluster.client(hot_primary), title)
    cluster.wait_healthy(30)
    new_primary = cluster.node_for_key(HOT)
    assert new_primary is not hot_primary
    _check_seeded(cluster.url, f"fo-{facade}")
    # The slot table read again names the promoted replica, and the move is counted once.
    reloads = [line for line in _told(caplog) if "slot table again" in line]
    assert any(f"new: 127.0.0.1:{new_primary.port}" in line for line in reloads), reloads
    assert (
        recorded.total("chat_state.connection.failovers", {"chat_state.topology": "cluster"}) == 1
    )


def _migrate_slot(cluster: Cluster, slot: int, source: RedisServer, target: RedisServer) -> int:
    """Move ``slot`` from ``source`` to ``target`` a few keys at a time; → keys moved."""
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    src, dst = cluster.client(source), cluster.client(target)
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    for _batch in range(10_000):  # bounded; a batch moves up to 3 keys
        keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 3)
        if not keys:
            break
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5_000, "KEYS", *keys)
        moved += len(keys)
        time.sleep(0.02)  # let the load run against the half-migrated slot
    for node in cluster.primaries:
        cluster.client(node).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


@pytest.fixture(scope="module", params=list(SERVERS))
def migration_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    path = SERVERS[request.param]()
    if path is None:
        _unavailable(f"no {request.param} binary")
    with Cluster(path) as started:
        yield started


@pytest.mark.parametrize("facade", ["sync", "async"])
def test_slot_migration_under_load_reaches_no_caller(
    migration_cluster: Cluster, facade: str
) -> None:
    cluster, prefix = migration_cluster, f"mig-{facade}"
    _seed(cluster.url, prefix)
    load = Load(_adapter(cluster.url, facade, prefix))
    worker = _in_thread(load)
    time.sleep(0.3)
    slot = key_slot(HOT.encode())
    source = cluster.node_for_slot(slot)
    target = next(node for node in cluster.primaries if node is not source)
    started = time.monotonic()
    moved = _migrate_slot(cluster, slot, source, target)
    took = time.monotonic() - started
    time.sleep(0.5)  # and after the move, on the new owner
    load.stop.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert cluster.node_for_slot(slot) is target
    assert load.errors() == [], load.errors()[:3]
    assert moved >= SEEDED
    assert len(load.samples) > 50
    _check_seeded(cluster.url, prefix)
    FIGURES.append(
        f"Slot migration ({_name(cluster.binary)}, {facade}): {moved} keys moved in "
        f"{took:.2f} s under {len(load.samples)} operations, 0 errors reached the caller"
    )


def _name(binary: str) -> str:
    return "valkey-server" if "valkey" in binary else "redis-server"


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
@pytest.mark.anyio
async def test_passwords_on_cluster_and_sentinel(
    binary: str, topology: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Data-node and Sentinel passwords from the URL; none of them leaks."""
    started: Any = (
        Cluster(binary, password="data:pw/1@")
        if topology == "cluster"
        else SentinelGroup(binary, password="data:pw/1@", sentinel_password="sentinel-pw:2")
    )
    with started:
        url = started.auth_url
        async with AsyncState.from_url(url, key_prefix="auth") as state:
            await state.set("k", "v")
            assert await state.get("k") == "v"
            assert "data:pw" not in repr(state)
            assert "sentinel-pw" not in repr(state)
        with State.from_url(url, key_prefix="auth") as sync_state:
            assert sync_state.get("k") == "v"
        wrong = url.replace("data%3Apw", "wrong%3Apw")
        with pytest.raises(BackendError) as caught:
            State.from_url(wrong).connect()
        assert "wrong:pw" not in str(caught.value)
        assert "data:pw" not in caplog.text
        assert "wrong:pw" not in caplog.text


def test_the_readme_recipe_for_waiting_for_a_replica(servers: Any) -> None:
    """The README's WAIT recipe, run as written on a Sentinel-managed primary."""
    with State.from_url(servers.url("redis-server", "sentinel")) as state:
        thread_id = "recipe"
        expires_at = now_ms() + 30_000
        client = state.get_client()
        token = secrets.token_hex(16)
        with client.pipeline(transaction=False) as pipe:
            pipe.set(f"chat-sdk:lock:{thread_id}", token, px=30_000, nx=True)
            pipe.wait(1, 100)
            acquired, replicas = pipe.execute()
        lock = Lock(thread_id, token, expires_at) if acquired and replicas >= 1 else None
        assert lock is not None
        assert state.acquire_lock(thread_id, 1_000) is None
        assert state.extend_lock(lock, 30_000) is True
        state.release_lock(lock)
        assert state.acquire_lock(thread_id, 1_000) is not None
