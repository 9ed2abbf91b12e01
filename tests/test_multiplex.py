"""AsyncState's fast path: concurrent commands multiplexed on one connection per node.

Each test has a private redis-server, because it pauses (SIGSTOP) or kills it to hold
commands in flight. The conformance suite runs on this path for every topology; the
``redis-py-pooled`` targets run it with the switch off.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import redis

from chat_state import AsyncState, BackendError

from .servers import RedisServer

pytestmark = pytest.mark.anyio
CALLERS = 64


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    """The server stopped (SIGSTOP): it accepts bytes but answers nothing until resumed."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        resume(server)


def resume(server: RedisServer) -> None:
    if server.running and server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)


def client_ids(server: RedisServer) -> list[int]:
    """The ids of the server's clients, but for the one asking."""
    with redis.Redis.from_url(server.url) as probe:
        me = probe.client_id()
        return sorted(int(c["id"]) for c in probe.client_list() if int(c["id"]) != me)


async def test_concurrent_callers_share_one_connection(server: RedisServer) -> None:
    async with AsyncState.from_url(server.url) as state:
        async with anyio.create_task_group() as group:
            for i in range(CALLERS):
                group.start_soon(state.set, f"k{i}", {"i": i})
        assert len(client_ids(server)) == 1
        for i in range(CALLERS):
            assert await state.get(f"k{i}") == {"i": i}


async def test_the_switch_turns_it_off(server: RedisServer) -> None:
    """``auto_pipelining=false``: the client library's pool, a connection per caller."""
    async with AsyncState.from_url(server.url + "?auto_pipelining=false") as state:
        async with anyio.create_task_group() as group:
            for i in range(CALLERS):
                group.start_soon(state.set, f"k{i}", {"i": i})
        assert len(client_ids(server)) > 1
        assert await state.get("k7") == {"i": 7}


async def test_a_cancelled_caller_never_receives_or_shifts_another_callers_reply(
    server: RedisServer,
) -> None:
    async with AsyncState.from_url(server.url) as state:
        for i in range(CALLERS):
            await state.set(f"k{i}", {"i": i})
        connection = client_ids(server)
        results: dict[int, Any] = {}
        cancelled: list[int] = []

        async def get(i: int) -> None:
            with anyio.CancelScope() as scope:
                if i % 2 == 0:  # cancelled while its command waits on the paused server
                    scope.deadline = anyio.current_time() + 0.05
                results[i] = await state.get(f"k{i}")
            if scope.cancelled_caught:
                cancelled.append(i)

        with paused(server):
            async with anyio.create_task_group() as group:
                for i in range(CALLERS):
                    group.start_soon(get, i)
                await anyio.sleep(0.3)
                resume(server)  # the replies of the cancelled callers come, and are dropped
        assert sorted(cancelled) == list(range(0, CALLERS, 2))
        assert results == {i: {"i": i} for i in range(1, CALLERS, 2)}
        # The connection is the same one, and still in step.
        assert client_ids(server) == connection
        for i in reversed(range(CALLERS)):
            assert await state.get(f"k{i}") == {"i": i}


async def test_a_dropped_connection_fails_the_commands_in_flight_and_recovers(
    server: RedisServer,
) -> None:
    async with AsyncState.from_url(server.url) as state:
        await state.set("k", 1)
        errors: list[BackendError] = []

        async def get() -> None:
            try:
                await state.get("k")
            except BackendError as exc:
                errors.append(exc)

        with paused(server):
            async with anyio.create_task_group() as group:
                for _ in range(CALLERS):
                    group.start_soon(get)
                await anyio.sleep(0.2)
                server.kill()  # with every command in flight
        assert len(errors) == CALLERS
        assert all("connection was closed" in str(exc) for exc in errors), errors[0]
        with pytest.raises(BackendError, match="cannot connect"):
            await state.get("k")
        server.restart()
        await state.set("k", 2)
        assert await state.get("k") == 2


async def test_a_reply_that_never_comes_times_out_and_the_next_command_reconnects(
    server: RedisServer,
) -> None:
    async with AsyncState.from_url(server.url + "?socket_timeout=0.3") as state:
        await state.set("k", 1)
        first = client_ids(server)
        with paused(server), pytest.raises(BackendError, match=r"no reply within 0\.3 s"):
            await state.get("k")
        assert await state.get("k") == 1
        assert client_ids(server) != first


async def test_disconnect_fails_commands_still_in_flight(server: RedisServer) -> None:
    state = AsyncState.from_url(server.url)
    await state.connect()
    errors: list[BackendError] = []

    async def get() -> None:
        try:
            await state.get("k")
        except BackendError as exc:
            errors.append(exc)

    with paused(server):
        async with anyio.create_task_group() as group:
            group.start_soon(get)
            await anyio.sleep(0.1)
            await state.disconnect()
    assert [str(exc) for exc in errors] == [
        "redis command failed: ConnectionLost: closed by chat-state"
    ]
