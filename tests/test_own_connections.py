"""chat-state's own connections: AsyncState's multiplexed ones, State's lean ones.

Each test has a private redis-server, because it pauses (SIGSTOP) or kills it to hold
commands in flight. The conformance suite runs on these connections everywhere they
apply; its ``redis-py-pooled`` targets run with them switched off
(``own_connections=false``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio

from chat_state import AsyncState, BackendError, State
from chat_state.testing import RedisServer

CALLERS = 64


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """AsyncState's connections on asyncio's own loop and on uvloop's."""
    return request.param


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


async def get_recording(state: AsyncState, errors: list[BackendError]) -> None:
    """``state.get("k")``, its BackendError (if any) appended to ``errors``."""
    try:
        await state.get("k")
    except BackendError as exc:
        errors.append(exc)


def client_ids(server: RedisServer) -> list[int]:
    """The ids of the server's clients, but for the one asking."""
    with redis.Redis.from_url(server.url) as probe:
        me = probe.client_id()
        return sorted(int(c["id"]) for c in probe.client_list() if int(c["id"]) != me)


@pytest.mark.anyio
async def test_concurrent_callers_share_one_connection(server: RedisServer) -> None:
    async with AsyncState.from_url(server.url) as state:
        async with anyio.create_task_group() as group:
            for i in range(CALLERS):
                group.start_soon(state.set, f"k{i}", {"i": i})
        assert len(client_ids(server)) == 1
        for i in range(CALLERS):
            assert await state.get(f"k{i}") == {"i": i}


@pytest.mark.anyio
async def test_the_switch_turns_it_off(server: RedisServer) -> None:
    """``own_connections=false``: the client library's pool, a connection per caller."""
    async with AsyncState.from_url(server.url + "?own_connections=false") as state:
        async with anyio.create_task_group() as group:
            for i in range(CALLERS):
                group.start_soon(state.set, f"k{i}", {"i": i})
        assert len(client_ids(server)) > 1
        assert await state.get("k7") == {"i": 7}


@pytest.mark.anyio
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


@pytest.mark.anyio
async def test_a_dropped_connection_fails_the_commands_in_flight_and_recovers(
    server: RedisServer,
) -> None:
    async with AsyncState.from_url(server.url) as state:
        await state.set("k", 1)
        errors: list[BackendError] = []
        with paused(server):
            async with anyio.create_task_group() as group:
                for _ in range(CALLERS):
                    group.start_soon(get_recording, state, errors)
                await anyio.sleep(0.2)
                server.kill()  # with every command in flight
        assert len(errors) == CALLERS
        assert all("connection was closed" in str(exc) for exc in errors), errors[0]
        with pytest.raises(BackendError, match="cannot connect"):
            await state.get("k")
        server.restart()
        await state.set("k", 2)
        assert await state.get("k") == 2


@pytest.mark.anyio
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


def lock_holder(server: RedisServer, thread_id: str) -> str | None:
    """The token stored for ``thread_id``'s lock, once the server has caught up."""
    with redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5) as probe:
        token: str | None = probe.get(f"chat-sdk:lock:{thread_id}")
        return token


@pytest.mark.anyio
async def test_a_command_that_timed_out_may_still_have_run(server: RedisServer) -> None:
    """What the README says under "What a lock promises": the caller got BackendError,
    and yet the server ran the command once it could; force_release_lock undoes it."""
    async with AsyncState.from_url(server.url + "?socket_timeout=0.3") as state:
        with paused(server), pytest.raises(BackendError, match=r"no reply within 0\.3 s"):
            await state.acquire_lock("t", 30_000)
        assert lock_holder(server, "t") is not None  # held, by nobody who knows its token
        assert await state.acquire_lock("t", 30_000) is None
        await state.force_release_lock("t")
        assert await state.acquire_lock("t", 30_000) is not None


def test_state_a_command_that_timed_out_may_still_have_run(server: RedisServer) -> None:
    with State.from_url(server.url + "?socket_timeout=0.3") as state:
        with paused(server), pytest.raises(BackendError, match=r"no reply within 0\.3 s"):
            state.acquire_lock("t", 30_000)
        assert lock_holder(server, "t") is not None
        assert state.acquire_lock("t", 30_000) is None
        state.force_release_lock("t")
        assert state.acquire_lock("t", 30_000) is not None


