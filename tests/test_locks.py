"""``state.lock()``: waiting, renewal, loss, cancellation; ``acquire_lock(wait_ms=)``;
durations as timedelta; the short-TTL warning; and the re-check pair, raced against
releases thousands of times, with nothing stranded (vercel/chat #928).

Each test runs through State and AsyncState (on asyncio, and on trio where the backend
runs there) on memory and on real servers: standalone, Cluster and Sentinel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from chat_state import (
    AsyncState,
    HeldLock,
    Lock,
    LockLostError,
    LockUnavailableError,
    QueueEntry,
    State,
    locking,
)
from chat_state.backend import backoff
from chat_state.testing import RedisServer, ServerUnavailable, find_server_binary

from .conftest import FIGURES, IN_CI, AsAsync, Target

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent

#: Where the lock tests run: memory, each topology, each client library's way in.
LOCK_TARGETS = [
    "memory",
    "redis-server/standalone/redis-py",
    "redis-server/cluster/redis-py",
    "redis-server/sentinel/redis-py",
    "valkey-server/standalone/valkey-py",
    "redis-server/standalone/coredis",
    "redis-server/cluster/coredis",
    "redis-server/standalone/redis-py-pooled",
]
#: Where the hand-off is raced: memory and every topology.
RACE_TARGETS = [
    "memory",
    "redis-server/standalone/redis-py",
    "redis-server/sentinel/redis-py",
    "redis-server/cluster/redis-py",
    "valkey-server/cluster/valkey-py",
]
SERVER_TOPOLOGIES = [
    "redis-server/standalone/redis-py",
    "redis-server/cluster/redis-py",
    "redis-server/sentinel/redis-py",
]

RENEWAL_THREAD = "chat-state lock renewal"


def _renewal_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(RENEWAL_THREAD)]


async def _connected(make_state: Callable[..., Any], count: int = 1) -> list[Any]:
    adapters = [make_state() for _ in range(count)]
    for adapter in adapters:
        await adapter.connect()
    return adapters


async def _disconnect(*adapters: Any) -> None:
    for adapter in adapters:
        await adapter.disconnect()


Body = Callable[[HeldLock], Awaitable[None]]


async def _nothing(held: HeldLock) -> None:
    return None


async def in_lock(adapter: Any, body: Body, *args: Any, **kwargs: Any) -> None:
    """Run ``body(held)`` inside ``adapter.lock(*args, **kwargs)``: ``with`` for State,
    ``async with`` for AsyncState."""
    if isinstance(adapter, AsAsync):
        with adapter.sync.lock(*args, **kwargs) as held:
            await body(held)
    else:
        async with adapter.lock(*args, **kwargs) as held:
            await body(held)


# -- mutual exclusion -----------------------------------------------------------------------


@pytest.mark.targets(LOCK_TARGETS)
async def test_lock_excludes_many_tasks_or_threads(make_state: Any, target: Target) -> None:
    """A read-modify-write counter inside lock(): no update is lost."""
    first, second = await _connected(make_state, 2)
    workers, rounds = 8, 15
    try:
        if isinstance(first, AsAsync):

            def work(state: State) -> None:
                for _ in range(rounds):
                    with state.lock("counter", 5_000, wait_ms=30_000):
                        value = state.get("n") or 0
                        time.sleep(0.0005)  # another thread's turn, if it could get in
                        state.set("n", value + 1)

            threads = [
                threading.Thread(target=work, args=((first, second)[i % 2].sync,))
                for i in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not any(thread.is_alive() for thread in threads)
        else:

            async def work_async(state: AsyncState) -> None:
                for _ in range(rounds):
                    async with state.lock("counter", 5_000, wait_ms=30_000):
                        value = await state.get("n") or 0
                        await anyio.sleep(0.0005)
                        await state.set("n", value + 1)

            async with anyio.create_task_group() as group:
                for i in range(workers):
                    group.start_soon(work_async, (first, second)[i % 2])
        assert await first.get("n") == workers * rounds
        assert target.raw.get(target.key("lock", "counter")) is None
        assert not _renewal_threads()
        assert not locking.WAITING
    finally:
        await _disconnect(first, second)


@pytest.mark.targets(SERVER_TOPOLOGIES)
def test_lock_excludes_several_processes(target: Target) -> None:
    """Four processes (two through State, two through AsyncState) increment one counter
    under lock(): every increment is there."""
    key, times = "n", 25
    driver = target.driver or "-"
    procs = []
    for facade in ("sync", "async", "sync", "async"):
        argv = [target.url, target.prefix, driver, facade, "shared", key, str(times)]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.lock_worker", *argv],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == str(times)
    stored = target.raw.get(target.key("cache", key))
    assert stored == str(len(procs) * times)
    assert target.raw.get(target.key("lock", "shared")) is None


# -- renewal --------------------------------------------------------------------------------


@pytest.mark.targets(LOCK_TARGETS)
async def test_a_body_five_times_longer_than_the_ttl_keeps_the_lock(
    make_state: Any, target: Target
) -> None:
    holder, other = await _connected(make_state, 2)
    ttl = 400
    tries = 0

    async def body(held: HeldLock) -> None:
        nonlocal tries
        first_expiry = held.expires_at
        deadline = time.monotonic() + 5 * ttl / 1000
        while time.monotonic() < deadline:
            assert await other.acquire_lock("long", 10_000) is None
            tries += 1
            await anyio.sleep(0.05)
        assert held.expires_at > first_expiry  # renewed, and the value follows
        assert not held.lost

    try:
        await in_lock(holder, body, "long", ttl)
        assert tries >= 10
        assert target.raw.get(target.key("lock", "long")) is None  # released at exit
        assert await other.acquire_lock("long", 10_000) is not None
        assert not _renewal_threads()
    finally:
        await _disconnect(holder, other)


@pytest.mark.targets(LOCK_TARGETS)
async def test_renew_false_holds_for_the_ttl_only(make_state: Any, target: Target) -> None:
    holder, other = await _connected(make_state, 2)
    seen: list[HeldLock] = []

    async def body(held: HeldLock) -> None:
        seen.append(held)
        assert not _renewal_threads()
        await anyio.sleep(1.3)  # the lock expires under the block

    try:
        with pytest.raises(LockLostError, match="no longer held"):
            await in_lock(holder, body, "short", 1000, renew=False)
        assert seen[0].lost
        assert await other.acquire_lock("short", 1000) is not None
    finally:
        await _disconnect(holder, other)


# -- waiting --------------------------------------------------------------------------------


@pytest.mark.targets(LOCK_TARGETS)
async def test_a_waiter_is_woken_by_the_release(
    make_state: Any, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every backoff step made a minute long, a waiter still gets the lock right
    after the holder (another adapter of this process) releases it."""
    monkeypatch.setattr(locking, "WAIT_BASE_S", 60.0)
    monkeypatch.setattr(locking, "WAIT_CAP_S", 60.0)
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    holder, waiter = await _connected(make_state, 2)
    try:
        lock = await holder.acquire_lock("w", 30_000)
        assert lock is not None
        got: list[Any] = []

        async def wait_for_it() -> None:
            if isinstance(waiter, AsAsync):
                got.append(await anyio.to_thread.run_sync(_sync_wait, waiter.sync))
            else:
                async with waiter.lock("w", 30_000, wait_ms=120_000) as held:
                    got.append(held)

        with anyio.fail_after(30):  # a full step would be 60 s
            async with anyio.create_task_group() as group:
                group.start_soon(wait_for_it)
                await anyio.sleep(0.3)
                assert not got
                await holder.release_lock(lock)
        assert len(got) == 1
        assert not locking.WAITING
    finally:
        await _disconnect(holder, waiter)


