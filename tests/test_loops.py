"""AsyncState, event loops and processes: one rule on every backend.

An AsyncState belongs to the event loop and the process that connected it. Anywhere
else every operation raises WrongLoopError before anything is sent; ``connect()`` in
a new loop connects there once the old loop no longer runs (or in a forked child);
``disconnect()`` works from anywhere; a loop that shuts down closes the connections
it owns. Tested through asyncio.run() and uvloop.run(), from other threads, in
forked children, and on trio where AsyncState runs on trio.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.cluster
import trio
import uvloop

from chat_state import AsyncState, NotConnectedError, WrongLoopError
from chat_state.testing import RedisServer

from .conftest import Target

#: Backends whose AsyncState runs on asyncio: memory, chat-state's own connections
#: (standalone, Cluster, Sentinel), redis-py's pool, valkey-py, coredis.
ASYNCIO_TARGETS = [
    "memory",
    "redis-server/standalone/redis-py",
    "redis-server/cluster/redis-py",
    "redis-server/sentinel/redis-py",
    "redis-server/standalone/redis-py-pooled",
    "redis-server/standalone/coredis",
    "valkey-server/standalone/valkey-py",
]
TRIO_TARGETS = ["memory", "redis-server/standalone/coredis"]

Runner = Callable[[Coroutine[Any, Any, Any]], Any]
RUNNERS: dict[str, Runner] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=list(RUNNERS))
def run(request: pytest.FixtureRequest) -> Runner:
    """Runs a coroutine in a new event loop of its own: asyncio's, or uvloop's."""
    return RUNNERS[request.param]


def make(target: Target) -> AsyncState:
    return AsyncState.from_url(target.url, key_prefix=target.prefix, driver=target.driver)


def connections(target: Target) -> int:
    """How many clients the target's data node(s) serve (0 for memory)."""
    if target.name == "memory":
        return 0
    client: Any = target.raw.client
    if target.topology == "cluster":  # one list per primary
        replies = client.client_list(target_nodes=client.PRIMARIES)
        return sum(len(node_clients) for node_clients in replies.values())
    return len(client.client_list())


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``check()`` holds within ``seconds`` (polled every 20 ms; bounded)."""
    for _ in range(int(seconds / 0.02)):
        if check():
            return True
        threading.Event().wait(0.02)
    return check()


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_used_in_another_loop_it_raises_before_sending_and_connect_moves_it(
    target: Target, run: Runner
) -> None:
    state = make(target)
    before = connections(target)

    async def first() -> None:
        await state.connect()
        await state.set("k", "first")
        assert connections(target) > before or target.name == "memory"

    run(first())
    # The loop shut down: it closed what it owned (nothing left on the server, once the
    # server has read the close).
    assert eventually(lambda: connections(target) == before)
    assert state.is_connected is False

    async def second() -> None:
        with pytest.raises(
            WrongLoopError, match=r"event loop that has since finished.*connect\(\)"
        ):
            await state.set("k", "second")
        with pytest.raises(WrongLoopError):
            await state.get("k")
        with pytest.raises(WrongLoopError):
            state.iter_keys()
        with pytest.raises(WrongLoopError):
            state.get_client()
        await state.connect()  # here, now
        assert await state.get("k") == "first"  # the refused set never ran
        await state.set("k", "third")
        await state.disconnect()

    run(second())
    assert target.raw.get(target.key("cache", "k")) == '"third"'


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_disconnect_from_another_loop_is_quiet(target: Target, run: Runner) -> None:
    state = make(target)
    run(state.connect())
    run(state.disconnect())  # its loop has finished: nothing to close, no error

    async def after() -> None:
        with pytest.raises(NotConnectedError) as caught:
            await state.get("k")
        assert not isinstance(caught.value, WrongLoopError)  # disconnected: the plain error

    run(after())


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_a_loop_closed_without_shutting_down_is_let_go(target: Target) -> None:
    state = make(target)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(state.connect())
    loop.run_until_complete(state.set("k", 1))
    loop.close()  # without shutdown_asyncgens(): nothing closed the connections

    async def elsewhere() -> None:
        with pytest.raises(WrongLoopError, match="no longer running"):
            await state.get("k")
        await state.connect()
        assert await state.get("k") == 1
        await state.disconnect()

    with warnings.catch_warnings():
        # What the closed loop still holds (its transports) is asyncio's to report when
        # it is collected, as for any library whose loop was closed under it.
        warnings.simplefilter("ignore", ResourceWarning)
        asyncio.run(elsewhere())
        gc.collect()


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_connections_let_go_are_still_closed_by_their_own_loop(target: Target) -> None:
    """A loop that merely stopped keeps what it owns, and closes it when it shuts down."""
    state = make(target)
    before = connections(target)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(state.connect())
        loop.run_until_complete(state.set("k", 1))

        async def elsewhere() -> None:
            with pytest.raises(WrongLoopError, match="no longer running"):
                await state.get("k")
            await state.connect()  # lets go of the stopped loop's connections
            assert await state.get("k") == 1
            await state.disconnect()

        asyncio.run(elsewhere())
        if target.name != "memory":
            assert connections(target) > before  # the stopped loop's, still open
        loop.run_until_complete(loop.shutdown_asyncgens())
        assert eventually(lambda: connections(target) == before)
    finally:
        loop.close()  # with nothing left open: no ResourceWarning


def test_a_private_memory_store_lives_from_connect_to_disconnect() -> None:
    """memory:// (unnamed): its data outlives the event loop that connected it."""
    state = AsyncState.from_url("memory://")

    async def first() -> None:
        await state.connect()
        await state.set("k", "kept")

    async def second() -> None:
        await state.connect()  # in this loop, on the same store
        assert await state.get("k") == "kept"
        await state.disconnect()

    async def third() -> None:
        await state.connect()  # disconnect() ended that store: a new one
        assert await state.get("k") is None
        await state.disconnect()

    asyncio.run(first())
    asyncio.run(second())
    asyncio.run(third())


