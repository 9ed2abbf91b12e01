"""Connection events on the adapter's logger: one WARNING per outage, one INFO line on
recovery, however many commands fail meanwhile, and the reconnect counted
(chat-state's own connections)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping

import anyio
import pytest

from chat_state import AsyncState, BackendError, State
from chat_state.backend.events import ConnectionEvents, add_listener, remove_listener
from chat_state.testing import RedisServer

from .otel import Recorded

pytestmark = pytest.mark.anyio

#: How long the server stays down, and how long the load runs at most (s).
DOWN_S = 1.0
LOAD_S = 8.0


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as private:
        yield private


def fast(url: str) -> str:
    return f"{url}?socket_timeout=1&socket_connect_timeout=0.5"


def lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == logger]


def check_one_outage(found: list[tuple[int, str]], address: str, recorded: Recorded) -> None:
    """One WARNING, one INFO line on recovery, and the reconnect counted."""
    warnings = [m for level, m in found if level == logging.WARNING]
    recoveries = [m for level, m in found if level == logging.INFO and "reconnected" in m]
    assert len(warnings) == 1, found
    assert address in warnings[0]
    assert len(recoveries) == 1, found
    assert f"reconnected to {address} after" in recoveries[0]
    # The first connection opened again ends the outage: a reconnect (another thread may
    # also have reached the dying server just before, "at once": a second one).
    host, _, port = address.partition(":")
    server = {"server.address": host, "server.port": int(port)}
    assert recorded.total("chat_state.connection.reconnects", server) >= 1


def test_state_logs_an_outage_under_load_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture, recorded: Recorded
) -> None:
    logger = logging.getLogger("test.outage.sync")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    failures: list[BackendError] = []
    done = threading.Event()
    with State.from_url(fast(server.url), logger=logger) as state:

        def load() -> None:
            deadline = time.monotonic() + LOAD_S
            while not done.is_set() and time.monotonic() < deadline:
                try:
                    state.set("k", "v")
                except BackendError as exc:
                    failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for worker in workers:
            worker.start()
        time.sleep(0.2)
        server.kill()
        time.sleep(DOWN_S)
        server.restart()
        state.ping()  # answers again
        time.sleep(0.2)
        done.set()
        for worker in workers:
            worker.join()
    assert len(failures) > 1  # many commands failed; one warning told the operator
    check_one_outage(lines(caplog, logger.name), f"127.0.0.1:{server.port}", recorded)


async def test_async_state_logs_an_outage_under_load_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture, anyio_backend: str, recorded: Recorded
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("chat-state's own asyncio connections run on asyncio")
    logger = logging.getLogger("test.outage.async")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    failures: list[BackendError] = []
    async with AsyncState.from_url(fast(server.url), logger=logger) as state:
        done = anyio.Event()

        async def load() -> None:
            with anyio.move_on_after(LOAD_S):
                while not done.is_set():
                    try:
                        await state.set("k", "v")
                    except BackendError as exc:
                        failures.append(exc)
                        await anyio.sleep(0.01)

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(load)
            await anyio.sleep(0.2)
            server.kill()
            await anyio.sleep(DOWN_S)
            await anyio.to_thread.run_sync(server.restart)
            await state.ping()
            await anyio.sleep(0.2)
            done.set()
    assert len(failures) > 1
    check_one_outage(lines(caplog, logger.name), f"127.0.0.1:{server.port}", recorded)


def test_a_server_never_reached_is_no_outage(caplog: pytest.LogCaptureFixture) -> None:
    events = ConnectionEvents(logging.getLogger("test.never"))
    caplog.set_level(logging.DEBUG, logger="test.never")
    events.unreachable("127.0.0.1:1", "refused")
    assert lines(caplog, "test.never") == []
    events.connected("127.0.0.1:1")
    events.unreachable("127.0.0.1:1", "refused")
    events.unreachable("127.0.0.1:1", "refused")
    events.connected("127.0.0.1:1")
    found = lines(caplog, "test.never")
    assert [level for level, _ in found] == [logging.WARNING, logging.INFO]


def test_failovers_and_slot_table_reads_are_told(caplog: pytest.LogCaptureFixture) -> None:
    events = ConnectionEvents(logging.getLogger("test.moves"))
    caplog.set_level(logging.DEBUG, logger="test.moves")
    told: list[tuple[str, dict[str, str | int]]] = []

    def listen(name: str, attributes: Mapping[str, str | int]) -> None:
        told.append((name, dict(attributes)))

    add_listener(listen)
    try:
        events.slots_read(["a:1", "b:1"])
        events.slots_read(["a:1", "b:1"])
        events.slots_read(["a:1", "c:1"])  # c promoted: a failover
        events.slots_read(["a:1"])  # a table read half-way: nobody promoted
        events.new_primary("mymaster", "a:1", "b:1")
        events.connected("10.0.0.1:6380")
        events.dropped("10.0.0.1:6380", "reset")
        events.connected("10.0.0.1:6380")
    finally:
        remove_listener(listen)
    found = lines(caplog, "test.moves")
    assert [level for level, _ in found] == [
        logging.DEBUG,
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.DEBUG,
        logging.DEBUG,
    ]
    assert "new: c:1" in found[2][1]
    assert "new:" not in found[3][1]
    assert "'mymaster'" in found[4][1]
    assert "b:1" in found[4][1]
    assert told == [
        ("failover", {"topology": "cluster"}),
        ("failover", {"topology": "sentinel"}),
        ("reconnect", {"server.address": "10.0.0.1", "server.port": 6380}),
    ]