def _sync_wait(state: State) -> HeldLock:
    with state.lock("w", 30_000, wait_ms=120_000) as held:
        return held


@pytest.mark.targets(LOCK_TARGETS)
async def test_a_waiter_whose_deadline_passes_gets_nothing(make_state: Any) -> None:
    holder, waiter = await _connected(make_state, 2)
    try:
        assert await holder.acquire_lock("busy", 30_000) is not None
        started = time.monotonic()
        assert await waiter.acquire_lock("busy", 30_000, wait_ms=300) is None
        assert time.monotonic() - started >= 0.3  # it did wait the whole time
        with pytest.raises(LockUnavailableError) as caught:
            await in_lock(waiter, _nothing, "busy", wait_ms=timedelta(milliseconds=200))
        assert caught.value.thread_id == "busy"
        assert "within 200 ms" in str(caught.value)
        with pytest.raises(LockUnavailableError, match="one try"):
            await in_lock(waiter, _nothing, "busy")
        assert not locking.WAITING
    finally:
        await _disconnect(holder, waiter)


@pytest.mark.targets(LOCK_TARGETS)
@pytest.mark.facades(["async"])  # a blocking call cannot be cancelled
async def test_a_cancelled_waiter_leaves_nothing_behind(make_state: Any, target: Target) -> None:
    holder, waiter = await _connected(make_state, 2)
    lock_key = target.key("lock", "c")
    try:
        lock = await holder.acquire_lock("c", 30_000)
        with anyio.move_on_after(0.2) as scope:
            async with waiter.lock("c", 30_000, wait_ms=10_000):
                pytest.fail("the lock was held by another holder")
        assert scope.cancelled_caught
        assert not locking.WAITING
        await holder.release_lock(lock)
        assert target.raw.get(lock_key) is None
        # Cancellation at every moment of a waiting acquire, the grant included: after
        # each round the lock is either this waiter's (and released) or nobody's.
        rng = random.Random(928)
        for _ in range(60):
            lock = await holder.acquire_lock("c", 30_000)
            assert lock is not None
            async with anyio.create_task_group() as group:

                async def release_soon(lock: Lock = lock) -> None:
                    await anyio.sleep(rng.random() * 0.004)
                    await holder.release_lock(lock)

                group.start_soon(release_soon)
                with anyio.move_on_after(rng.random() * 0.004):
                    got = await waiter.acquire_lock("c", 30_000, wait_ms=5_000)
                    with anyio.CancelScope(shield=True):  # the test's own release
                        await waiter.release_lock(got)
            assert target.raw.get(lock_key) is None
        assert not locking.WAITING
    finally:
        await _disconnect(holder, waiter)