@pytest.fixture
def loop_in_a_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop running in a thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_two_threads_with_their_own_loops(
    target: Target, loop_in_a_thread: asyncio.AbstractEventLoop
) -> None:
    state = make(target)

    def there(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop_in_a_thread).result(30)

    there(state.connect())
    there(state.set("k", "there"))
    before = connections(target)

    async def here() -> None:
        with pytest.raises(WrongLoopError, match="still running"):
            await state.set("k", "here")
        with pytest.raises(WrongLoopError, match="still running"):
            await state.connect()  # it does not take the other thread's connections
        await state.disconnect()  # closes them in the loop they belong to

    asyncio.run(here())
    assert target.raw.get(target.key("cache", "k")) == '"there"'
    if target.name != "memory":
        assert eventually(lambda: connections(target) < before)
    with pytest.raises(NotConnectedError):
        there(state.get("k"))


@pytest.mark.targets(TRIO_TARGETS)
def test_on_trio_too(target: Target) -> None:
    state = make(target)

    async def first() -> None:
        await state.connect()
        await state.set("k", "first")

    async def again(disconnect: bool) -> None:
        with pytest.raises(WrongLoopError, match="finished"):
            await state.set("k", "second")
        await state.connect()
        assert await state.get("k") == "first"
        if disconnect:
            await state.disconnect()

    trio.run(first)
    trio.run(again, False)
    asyncio.run(again(True))  # and from trio's run to asyncio's loop
    assert target.raw.get(target.key("cache", "k")) == '"first"'


# -- fork -------------------------------------------------------------------------------


def forked(child: Callable[[], dict[str, Any]]) -> tuple[int, int]:
    """Run ``child()`` in a forked child; → (its pid, the pipe it reports on)."""
    read, write = os.pipe()
    with warnings.catch_warnings():  # Python 3.12 warns of fork() beside threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            report = child()
        except BaseException as exc:
            report = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    return pid, read


def report_of(pid: int, read: int) -> dict[str, Any]:
    """What the child ``pid`` reported on the pipe ``read``, once it has exited."""
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    result: dict[str, Any] = json.loads(text)
    assert "error" not in result, result["error"]
    return result


TASKS, ROUNDS = 8, 25


async def in_step(state: AsyncState, tag: str) -> int:
    """Write and read back values from concurrent tasks; → how many came back wrong."""

    async def task(t: int) -> int:
        wrong = 0
        for n in range(t * ROUNDS, (t + 1) * ROUNDS):
            await state.set(f"{tag}:{n}", f"{tag}-{n}")
            wrong += await state.get(f"{tag}:{n}") != f"{tag}-{n}"
        return wrong

    return sum(await asyncio.gather(*(task(t) for t in range(TASKS))))


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_a_forked_child_on_the_inherited_loop_never_uses_the_parents_connections(
    target: Target, run: Runner
) -> None:
    state = make(target)

    async def parent() -> dict[str, Any]:
        await state.connect()
        await state.set("k", "parent")

        def child() -> dict[str, Any]:
            # Still inside the parent's coroutine, on the loop inherited from it: nothing
            # may be awaited here (the loop's selector is the parent's), so each call is
            # driven by hand to its first step.
            seen: dict[str, Any] = {}
            calls = (
                ("set", state.set("k", "child")),
                ("connect", state.connect()),
                ("disconnect", state.disconnect()),  # forgets the parent's, touching nothing
            )
            for name, call in calls:
                try:
                    call.send(None)
                except WrongLoopError as exc:
                    seen[name] = str(exc)
                except StopIteration:
                    seen[name] = "ran"
                finally:
                    call.close()
            return seen

        pid, read = forked(child)
        wrong = await in_step(state, "parent")  # meanwhile, on the parent's connection
        seen = report_of(pid, read)
        assert wrong == 0
        assert await state.get("k") == "parent"  # the child's set was never sent
        await state.disconnect()
        return seen

    seen = run(parent())
    assert "was connected in the parent process" in seen["set"], seen
    # asyncio itself no longer sees the inherited loop as running in the child.
    assert "needs a running asyncio or trio event loop" in seen["connect"], seen
    assert seen["disconnect"] == "ran", seen
    assert target.raw.get(target.key("cache", "k")) == '"parent"'


