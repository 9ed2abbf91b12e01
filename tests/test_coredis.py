"""coredis specifics: trio, the portal behind State, fork, exit, and clients passed in."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from contextlib import AsyncExitStack
from typing import Any

import anyio
import coredis
import pytest
import redis.asyncio
import valkey.asyncio
from coredis.connection import TCPLocation
from coredis.typing import Node

from chat_state import AsyncState, BackendError, ConfigurationError, State
from chat_state.backend import parse_redis_url

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("driver", ["redis", "valkey"])
async def test_redis_py_under_trio_fails_at_connect_with_a_clear_message(
    redis_url: str, anyio_backend: str, driver: str
) -> None:
    state = AsyncState.from_url(redis_url, driver=driver)
    if anyio_backend == "asyncio":
        await state.connect()
        await state.disconnect()
        return
    with pytest.raises(ConfigurationError, match=rf'{driver}.*only under asyncio.*"coredis"'):
        await state.connect()
    assert not state.is_connected
    mine = (redis.asyncio.Redis if driver == "redis" else valkey.asyncio.Valkey).from_url(redis_url)
    with pytest.raises(ConfigurationError, match="only under asyncio"):
        await AsyncState(client=mine).connect()


async def test_connect_and_disconnect_in_different_tasks_and_orders(redis_url: str) -> None:
    first = AsyncState.from_url(redis_url, driver="coredis", key_prefix="tasks")
    second = AsyncState.from_url(redis_url, driver="coredis", key_prefix="tasks")
    # (parametrised over asyncio and trio by the module's anyio_backend fixture)
    async with anyio.create_task_group() as group:
        group.start_soon(first.connect)
        group.start_soon(second.connect)
    await first.set("k", 1)
    assert await second.get("k") == 1
    await first.disconnect()  # first in, first out: fine, each client has its own task
    assert await second.get("k") == 1
    await second.delete("k")
    async with anyio.create_task_group() as group:
        group.start_soon(second.disconnect)
    assert not second.is_connected


def _coredis_client(servers: Any, kind: str) -> tuple[Any, list[Any]]:
    """A coredis client of ``kind`` on the session's redis-server, and what to enter."""
    hosts = parse_redis_url(servers.url("redis-server", kind)).hosts
    if kind == "cluster":
        nodes = [Node(host=host, port=port) for host, port in hosts]
        cluster = coredis.RedisCluster(startup_nodes=nodes)
        return cluster, [cluster]
    if kind == "sentinel":
        sentinel = coredis.Sentinel([TCPLocation(host, port) for host, port in hosts])
        primary = sentinel.primary_for("mymaster")
        return primary, [sentinel, primary]
    host, port = hosts[0]
    client = coredis.Redis(host, port)
    return client, [client]


@pytest.mark.parametrize("kind", ["standalone", "cluster", "sentinel"])
async def test_a_coredis_client_passed_in(servers: Any, anyio_backend: str, kind: str) -> None:
    # bytes replies (no decode_responses): normalised by the backend
    client, contexts = _coredis_client(servers, kind)
    async with AsyncExitStack() as entered:
        for context in contexts:
            await entered.enter_async_context(context)
        prefix = f"given-{kind}-{anyio_backend}"
        async with AsyncState(client=client, key_prefix=prefix) as state:
            assert state.get_client() is client
            await state.set("k", {"é": [1, 2]})
            assert await state.get("k") == {"é": [1, 2]}
            lock = await state.acquire_lock("t", 1_000)
            assert lock is not None
            assert await state.extend_lock(lock, 1_000) is True
            await state.release_lock(lock)
            await state.delete("k")
        assert await client.ping() in ("PONG", b"PONG")  # still open: never closed by us
    with pytest.raises(ConfigurationError, match="coredis clients are async"):
        State(client=client)


def test_state_over_coredis_is_safe_from_many_threads(redis_url: str) -> None:
    with State.from_url(redis_url, driver="coredis", key_prefix="threads") as state:
        barrier = threading.Barrier(8)
        wins: list[bool] = []

        def deliver() -> None:
            barrier.wait()
            for n in range(50):
                wins.append(state.set_if_not_exists(f"d{n}", True, 60_000))

        workers = [threading.Thread(target=deliver) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert wins.count(True) == 50
        assert len(wins) == 400
        for n in range(50):
            state.delete(f"d{n}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_state_over_coredis_after_fork(redis_url: str) -> None:
    """gunicorn --preload: State used in the parent, then in a forked child, then both."""
    state = State.from_url(redis_url, driver="coredis", key_prefix="fork")
    state.connect()
    state.set("parent-before", 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        status = 1
        try:
            state.set("child", os.getpid())
            ok = state.get("parent-before") == 1 and state.get("child") == os.getpid()
            os.write(write, b"ok" if ok else b"wrong values")
            status = 0
        except BaseException as exc:  # reported to the parent, which fails the test
            os.write(write, repr(exc).encode()[:500])
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert report == "ok"
    assert os.waitstatus_to_exitcode(status) == 0
    state.set("parent-after", 2)
    assert state.get("child") is not None
    assert state.get("parent-after") == 2
    for key in ("parent-before", "child", "parent-after"):
        state.delete(key)
    state.disconnect()


def test_the_portal_closes_at_exit_without_resource_warnings(redis_url: str) -> None:
    code = (
        "import sys\n"
        "from chat_state import State\n"
        f"state = State.from_url({redis_url!r}, driver='coredis', key_prefix='exit')\n"
        "state.connect()\n"
        "state.set('k', 1)\n"
        "assert state.get('k') == 1\n"
        "print('used, not disconnected')\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "used, not disconnected"
    assert "Warning" not in done.stderr, done.stderr


@pytest.mark.anyio
async def test_a_command_it_cannot_send_exactly_is_refused(redis_url: str) -> None:
    """coredis calls a typed method per command: a SET option or a command it has no
    way to send is refused as a server would refuse it, before anything is sent."""
    async with AsyncState.from_url(redis_url, driver="coredis") as state:
        backend = state._backend
        assert backend is not None
        with pytest.raises(BackendError, match="ERR syntax error"):
            await backend.call("k", ("SET", "k", "v", "XX"))
        with pytest.raises(BackendError, match="ERR unknown command 'HSET'"):
            await backend.call("k", ("HSET", "k", "f", "v"))
        assert await backend.call("k", ("GET", "k")) is None  # nothing was written