# -- loss -----------------------------------------------------------------------------------


@pytest.mark.targets(LOCK_TARGETS)
@pytest.mark.parametrize("how", ["force_release", "taken_over"])
async def test_a_lost_lock_cancels_the_body_or_raises_at_exit(
    make_state: Any, target: Target, how: str
) -> None:
    holder, other = await _connected(make_state, 2)
    ttl = 900
    seen: list[HeldLock] = []
    reached_end = False

    async def body(held: HeldLock) -> None:
        nonlocal reached_end
        seen.append(held)
        await other.force_release_lock("lost")
        if how == "taken_over":
            assert await other.acquire_lock("lost", 30_000) is not None
        if isinstance(holder, AsAsync):  # a thread is not interrupted: it sees `lost`
            deadline = time.monotonic() + 10
            while not held.lost and time.monotonic() < deadline:
                time.sleep(0.01)
            assert held.lost  # at once: before the block ends
        else:
            await anyio.sleep(10)  # cancelled when the renewal finds the lock gone
        reached_end = True

    try:
        with pytest.raises(LockLostError) as caught:
            await in_lock(holder, body, "lost", ttl)
        assert reached_end == isinstance(holder, AsAsync)
        assert seen[0].lost
        assert caught.value.thread_id == "lost"
        assert "released or taken" in str(caught.value)
        stored = target.raw.get(target.key("lock", "lost"))
        assert (stored is None) == (how == "force_release")  # the new holder's is kept
        assert not _renewal_threads()
    finally:
        await _disconnect(holder, other)


# -- cancellation and exceptions ------------------------------------------------------------


class _Boom(Exception):
    pass


@pytest.mark.targets(LOCK_TARGETS)
async def test_an_exception_propagates_unchanged_and_the_lock_is_released(
    make_state: Any, target: Target
) -> None:
    (state,) = await _connected(make_state)
    boom = _Boom("from the body")

    async def body(held: HeldLock) -> None:
        raise boom

    try:
        with pytest.raises(_Boom) as caught:
            await in_lock(state, body, "e", 5_000)
        assert caught.value is boom
        assert target.raw.get(target.key("lock", "e")) is None
        assert not _renewal_threads()
    finally:
        await state.disconnect()


@pytest.mark.targets(LOCK_TARGETS)
@pytest.mark.facades(["async"])  # State's blocks run in threads, which cannot be cancelled
async def test_cancelling_the_body_or_its_task_releases_the_lock(
    make_state: Any, target: Target
) -> None:
    (state,) = await _connected(make_state)
    lock_key = target.key("lock", "k")
    try:
        with anyio.move_on_after(0.1) as scope:  # the surrounding scope
            async with state.lock("k", 3_000):
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert target.raw.get(lock_key) is None

        started = anyio.Event()

        async def handler() -> None:
            async with state.lock("k", 3_000):
                started.set()
                await anyio.sleep(10)

        async with anyio.create_task_group() as group:  # the task's group
            group.start_soon(handler)
            await started.wait()
            assert target.raw.get(lock_key) is not None
            group.cancel_scope.cancel()
        assert target.raw.get(lock_key) is None

        assert await state.acquire_lock("k", 3_000) is not None
    finally:
        await state.disconnect()


@pytest.mark.targets(LOCK_TARGETS)
@pytest.mark.facades(["async"])
async def test_the_lock_is_renewed_while_a_cancelled_body_cleans_up(
    make_state: Any, target: Target
) -> None:
    """The surrounding scope is cancelled while the block runs shielded clean-up for 4x
    the TTL: the lock is still renewed (another adapter cannot take it), then released."""
    holder, other = await _connected(make_state, 2)
    taken_meanwhile: list[Any] = []
    seen: list[HeldLock] = []
    try:
        with anyio.CancelScope() as outer:
            async with holder.lock("k", 400) as held:
                seen.append(held)
                outer.cancel()
                with anyio.CancelScope(shield=True):
                    for _ in range(16):  # 1.6 s
                        await anyio.sleep(0.1)
                        taken_meanwhile.append(await other.acquire_lock("k", 10_000))
        assert outer.cancelled_caught
        assert taken_meanwhile == [None] * 16
        assert not seen[0].lost
        assert target.raw.get(target.key("lock", "k")) is None
    finally:
        await _disconnect(holder, other)


class _LateReplies:
    """A backend whose replies to one command come late: the server has run it, and the
    caller is still waiting (where a cancellation can cut in)."""

    def __init__(self, backend: Any, command: str, delay: float) -> None:
        self._backend, self._command, self._delay = backend, command, delay

    def call(self, key: str | None, args: Any) -> Any:
        return self._late(key, args)

    async def _late(self, key: str | None, args: Any) -> Any:
        reply = await self._backend.call(key, args)
        if args[0] == self._command:
            await anyio.sleep(self._delay)
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