@pytest.mark.targets(ASYNCIO_TARGETS)
def test_a_forked_child_connects_on_a_loop_of_its_own(target: Target, run: Runner) -> None:
    state = make(target)
    loop = asyncio.new_event_loop() if run is asyncio.run else uvloop.new_event_loop()
    try:
        loop.run_until_complete(state.connect())
        loop.run_until_complete(state.set("k", "parent"))

        def child() -> dict[str, Any]:
            async def main() -> dict[str, Any]:
                try:
                    await state.set("k", "child")
                except WrongLoopError as exc:
                    refused = str(exc)
                await state.connect()  # connections of its own
                wrong = await in_step(state, "child")
                await state.disconnect()
                return {"refused": refused, "wrong": wrong}

            result: dict[str, Any] = run(main())
            return result

        pid, read = forked(child)
        wrong = loop.run_until_complete(in_step(state, "parent"))
        seen = report_of(pid, read)
        assert "parent process" in seen["refused"]
        assert seen["wrong"] == 0
        assert wrong == 0
        assert loop.run_until_complete(state.get("k")) == "parent"  # never sent by the child
        if target.name != "memory":  # (the child's memory is its own)
            assert loop.run_until_complete(state.get("child:7")) == "child-7"
        loop.run_until_complete(state.disconnect())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_a_fork_while_connecting_leaves_the_child_free_to_connect() -> None:
    with RedisServer() as server:
        assert server.pid is not None
        server_pid = server.pid
        state = AsyncState.from_url(server.url)

        async def parent() -> dict[str, Any]:
            os.kill(server_pid, signal.SIGSTOP)  # the attempt waits for the server's reply
            try:
                attempt = asyncio.ensure_future(state.connect())
                await asyncio.sleep(0.2)

                def child() -> dict[str, Any]:
                    async def main() -> dict[str, Any]:
                        await state.connect()  # its own attempt, not the parent's
                        await state.set("k", "child")
                        await state.disconnect()
                        return {"connected": True}

                    result: dict[str, Any] = asyncio.run(main())
                    return result

                pid, read = forked(child)
            finally:
                os.kill(server_pid, signal.SIGCONT)
            seen = report_of(pid, read)
            await attempt  # the parent's attempt ends as it would have
            assert await state.get("k") == "child"
            await state.disconnect()
            return seen

        assert asyncio.run(parent()) == {"connected": True}


# -- a connection the server closed while the loop did not run ---------------------------


@pytest.mark.targets([t for t in ASYNCIO_TARGETS if t != "memory"])
def test_a_connection_closed_while_the_loop_slept_is_replaced_before_use(
    target: Target, run: Runner
) -> None:
    state = make(target)
    loop = asyncio.new_event_loop() if run is asyncio.run else uvloop.new_event_loop()
    try:
        loop.run_until_complete(state.connect())
        loop.run_until_complete(state.set("k", "before"))
        killed = kill_clients(target)
        assert killed > 0
        # The loop has not run since: it has not seen the close. The next command must
        # not be sent down the dead connection and fail; it goes down a fresh one.
        threading.Event().wait(0.1)
        assert loop.run_until_complete(state.get("k")) == "before"
        loop.run_until_complete(state.set("k", "after"))
        loop.run_until_complete(state.disconnect())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert target.raw.get(target.key("cache", "k")) == '"after"'


def kill_clients(target: Target) -> int:
    """Close every normal client connection of the target's data nodes but the probe's."""
    client: Any = target.raw.client
    if isinstance(client, redis.cluster.RedisCluster):
        replies: Any = client.client_kill_filter(_type="normal", skipme=True, target_nodes="all")
        return sum(int(n) for n in replies.values())
    return int(client.client_kill_filter(_type="normal", skipme=True))