@pytest.mark.anyio
async def test_disconnect_fails_commands_still_in_flight(server: RedisServer) -> None:
    state = AsyncState.from_url(server.url)
    await state.connect()
    errors: list[BackendError] = []
    with paused(server):
        async with anyio.create_task_group() as group:
            group.start_soon(get_recording, state, errors)
            await anyio.sleep(0.1)
            await state.disconnect()
    assert [str(exc) for exc in errors] == ["closed by chat-state"]


# -- State ------------------------------------------------------------------------------


def in_threads(count: int, work: Any) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` threads at once; → what they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait(timeout=10)
        try:
            work(i)
        except BaseException as exc:  # collected for the test to check
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return errors


def test_state_keeps_a_connection_per_thread_in_use(server: RedisServer) -> None:
    threads = 8
    with State.from_url(server.url) as state:

        def work(i: int) -> None:
            for j in range(50):
                state.set(f"k{i}", {"i": i, "j": j})
                assert state.get(f"k{i}") == {"i": i, "j": j}

        assert in_threads(threads, work) == []
        assert 1 <= len(client_ids(server)) <= threads
        state.get("k0")  # the connections are reused, not opened again
        assert len(client_ids(server)) <= threads
    assert client_ids(server) == []  # disconnect closed them


def test_state_switch_uses_the_client_librarys_pool(server: RedisServer) -> None:
    with State.from_url(server.url + "?own_connections=false") as state:
        state.set("k", 1)
        assert len(client_ids(server)) == 1
        assert type(state._backend).__name__ == "SyncRedisBackend"
    with State.from_url(server.url) as state:
        state.set("k", 1)
        assert type(state._backend).__name__ == "BlockingBackend"


def test_get_client_gives_a_redis_py_client_of_the_same_server(server: RedisServer) -> None:
    """With chat-state's own connections, ``get_client()`` still gives the library's client
    (made on first use, closed by ``disconnect()``), as the README's WAIT recipe needs."""
    with State.from_url(server.url, key_prefix="p") as state:
        state.set("k", {"a": 1})
        client = state.get_client()
        assert isinstance(client, redis.Redis)
        assert state.get_client() is client
        assert client.get("p:cache:k") == '{"a":1}'
        assert len(client_ids(server)) == 2
    assert client_ids(server) == []


@pytest.mark.anyio
async def test_async_get_client_gives_an_asyncio_redis_py_client(server: RedisServer) -> None:
    async with AsyncState.from_url(server.url, key_prefix="p") as state:
        await state.set("k", {"a": 1})
        client = state.get_client()
        assert isinstance(client, redis.asyncio.Redis)
        assert await client.get("p:cache:k") == '{"a":1}'
    assert client_ids(server) == []


def test_state_replaces_an_idle_connection_the_server_closed(server: RedisServer) -> None:
    with State.from_url(server.url) as state:
        state.set("k", 1)
        (mine,) = client_ids(server)
        with redis.Redis.from_url(server.url) as admin:
            admin.client_kill_filter(_id=mine)
        assert state.get("k") == 1  # no error: the closed connection is noticed before use
        assert client_ids(server) != [mine]


def test_state_a_dropped_connection_fails_the_command_and_recovers(server: RedisServer) -> None:
    with State.from_url(server.url) as state:
        state.set("k", 1)
        with paused(server):
            killer = threading.Timer(0.2, server.kill)  # with the command in flight
            killer.start()
            with pytest.raises(BackendError, match="connection was closed"):
                state.get("k")
            killer.join()
        with pytest.raises(BackendError, match="cannot connect"):
            state.get("k")
        server.restart()
        state.set("k", 2)
        assert state.get("k") == 2


def test_state_a_reply_that_never_comes_times_out(server: RedisServer) -> None:
    with State.from_url(server.url + "?socket_timeout=0.3") as state:
        state.set("k", 1)
        with paused(server), pytest.raises(BackendError, match=r"no reply within 0\.3 s"):
            state.get("k")
        assert state.get("k") == 1


def test_state_in_a_forked_child_opens_its_own_connections(server: RedisServer) -> None:
    with State.from_url(server.url) as state:
        state.set("k", "parent")
        (parent,) = client_ids(server)
        read, write = os.pipe()
        with warnings.catch_warnings():  # Python 3.12 warns of fork() beside threads
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: report what it read, on a connection of its own
            try:
                state.set("k", "child")
                os.write(write, str(client_ids(server)).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            seen_by_child = pipe.read()
        os.waitpid(pid, 0)
        child_saw = json.loads(seen_by_child)
        assert len(child_saw) == 2  # the parent's connection and its own
        assert parent in child_saw
        assert state.get("k") == "child"  # and the parent's connection still in step
        assert parent in client_ids(server)