async def _until_gone(target: Target, key: str) -> bool:
    """Whether ``key`` is gone within 5 s (a release may finish in a task of its own)."""
    for _ in range(100):
        if target.raw.get(key) is None:
            return True
        await anyio.sleep(0.05)
    return False


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
@pytest.mark.parametrize("how", ["anyio", "wait_for", "task.cancel"])
@pytest.mark.parametrize("wait_ms", [5_000, 0])
async def test_a_waiter_cancelled_after_the_grant_holds_nothing(
    target: Target, how: str, wait_ms: int
) -> None:
    """The server grants the lock, and the waiter is cancelled before the reply reaches
    it, by anyio or by asyncio itself: the granted lock is released again (also with no
    wait, one try)."""
    async with AsyncState.from_url(target.url, key_prefix=target.prefix) as state:
        state._backend = _LateReplies(state._backend, "SET", 0.3)
        lock_key = target.key("lock", "g")

        async def wait_for_it() -> None:
            async with state.lock("g", 30_000, wait_ms=wait_ms):
                pytest.fail("cancelled before the grant arrived")

        if how == "anyio":
            with anyio.move_on_after(0.1):
                await wait_for_it()
        elif how == "wait_for":
            with pytest.raises(asyncio.TimeoutError):  # not the builtin one before 3.11
                await asyncio.wait_for(wait_for_it(), 0.1)
        else:
            task = asyncio.ensure_future(wait_for_it())
            await anyio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert await _until_gone(target, lock_key)
        assert not locking.WAITING


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_asyncio_cancelling_the_exit_still_releases(target: Target) -> None:
    """asyncio's own cancellation (which anyio's shields do not stop) lands while the block
    is being left: the release still completes, and the scopes around stay intact."""
    async with AsyncState.from_url(target.url, key_prefix=target.prefix) as state:
        lock_key = target.key("lock", "x")

        async def block() -> None:
            async with state.lock("x", 30_000):
                state._backend = _LateReplies(state._backend, "EVALSHA", 0.3)

        with anyio.CancelScope():  # would raise if its stack were corrupted
            with pytest.raises(asyncio.TimeoutError):  # not the builtin one before 3.11
                await asyncio.wait_for(block(), 0.1)
        assert target.raw.get(lock_key) is None  # released before the cancellation went on


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_no_task_outlives_the_block(target: Target) -> None:
    async with AsyncState.from_url(target.url, key_prefix=target.prefix) as state:
        before = asyncio.all_tasks()
        async with state.lock("t", 3_000):
            assert len(asyncio.all_tasks() - before) == 1  # the task that renews it
        assert asyncio.all_tasks() == before

        async def lose(held: HeldLock) -> None:
            await state.force_release_lock("t")
            await anyio.sleep(5)

        with pytest.raises(LockLostError):
            await in_lock(state, lose, "t", 3_000)
        assert asyncio.all_tasks() == before


def test_the_wait_schedule() -> None:
    """Full jitter under an exponential cap (5 ms x 2^n, at most 100 ms), never past the
    deadline, where the last try is made."""
    patience = locking._Patience(1_000, now=0.0)
    now, delays = 0.0, []
    while (delay := patience.delay(now)) is not None:
        delays.append(delay)
        now += delay
    for n, delay in enumerate(delays):
        assert 0 <= delay <= min(locking.WAIT_CAP_S, locking.WAIT_BASE_S * 2**n)
    assert now == pytest.approx(1.0)  # the last delay ends at the deadline: one last try
    assert max(delays) > locking.WAIT_CAP_S / 4  # the steps did grow (jitter, not zero)


@pytest.mark.targets(["memory"])
async def test_a_holder_asking_again_waits_like_anyone(make_state: Any, target: Target) -> None:
    (state,) = await _connected(make_state)

    async def again(held: HeldLock) -> None:
        with pytest.raises(LockUnavailableError, match="not re-entrant"):
            await in_lock(state, _nothing, "r", 3_000, wait_ms=50)

    async def longer(held: HeldLock) -> None:
        assert await state.extend_lock(held, 60_000)
        assert target.raw.pttl(target.key("lock", "r")) > 3_000
        await anyio.sleep(1.2)  # a renewal, with lock()'s TTL again
        assert target.raw.pttl(target.key("lock", "r")) <= 3_000

    try:
        await in_lock(state, again, "r", 3_000)
        await in_lock(state, longer, "r", 3_000)
    finally:
        await state.disconnect()


def test_backoff_has_no_overflow() -> None:
    # A renewal retries for as long as its lock lasts: thousands of failures.
    assert backoff(10_000) == backoff(40)
    renewal = locking._Renewal(
        State.from_url("memory://"), HeldLock(Lock("t", "cs_x", 2**62)), 30_000
    )
    renewal._failures = 5_000
    assert renewal.failed(OSError("down")) == backoff(40)


@pytest.mark.targets(["memory"])
async def test_a_context_is_entered_once(make_state: Any) -> None:
    (state,) = await _connected(make_state)
    try:
        if isinstance(state, AsAsync):
            context = state.sync.lock("once")
            with context:
                pass
            with pytest.raises(RuntimeError, match="entered once"), context:
                pass
        else:
            acontext = state.lock("once")
            async with acontext:
                pass
            with pytest.raises(RuntimeError, match="entered once"):
                await acontext.__aenter__()
    finally:
        await state.disconnect()


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_every_duration_takes_a_timedelta(state: Any, target: Target) -> None:
    lock = await state.acquire_lock("td", timedelta(seconds=20))
    assert lock is not None
    assert 19_000 < target.raw.pttl(target.key("lock", "td")) <= 20_000
    assert await state.extend_lock(lock, timedelta(minutes=1))
    assert 59_000 < target.raw.pttl(target.key("lock", "td")) <= 60_000
    await state.set("k", 1, timedelta(seconds=30))
    assert 29_000 < target.raw.pttl(target.key("cache", "k")) <= 30_000
    assert await state.set_if_not_exists("k2", 1, timedelta(seconds=30))
    await state.append_to_list("l", 1, ttl_ms=timedelta(seconds=30))
    assert 29_000 < target.raw.pttl(target.key("list", "l")) <= 30_000
    # Rounded up to whole milliseconds: a positive duration never becomes "no TTL".
    assert await state.acquire_lock("tiny", timedelta(microseconds=1)) is not None
    await state.release_lock(lock)
    again = await state.acquire_lock("td", timedelta(seconds=5), wait_ms=timedelta(seconds=1))
    assert again is not None


@pytest.mark.targets(["memory"])
async def test_bad_durations_are_refused_before_anything_is_written(
    state: Any, target: Target
) -> None:
    bad: list[tuple[Any, type[Exception], str]] = [
        (timedelta(0), ValueError, "from 1"),
        (timedelta(seconds=-1), ValueError, "must not be negative"),
        (1.5, TypeError, "an int \\(milliseconds\\) or a timedelta, not float"),
        ("30", TypeError, "must be an int \\(milliseconds\\) or a timedelta, not str"),
        (True, TypeError, "not bool"),
    ]
    for value, error, message in bad:
        with pytest.raises(error, match=message):
            await state.acquire_lock("t", value)
        if value != timedelta(0):  # (a cache TTL of 0 means no expiry; a lock's, nothing)
            with pytest.raises(error, match=message):
                await state.set("k", 1, value)
        with pytest.raises(error, match=message):
            state.lock("t", value) if not isinstance(state, AsAsync) else state.sync.lock(
                "t", value
            )
    lock_call = state.sync.lock if isinstance(state, AsAsync) else state.lock
    with pytest.raises(ValueError, match="wait_ms must be"):
        lock_call("t", 1000, wait_ms=-1)
    with pytest.raises(TypeError, match="renew must be a bool"):
        lock_call("t", 1000, renew="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="thread_id must be a str"):
        lock_call(7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wait_ms must be"):
        await state.acquire_lock("t", 1000, wait_ms=-5)
    for falsy in (0.0, False, None):
        with pytest.raises(TypeError, match="wait_ms must be an int"):
            await state.acquire_lock("t", 1000, wait_ms=falsy)
    with pytest.raises(ValueError, match="wait_ms must not be negative"):
        await state.acquire_lock("t", 1000, wait_ms=timedelta(microseconds=-1))
    with pytest.raises(TypeError, match="thread_id must be a str"):
        await state.acquire_lock(7, 1000, wait_ms=10)
    lock = Lock("t", "cs_x", 0)
    with pytest.raises(ValueError, match="ttl_ms"):
        await state.release_and_recheck(lock, 0)  # refused before the release
    with pytest.raises(ValueError, match="ttl_ms"):
        await state.enqueue_and_recheck("t", QueueEntry(0, 1, "m"), 10, 0)
    assert target.raw.keys(target.prefix) == []


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_a_short_lock_ttl_is_warned_about_once_per_adapter(
    make_state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = await _connected(make_state, 2)
    try:
        with caplog.at_level(logging.WARNING, logger="chat_state"):
            await first.acquire_lock("a", 30_000)
            await first.acquire_lock("b", timedelta(seconds=2))
            assert not caplog.records
            lock = await first.acquire_lock("c", 30)
            await first.acquire_lock("d", 500)
            await first.extend_lock(lock, 20)
            assert len(caplog.records) == 1
            assert "30 ms" in caplog.records[0].getMessage()
            assert "milliseconds" in caplog.records[0].getMessage()
            await second.acquire_lock("e", timedelta(milliseconds=999))
            assert len(caplog.records) == 2
    finally:
        await _disconnect(first, second)


# -- a server outage ------------------------------------------------------------------------


def _private_server(extra: list[str]) -> RedisServer:
    binary = find_server_binary("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("no redis-server binary; in CI a missing server is a failure")
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    try:
        return RedisServer(extra, binary=binary).start()
    except ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.parametrize("persistence", ["kept", "dropped"])
async def test_renewal_rides_out_a_restart_or_reports_the_loss(
    facade: str, persistence: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed and restarted within the TTL. With the lock on disk (AOF,
    fsync always) the renewal retries through the outage and keeps it; without
    persistence the restart dropped it, and the renewal reports the loss."""
    extra = ["--appendonly", "yes", "--appendfsync", "always"] if persistence == "kept" else []
    server = _private_server(extra)
    prefix = f"o{uuid.uuid4().hex[:8]}"
    ttl = 3_000
    outcome: dict[str, Any] = {}

    def outage() -> None:
        time.sleep(0.5)
        server.kill()
        time.sleep(1.2)  # two renewals (every 1 s) fail meanwhile, or retry
        server.restart()

    def body_sync(state: State) -> None:
        with state.lock("o", ttl) as held:
            before = held.expires_at
            outage()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not held.lost:
                time.sleep(0.05)
            outcome.update(lost=held.lost, renewed=held.expires_at > before + 1_000)

    try:
        with caplog.at_level(logging.DEBUG, logger="chat_state"):
            if facade == "sync":
                with State.from_url(server.url, key_prefix=prefix) as state:
                    try:
                        body_sync(state)
                        outcome["raised"] = False
                    except LockLostError:
                        outcome["raised"] = True
                    holder_after = state.acquire_lock("o", 10_000)
            else:
                async with AsyncState.from_url(server.url, key_prefix=prefix) as astate:
                    try:
                        async with astate.lock("o", ttl) as held:
                            before = held.expires_at
                            await anyio.to_thread.run_sync(outage)
                            await anyio.sleep(3)
                            outcome.update(lost=held.lost, renewed=held.expires_at > before + 1_000)
                        outcome["raised"] = False
                    except LockLostError:
                        outcome.update(raised=True, lost=held.lost)
                    holder_after = await astate.acquire_lock("o", 10_000)
        retried = any("could not renew" in r.getMessage() for r in caplog.records)
        assert retried  # the outage was seen by the renewal
        if persistence == "kept":
            assert outcome == {"lost": False, "renewed": True, "raised": False}
        else:
            assert outcome["lost"]
            assert outcome["raised"]
        assert holder_after is not None  # released at exit (or gone): free again
    finally:
        server.stop()


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_a_release_that_cannot_reach_the_server_is_logged(
    facade: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server dies inside the block: leaving it logs that the lock could not be
    released (it expires by its TTL) and raises nothing."""
    server = _private_server([])
    try:
        with caplog.at_level(logging.WARNING, logger="chat_state"):
            if facade == "sync":
                with State.from_url(server.url) as state, state.lock("r", 5_000):
                    server.kill()
            else:
                astate = AsyncState.from_url(server.url)
                async with astate, astate.lock("r", 5_000):
                    server.kill()
        messages = [record.getMessage() for record in caplog.records]
        assert any("could not release the lock on thread 'r'" in m for m in messages), messages
        assert not _renewal_threads()
    finally:
        server.stop()


# -- the hand-off (vercel/chat #928) --------------------------------------------------------


def _entry(n: int) -> QueueEntry:
    now = int(time.time() * 1000)
    return QueueEntry(now, now + 600_000, {"n": n})


@dataclass
class Tally:
    """What happened in a race: newcomers queued behind a holder; the rounds in which a
    re-check took the lock and drained the queued message (each a message that plain
    ``release_lock`` and ``enqueue`` would have stranded); what was stranded."""

    queued: int = 0
    rescued: int = 0
    stranded: list[str] = field(default_factory=list)


async def _drain(
    state: Any,
    thread_id: str,
    lock: Any,
    handled: list[Any],
    tally: Tally,
    pause: Callable[[], Awaitable[None]],
    rechecked: bool = False,
) -> None:
    """What a holder does: take every queued entry, then hand off; again while the
    hand-off gives the lock back. ``pause`` may let the other side in between;
    ``rechecked``: the lock came from a re-check (then what it drains was rescued)."""
    while lock is not None:
        drained = 0
        while (entry := await state.dequeue(thread_id)) is not None:
            handled.append(entry.message["n"])
            drained += 1
        tally.rescued += rechecked and drained > 0
        await pause()  # between the last, empty dequeue and the release: #928's window
        lock = await state.release_and_recheck(lock, 30_000)
        rechecked = True


@pytest.mark.targets(RACE_TARGETS)
async def test_the_hand_off_strands_nothing(
    make_state: Any, target: Target, facade: str, anyio_backend: str
) -> None:
    """A holder's last empty dequeue and its release raced against a newcomer's failed
    acquire and its enqueue, thousands of times: every message is handled once, and no
    queue is left with entries and no holder."""
    await _race(make_state, target, facade, anyio_backend)


@pytest.mark.targets(["redis-server/standalone/coredis"])
@pytest.mark.facades(["async"])  # AsyncState on trio, on a server
async def test_the_hand_off_strands_nothing_on_coredis(
    make_state: Any, target: Target, anyio_backend: str
) -> None:
    await _race(make_state, target, "async", anyio_backend)


async def _race(make_state: Any, target: Target, facade: str, anyio_backend: str) -> None:
    holder_state, newcomer_state = await _connected(make_state, 2)
    rounds, pairs = 2_000, 20
    rng = random.Random(928)
    tally = Tally()
    try:

        async def jitter() -> None:
            for _ in range(rng.randrange(3)):
                await anyio.sleep(0)

        async def one_round(thread_id: str) -> None:
            handled: list[Any] = []
            lock = await holder_state.acquire_lock(thread_id, 30_000)
            assert lock is not None

            async def holder() -> None:
                await jitter()
                await _drain(holder_state, thread_id, lock, handled, tally, jitter)

            async def newcomer() -> None:
                await jitter()
                mine = await newcomer_state.acquire_lock(thread_id, 30_000)
                if mine is None:
                    tally.queued += 1
                    await jitter()
                    mine = await newcomer_state.enqueue_and_recheck(
                        thread_id, _entry(1), 100, 30_000
                    )
                    await _drain(newcomer_state, thread_id, mine, handled, tally, jitter, True)
                else:
                    handled.append(1)  # took the lock: handled its own message at once
                    await _drain(newcomer_state, thread_id, mine, handled, tally, jitter)

            async with anyio.create_task_group() as group:
                group.start_soon(holder)
                group.start_soon(newcomer)
            if await holder_state.queue_depth(thread_id) or handled != [1]:
                tally.stranded.append(f"{thread_id}: handled {handled}")
            assert target.raw.get(target.key("lock", thread_id)) is None

        async def pair(index: int) -> None:
            for n in range(rounds // pairs):
                await one_round(f"race-{index}-{n}")

        if isinstance(holder_state, AsAsync):
            # State: the two sides in two threads, truly at once.
            await anyio.to_thread.run_sync(
                _race_in_threads, holder_state.sync, newcomer_state.sync, rounds, tally
            )
        else:
            async with anyio.create_task_group() as group:
                for index in range(pairs):
                    group.start_soon(pair, index)
        how = "State" if facade == "sync" else f"AsyncState on {anyio_backend}"
        FIGURES.append(
            f"hand-off race {target.name} ({how}): {rounds} rounds, {tally.queued} newcomers "
            f"queued behind the holder, {tally.rescued} messages that plain release/enqueue "
            f"would have stranded, {len(tally.stranded)} stranded"
        )
        assert tally.rescued > 0  # the interleaving of #928 did happen
        assert tally.stranded == []
    finally:
        await _disconnect(holder_state, newcomer_state)


def _race_in_threads(holder_state: State, newcomer_state: State, rounds: int, tally: Tally) -> None:
    """The race of the test above with each side in a thread of its own."""

    def drain(
        state: State, thread_id: str, lock: Lock | None, handled: list[Any], rechecked: bool
    ) -> None:
        while lock is not None:
            drained = 0
            while (entry := state.dequeue(thread_id)) is not None:
                handled.append(entry.message["n"])
                drained += 1
            tally.rescued += rechecked and drained > 0
            time.sleep(rng.random() * 0.0002)  # #928's window, for the other thread
            lock = state.release_and_recheck(lock, 30_000)
            rechecked = True

    rng = random.Random(685)
    for n in range(rounds):
        thread_id = f"trace-{n}"
        handled: list[Any] = []
        lock = holder_state.acquire_lock(thread_id, 30_000)
        assert lock is not None
        barrier = threading.Barrier(2)

        def newcomer(
            thread_id: str = thread_id,
            handled: list[Any] = handled,
            barrier: threading.Barrier = barrier,
        ) -> None:
            barrier.wait()
            time.sleep(rng.random() * 0.0003)  # either side may go first
            mine = newcomer_state.acquire_lock(thread_id, 30_000)
            if mine is None:
                tally.queued += 1
                mine = newcomer_state.enqueue_and_recheck(thread_id, _entry(1), 100, 30_000)
                drain(newcomer_state, thread_id, mine, handled, True)
            else:
                handled.append(1)
                drain(newcomer_state, thread_id, mine, handled, False)

        other = threading.Thread(target=newcomer)
        other.start()
        barrier.wait()
        time.sleep(rng.random() * 0.0003)
        drain(holder_state, thread_id, lock, handled, False)
        other.join(timeout=30)
        assert not other.is_alive()
        if holder_state.queue_depth(thread_id) or handled != [1]:
            tally.stranded.append(f"{thread_id}: handled {handled}")


@pytest.mark.targets(["memory", "redis-server/cluster/redis-py"])
async def test_without_the_hand_off_the_race_strands_a_message(state: Any) -> None:
    """The control: the interleaving of vercel/chat #928, step by step, with plain
    release_lock and enqueue strands the message; with the re-check pair it does not."""
    # Plain: holder's last dequeue is empty; the newcomer's acquire fails; it enqueues;
    # the holder releases. Nobody drains.
    lock = await state.acquire_lock("plain", 30_000)
    assert await state.dequeue("plain") is None
    assert await state.acquire_lock("plain", 30_000) is None
    await state.enqueue("plain", _entry(1), 100)
    await state.release_lock(lock)
    assert await state.queue_depth("plain") == 1  # stranded: no holder, one message
    # The pair, same order: the holder's release re-checks and takes the lock back.
    lock = await state.acquire_lock("pair", 30_000)
    assert await state.dequeue("pair") is None
    assert await state.acquire_lock("pair", 30_000) is None
    assert await state.enqueue_and_recheck("pair", _entry(1), 100, 30_000) is None
    again = await state.release_and_recheck(lock, 30_000)
    assert again is not None  # the holder drains again
    assert (await state.dequeue("pair")).message == {"n": 1}
    assert await state.release_and_recheck(again, 30_000) is None
    # The other order: the release lands before the enqueue; the newcomer's re-check
    # takes the lock.
    lock = await state.acquire_lock("late", 30_000)
    assert await state.acquire_lock("late", 30_000) is None
    assert await state.release_and_recheck(lock, 30_000) is None
    mine = await state.enqueue_and_recheck("late", _entry(1), 100, 30_000)
    assert mine is not None
    assert (await state.dequeue("late")).message == {"n": 1}
    assert await state.release_and_recheck(mine, 30_000) is None
    assert await state.queue_depth("late") == 0


async def _queue_then_lock(state: AsyncState, thread_id: str, n: int, handled: list[int]) -> None:
    """The README's recipe with lock(): queue first, drain under the lock, look again."""
    await state.enqueue(thread_id, _entry(n), 100)
    while True:
        try:
            async with state.lock(thread_id, 30_000):
                while (queued := await state.dequeue(thread_id)) is not None:
                    handled.append(queued.message["n"])
        except LockUnavailableError:
            return
        except LockLostError:
            pass
        if not await state.queue_depth(thread_id):
            return


@pytest.mark.targets(
    ["memory", "redis-server/standalone/redis-py", "redis-server/cluster/redis-py"]
)
async def test_the_lock_recipe_strands_nothing(target: Target) -> None:
    first = AsyncState.from_url(target.url, key_prefix=target.prefix, driver=target.driver)
    second = AsyncState.from_url(target.url, key_prefix=target.prefix, driver=target.driver)
    rng = random.Random(277)
    rounds, bad = 1_000, []
    async with first, second:

        async def one(state: AsyncState, thread_id: str, n: int, handled: list[int]) -> None:
            for _ in range(rng.randrange(3)):
                await anyio.sleep(0)
            await _queue_then_lock(state, thread_id, n, handled)

        for index in range(rounds):
            thread_id, handled = f"recipe-{index}", list[int]()
            async with anyio.create_task_group() as group:
                group.start_soon(one, first, thread_id, 1, handled)
                group.start_soon(one, second, thread_id, 2, handled)
            if sorted(handled) != [1, 2] or await first.queue_depth(thread_id):
                bad.append(f"{thread_id}: {handled}")
    assert bad == []
    assert not locking.WAITING


# -- no warnings, no leftovers ---------------------------------------------------------------


DEV_SCRIPT = """
import sys, threading, anyio
from chat_state import AsyncState, State, LockLostError
url = sys.argv[1]

async def main():
    async with AsyncState.from_url(url, key_prefix=sys.argv[2]) as a, \\
            AsyncState.from_url(url, key_prefix=sys.argv[2]) as b:
        async with a.lock("t", 1000, wait_ms=100):
            await anyio.sleep(0.5)
        try:
            async with a.lock("t", 1000):
                await b.force_release_lock("t")
                await anyio.sleep(5)
        except LockLostError:
            pass
        with anyio.move_on_after(0.1):
            async with a.lock("t", 1000):
                await anyio.sleep(5)
        held = await b.acquire_lock("t", 5000)
        with anyio.move_on_after(0.1):
            await a.acquire_lock("t", 1000, wait_ms=5000)
        await b.release_and_recheck(held, 1000)

anyio.run(main)
prefix = sys.argv[2]
with State.from_url(url, key_prefix=prefix) as s, State.from_url(url, key_prefix=prefix) as o:
    with s.lock("u", 1000, wait_ms=100):
        pass
    try:
        with s.lock("u", 1000):
            o.force_release_lock("u")
            import time; time.sleep(0.6)
    except LockLostError:
        pass
assert [t for t in threading.enumerate() if t.name.startswith("chat-state lock")] == []
print("ok")
"""


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
def test_no_warning_under_dev_mode(target: Target) -> None:
    """Every path of lock() under ``python -X dev -W error``: no ResourceWarning, no
    never-awaited coroutine, no thread left behind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", DEV_SCRIPT, target.url, target.prefix],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert "Warning" not in done.stderr, done.stderr


def test_lock_errors_pickle_with_their_thread() -> None:
    for error_type in (LockLostError, LockUnavailableError):
        error = error_type("message", thread_id="t-1")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is error_type
        assert (str(copy), copy.thread_id) == ("message", "t-1")


def test_held_lock_keeps_its_token_out_of_repr() -> None:
    held = HeldLock(Lock("t", "cs_secret", 5))
    assert "cs_secret" not in repr(held)
    assert (held.thread_id, held.token, held.expires_at, held.lost) == ("t", "cs_secret", 5, False)
