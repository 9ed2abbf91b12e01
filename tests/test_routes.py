"""The Sentinel and Cluster routes without a server, the slot hash, and single-flight
reloads of the slot table on a real Cluster.

The scripted driver
-------------------
A route (:mod:`chat_state.connections.routes`) is a generator of steps: ``Send`` (run
these arguments on that server), ``Pause`` (wait) and ``Refresh`` (read the slot table
again). :class:`Driver` runs one to its end as the transports' ``_follow`` do
(``Routed`` in ``multiplexed.py``, ``BlockingRouted`` in ``blocking.py``), with a
script in place of the servers:

* each ``Send`` takes the script's next entry, ``(address, args prefix, outcome)``: the
  address and the first arguments must match (else the test fails there), and the
  outcome is sent in as the reply, or thrown in when it is a failure: a ``ServerError``
  (through ``raise_reply``, as the nodes raise error replies), ``ConnectionLost`` or
  ``ConnectFailed``;
* ``Refresh(seen)`` runs ``routes.load()`` through the same driver and script, unless
  the table's version is no longer ``seen`` (both transports skip the read then), and
  throws the load's failure into the route;
* ``Pause`` is recorded, never slept.

Every step is recorded in ``driver.steps``: the ``Send``, ``Pause`` and ``Refresh``
values themselves, a load's ``Send`` steps right after the ``Refresh`` that ran it, so
that a test asserts the exact sequence; ``driver.done()`` checks that the script was
used up. The driver is bounded (:data:`MAX_STEPS`). Replies reach the route as the
transports receive them: every scripted reply is written in RESP and parsed by the
reader they use (:func:`~chat_state.connections.protocol.new_reader`), so text is
``str`` (bytes that are not UTF-8 replaced), integers ``int``, nil ``None``, and an
error reply (:func:`error`, built by that reader too) a ``ServerError`` value.

Tests that interleave several callers on one table step the generators by hand.

The last tests run on the session's real Cluster: many callers (asyncio tasks on
AsyncState, threads on State) find the slot table stale at once, after a slot moved,
and must share one ``CLUSTER SLOTS``, counted in ``INFO commandstats``.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import threading
import uuid
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot as redis_key_slot

from chat_state import AsyncState, State
from chat_state.backend import NoScriptError, parse_redis_url
from chat_state.backend.interface import Args
from chat_state.backend.policy import backoff
from chat_state.connections.address import Address
from chat_state.connections.failures import (
    CONNECT_ATTEMPTS,
    ConnectFailed,
    ConnectionLost,
    ServerError,
    connect_delays,
    raise_reply,
)
from chat_state.connections.keyslot import SLOTS, key_slot
from chat_state.connections.protocol import new_reader
from chat_state.connections.routes import (
    CLUSTER_ATTEMPTS,
    ClusterRoutes,
    Pause,
    Refresh,
    Route,
    Routes,
    Send,
    SentinelRoutes,
)
from chat_state.testing import ClusterNodeView

from .test_loops import forked, report_of

T = TypeVar("T")

#: Steps one route may take in the driver before the test fails (a bound, not a goal).
MAX_STEPS = 500

# -- replies as the transports receive them ---------------------------------------------


class Error(str):
    """The text of an error reply (``-TEXT`` in RESP)."""

    __slots__ = ()


def encode(value: Any) -> bytes:
    """``value`` in RESP2, as a server sends it (``None`` is the nil array)."""
    if isinstance(value, Error):
        return b"-" + value.encode() + b"\r\n"
    if value is None:
        return b"*-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n" % len(value) + value + b"\r\n"
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(encode(item) for item in value)
    raise TypeError(f"no RESP form for {value!r}")


def reply(value: Any) -> Any:
    """``value`` as the transports receive it: RESP parsed by their reader."""
    reader = new_reader()
    reader.feed(encode(value))
    parsed = reader.gets()
    assert parsed is not False
    assert reader.gets() is False
    return parsed


def error(text: str) -> ServerError:
    """An error reply, as the transports' reader builds it."""
    parsed = reply(Error(text))
    assert type(parsed) is ServerError
    return parsed


def test_replies_have_the_transports_shapes() -> None:
    assert reply(["127.0.0.1", "6380"]) == ["127.0.0.1", "6380"]
    assert reply([[0, 1, ["h", 7000, "id", []]]]) == [[0, 1, ["h", 7000, "id", []]]]
    assert reply(None) is None
    assert reply("h\xe9") == "h\xe9"
    assert reply(b"\xff") == "\ufffd"  # not UTF-8: replaced, as in TypeScript
    moved = error("MOVED 1 127.0.0.1:7001")
    assert type(moved) is ServerError
    assert str(moved) == "MOVED 1 127.0.0.1:7001"


# -- the driver ---------------------------------------------------------------------------

Step = Send | Pause | Refresh
Expected = tuple[Address, Args, Any]  # (address, args prefix, reply or failure)


class Driver:
    """Runs routes to their end against a script, recording every step."""

    def __init__(self, routes: Routes, script: Iterable[Expected] = ()) -> None:
        self.routes = routes
        self.script: deque[Expected] = deque(script)
        self.steps: list[Step] = []

    def expect(self, *entries: Expected) -> None:
        self.script.extend(entries)

    def run(self, route: Route[T]) -> T:
        """Run ``route`` to its end: → its value (or its exception, raised)."""
        try:
            step = next(route)
            for _ in range(MAX_STEPS):
                self.steps.append(step)
                try:
                    answer = self._answer(step)
                except (ServerError, ConnectionLost) as exc:  # as the transports do
                    step = route.throw(exc)
                else:
                    step = route.send(answer)
        except StopIteration as done:
            result: T = done.value
            return result
        raise AssertionError(f"the route did not end within {MAX_STEPS} steps")

    def _answer(self, step: Step) -> Any:
        if isinstance(step, Pause):
            return None
        if isinstance(step, Refresh):
            if self.routes.version == step.seen:  # else read since: both transports skip
                assert isinstance(self.routes, ClusterRoutes)
                self.run(self.routes.load())
            return None
        assert self.script, f"unscripted {step}"
        address, prefix, outcome = self.script.popleft()
        assert (step.address, step.args[: len(prefix)]) == (address, prefix), (
            f"{step}, but the script expected {address} {prefix}"
        )
        if isinstance(outcome, ServerError):
            raise_reply(outcome)  # as a node raises an error reply (NOSCRIPT too)
        if isinstance(outcome, BaseException):
            raise outcome
        return reply(outcome)  # through RESP: only what a server can send, as parsed

    def done(self) -> None:
        assert not self.script, f"not sent: {list(self.script)}"

    def sends(self, args: Args) -> list[Send]:
        return [step for step in self.steps if isinstance(step, Send) and step.args == args]


def test_the_driver_fails_on_an_unexpected_send() -> None:
    routes = SentinelRoutes([Address("s", 1)], "svc")
    with pytest.raises(AssertionError, match="expected"):
        Driver(routes, [(Address("other", 2), ("SENTINEL",), None)]).run(routes.ready())
    with pytest.raises(AssertionError, match="unscripted"):
        Driver(routes).run(routes.ready())


# -- Sentinel -----------------------------------------------------------------------------

S1, S2, S3 = (Address("127.0.0.1", port) for port in (26379, 26380, 26381))
SENTINELS = [S1, S2, S3]
P = Address("127.0.0.1", 6380)
P2 = Address("127.0.0.1", 6381)
WHERE = ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
SET = ("SET", "k", "v")


def ask(sentinel: Address) -> Send:
    return Send(sentinel, WHERE, sentinel=True)


def named(primary: Address) -> Any:
    """A Sentinel's answer naming ``primary``."""
    return reply([primary.host, str(primary.port)])


def sentinel_routes() -> SentinelRoutes:
    return SentinelRoutes(SENTINELS, "mymaster")


def test_sentinel_asks_the_first_sentinel_then_sends_to_the_primary() -> None:
    routes = sentinel_routes()
    assert routes.primaries() == []
    assert routes.version == 0
    driver = Driver(routes, [(S1, WHERE, named(P)), (P, SET, reply("OK"))])
    assert driver.run(routes.call("k", SET)) == "OK"
    assert driver.steps == [ask(S1), Send(P, SET)]
    assert routes.primary == P
    assert routes.primaries() == [P]
    assert routes.version == 1
    # Known now: the next command goes straight there, and ready() asks nobody.
    driver.expect((P, ("GET",), reply("v")))
    assert driver.run(routes.call("k", ("GET", "k"))) == "v"
    driver.run(routes.ready())
    assert driver.steps[2:] == [Send(P, ("GET", "k"))]
    assert routes.version == 1
    driver.done()


@pytest.mark.parametrize(
    "failure",
    [
        ConnectFailed("cannot connect to 127.0.0.1:26379: refused"),
        ConnectionLost("the connection was closed"),
        error("ERR unknown command 'SENTINEL'"),
        error("NOAUTH Authentication required."),
    ],
    ids=["down", "dropped", "not-a-sentinel", "refused"],
)
def test_sentinel_that_fails_is_skipped_for_the_next(failure: Exception) -> None:
    routes = sentinel_routes()
    driver = Driver(routes, [(S1, WHERE, failure), (S2, WHERE, named(P)), (P, SET, "OK")])
    assert driver.run(routes.call("k", SET)) == "OK"
    assert driver.steps == [ask(S1), ask(S2), Send(P, SET)]
    assert routes.primary == P
    driver.done()


def test_sentinel_that_knows_no_such_service_is_skipped() -> None:
    routes = sentinel_routes()
    script = [(S1, WHERE, reply(None)), (S2, WHERE, reply(["only-a-host"])), (S3, WHERE, named(P))]
    driver = Driver(routes, [*script, (P, SET, "OK")])
    assert driver.run(routes.call("k", SET)) == "OK"
    assert driver.steps == [ask(S1), ask(S2), ask(S3), Send(P, SET)]
    driver.done()


def test_no_sentinel_knows_the_service_in_any_of_the_bounded_rounds() -> None:
    routes = sentinel_routes()
    rounds = [
        (S1, WHERE, reply(None)),
        (S2, WHERE, reply([])),
        (S3, WHERE, ConnectFailed("cannot connect to 127.0.0.1:26381: refused")),
    ]
    driver = Driver(routes, rounds * CONNECT_ATTEMPTS)
    with pytest.raises(ConnectFailed) as caught:
        driver.run(routes.call("k", SET))
    expected: list[Step] = []
    for delay in connect_delays():
        expected += [Pause(delay)] if delay else []
        expected += [ask(S1), ask(S2), ask(S3)]
    assert driver.steps == expected
    assert len(expected) == CONNECT_ATTEMPTS * 4 - 1  # 4 rounds, 3 pauses between them
    message = str(caught.value)
    assert message.startswith("no Sentinel named a primary")
    assert f"{S1}: no primary named 'mymaster'" in message
    assert f"{S2}: no primary named 'mymaster'" in message
    assert f"{S3}: cannot connect to 127.0.0.1:26381: refused" in message
    assert routes.primary is None
    assert routes.version == 0
    assert driver.sends(SET) == []  # never sent anywhere
    driver.done()


@pytest.mark.parametrize(
    "failure",
    [
        ConnectFailed("cannot connect to 127.0.0.1:6380: refused"),
        # The connection's ROLE check (primary_only) found a replica: the transport
        # fails the connect, so the command was never sent.
        ConnectFailed("cannot connect to 127.0.0.1:6380: the server is not a primary (yet)"),
        # READONLY: the demoted primary refused the write before writing anything, so
        # the command goes to the primary the Sentinels name now.
        error("READONLY You can't write against a read only replica."),
    ],
    ids=["unreachable", "role-says-replica", "became-a-replica"],
)
def test_sentinel_primary_that_cannot_be_used_is_asked_for_again(failure: Exception) -> None:
    routes = sentinel_routes()
    script = [(S1, WHERE, named(P)), (P, SET, failure), (S1, WHERE, named(P2)), (P2, SET, "OK")]
    driver = Driver(routes, script)
    assert driver.run(routes.call("k", SET)) == "OK"
    assert driver.steps == [
        ask(S1),
        Send(P, SET),
        Pause(connect_delays()[1]),
        ask(S1),
        Send(P2, SET),
    ]
    assert routes.primaries() == [P2]
    assert routes.version == 2
    driver.done()


def test_sentinel_sends_to_the_primary_it_found_though_another_caller_forgot_it() -> None:
    """A State's threads share one SentinelRoutes. While one finds the primary,
    another, whose command failed on the old one, may forget it: the route sends to
    the one it found, and ``ready()`` answers it (the transports' ``scan`` and
    ``each_primary`` use that answer). The routes once read the attribute again after
    finding it, got ``None``, and failed an assertion (``call``) or asked no primary at
    all (``ping()``, ``health()``, ``stats()``, ``clear()``). Here the other caller
    forgets at the one moment a single thread can reach: when the new primary is told."""

    class ForgetsOnFailover:  # another thread's failure, at the worst moment
        def new_primary(self, service: str, old: str, new: str) -> None:
            routes.primary = None

        def slots_read(self, primaries: list[str]) -> None:
            raise AssertionError("no slot table here")

    routes = SentinelRoutes(SENTINELS, "mymaster", ForgetsOnFailover())
    script = [(S1, WHERE, named(P)), (P, SET, "OK"), (P, SET, ConnectFailed("refused"))]
    driver = Driver(routes, [*script, (S1, WHERE, named(P2)), (P2, SET, "OK")])
    assert driver.run(routes.call("k", SET)) == "OK"  # the first primary: no failover
    assert driver.run(routes.call("k", SET)) == "OK"  # P2 found, P forgotten meanwhile
    assert driver.sends(SET) == [Send(P, SET), Send(P, SET), Send(P2, SET)]
    assert driver.run(routes.ready()) == [P2] == routes.primaries()  # known: nobody asked
    routes.primary = None  # a failure elsewhere: ask again
    driver.expect((S1, WHERE, named(P)))
    assert driver.run(routes.ready()) == [P]  # found, though forgotten when told
    driver.done()


def test_a_failed_primary_is_forgotten_only_if_no_other_caller_found_another() -> None:
    routes = sentinel_routes()
    driver = Driver(routes, [(S1, WHERE, named(P))])
    assert driver.run(routes.ready()) == [P]
    late = routes.call("k", SET)  # sent to P, whose failure comes after another's find
    assert next(late) == Send(P, SET)
    routes.primary = P2  # another caller found the new primary meanwhile
    step = late.throw(ConnectFailed("cannot connect to 127.0.0.1:6380: refused"))
    assert step == Pause(connect_delays()[1])
    assert routes.primary == P2  # kept: the failure was P's
    driver.expect((P2, SET, "OK"))
    assert driver.run(late) == "OK"  # (the driver answers the Pause first)
    driver.done()


def test_sentinel_readonly_everywhere_is_raised_after_the_bounded_attempts() -> None:
    routes = sentinel_routes()
    refusals = [
        error(f"READONLY You can't write against a read only replica. {n}")
        for n in range(CONNECT_ATTEMPTS)
    ]
    script: list[Expected] = []
    for refusal in refusals:
        script += [(S1, WHERE, named(P)), (P, SET, refusal)]
    driver = Driver(routes, script)
    with pytest.raises(ServerError) as caught:
        driver.run(routes.call("k", SET))
    assert str(caught.value) == str(refusals[-1])
    assert len(driver.sends(SET)) == CONNECT_ATTEMPTS
    assert routes.primary is None  # forgotten: the next command asks again
    driver.done()


@pytest.mark.parametrize(
    "failure",
    [
        error("WRONGTYPE Operation against a key holding the wrong kind of value"),
        error("OOM command not allowed when used memory > 'maxmemory'."),
        error("BUSY Redis is busy running a script."),
    ],
    ids=["wrongtype", "oom", "busy"],
)
def test_sentinel_other_error_replies_are_raised_and_the_primary_kept(
    failure: ServerError,
) -> None:
    routes = sentinel_routes()
    driver = Driver(routes, [(S1, WHERE, named(P)), (P, SET, failure)])
    with pytest.raises(ServerError) as caught:
        driver.run(routes.call("k", SET))
    assert caught.value is failure
    assert routes.primary == P
    driver.expect((P, SET, "OK"))
    assert driver.run(routes.call("k", SET)) == "OK"
    assert driver.steps == [ask(S1), Send(P, SET), Send(P, SET)]
    driver.done()


def test_sentinel_connection_lost_in_flight_is_raised_and_never_resent() -> None:
    routes = sentinel_routes()
    lost = ConnectionLost("no reply within 2 s")
    driver = Driver(routes, [(S1, WHERE, named(P)), (P, SET, lost)])
    with pytest.raises(ConnectionLost) as caught:
        driver.run(routes.call("k", SET))
    assert caught.value is lost
    assert driver.steps == [ask(S1), Send(P, SET)]
    assert len(driver.sends(SET)) == 1
    # The primary is kept: its connection failed, not its role (the next one reopens).
    assert routes.primary == P
    driver.expect((P, ("GET",), "v"))
    assert driver.run(routes.call("k", ("GET", "k"))) == "v"
    assert driver.steps[2:] == [Send(P, ("GET", "k"))]
    driver.done()


def test_sentinel_attempts_are_bounded() -> None:
    routes = sentinel_routes()
    failures = [ConnectFailed(f"cannot connect to {P}: try {n}") for n in range(CONNECT_ATTEMPTS)]
    script: list[Expected] = []
    for failure in failures:
        script += [(S1, WHERE, named(P)), (P, SET, failure)]
    driver = Driver(routes, script)
    with pytest.raises(ConnectFailed) as caught:
        driver.run(routes.call("k", SET))
    assert str(caught.value) == str(failures[-1])
    expected: list[Step] = []
    for delay in connect_delays():
        expected += [Pause(delay)] if delay else []
        expected += [ask(S1), Send(P, SET)]
    assert driver.steps == expected
    assert len(driver.sends(SET)) == CONNECT_ATTEMPTS
    assert routes.primary is None
    driver.done()


# -- Cluster ------------------------------------------------------------------------------

HOST = "127.0.0.1"
A, B, C = (Address(HOST, port) for port in (7000, 7001, 7002))
RA, RB, RC = (Address(HOST, port) for port in (7003, 7004, 7005))  # their replicas
D = Address(HOST, 7006)  # a node that joins
X = Address(HOST, 7999)  # a seed that is down
RANGES = [(0, 5460), (5461, 10922), (10923, 16383)]
SLOTS_CMD = ("CLUSTER", "SLOTS")


def slots_reply(*shards: tuple[int, int, Address, Address | None]) -> Any:
    """``CLUSTER SLOTS`` as a Redis 7 node answers it: each range, its primary and its
    replica (if any), every node as ``[host, port, id, metadata]``."""
    entries = []
    for first, last, *nodes in shards:
        entries.append(
            [first, last, *([n.host, n.port, f"id-{n.port}", []] for n in nodes if n is not None)]
        )
    return reply(entries)


def table(*owners: Address) -> Any:
    """The three-shard table with these primaries (A, B, C by default), with replicas."""
    primaries = owners or (A, B, C)
    replicas = (RA, RB, RC)
    return slots_reply(
        *(
            (first, last, primary, replica)
            for (first, last), primary, replica in zip(RANGES, primaries, replicas, strict=True)
        )
    )


def first_key(template: str, first: int, last: int) -> str:
    """The first key of ``template.format(n)`` whose slot (redis-py's) is in first..last."""
    for n in range(100_000):
        key = template.format(n)
        if first <= redis_key_slot(key.encode()) <= last:
            return key
    raise AssertionError("no such key")


KEY_A, KEY_B, KEY_C = (first_key("user:{}", *RANGES[n]) for n in range(3))
TAG_B = first_key("room{}", *RANGES[1])  # a hash tag whose slot is B's
SLOT_B = redis_key_slot(TAG_B.encode())
GET_B = ("GET", f"{{{TAG_B}}}:1")  # two keys in SLOT_B
GET_B2 = ("GET", f"{{{TAG_B}}}:2")


def moved_table(slot: int, to: Address) -> Any:
    """The default table with ``slot`` moved (from B) to ``to``."""
    return slots_reply(
        (0, 5460, A, RA),
        (5461, slot - 1, B, RB),
        (slot, slot, to, None),
        (slot + 1, 10922, B, RB),
        (10923, 16383, C, RC),
    )


def moved(slot: int, to: Address) -> ServerError:
    return error(f"MOVED {slot} {to}")


def cluster_routes(seeds: Iterable[Address] = (A, B, C)) -> ClusterRoutes:
    return ClusterRoutes(list(seeds), key_slot)


def loaded() -> tuple[ClusterRoutes, Driver]:
    """Routes with the default table read (version 1), and a driver with no steps yet."""
    routes = cluster_routes()
    driver = Driver(routes, [(A, SLOTS_CMD, table())])
    driver.run(routes.ready())
    assert driver.steps == [Refresh(0), Send(A, SLOTS_CMD)]
    assert routes.version == 1
    driver.steps.clear()
    return routes, driver


@pytest.mark.parametrize(
    "failure",
    [
        ConnectFailed("cannot connect to 127.0.0.1:7999: refused"),
        ConnectionLost("the connection was closed"),
        error("ERR This instance has cluster support disabled"),
    ],
    ids=["down", "dropped", "not-a-cluster"],
)
def test_cluster_first_load_skips_a_seed_that_fails(failure: Exception) -> None:
    routes = cluster_routes([X, A, B, C])
    assert routes.primaries() == []
    get = ("GET", KEY_B)
    driver = Driver(routes, [(X, SLOTS_CMD, failure), (A, SLOTS_CMD, table()), (B, get, "v")])
    assert driver.run(routes.call(KEY_B, get)) == "v"
    assert driver.steps == [Refresh(0), Send(X, SLOTS_CMD), Send(A, SLOTS_CMD), Send(B, get)]
    assert routes.version == 1
    assert routes.primaries() == [A, B, C]  # replicas are not primaries
    driver.done()


def test_cluster_load_that_fails_everywhere_is_retried_then_raised() -> None:
    routes = cluster_routes([A, B])
    refused = [ConnectFailed(f"cannot connect: refused {n}") for n in range(2 * CLUSTER_ATTEMPTS)]
    script = [(node, SLOTS_CMD, refused[n]) for n, node in enumerate([A, B] * CLUSTER_ATTEMPTS)]
    driver = Driver(routes, script)
    with pytest.raises(ConnectFailed) as caught:
        driver.run(routes.call(KEY_A, ("GET", KEY_A)))
    expected: list[Step] = []
    for attempt in range(CLUSTER_ATTEMPTS):
        expected += [Refresh(0), Send(A, SLOTS_CMD), Send(B, SLOTS_CMD)]
        if attempt < CLUSTER_ATTEMPTS - 1:
            expected.append(Pause(backoff(attempt)))
    assert driver.steps == expected  # no pause after the last attempt
    assert str(caught.value) == (
        f"no Cluster node answered ({A}: {refused[-2]}; {B}: {refused[-1]})"
    )
    assert routes.version == 0
    assert driver.sends(("GET", KEY_A)) == []
    driver.done()


def test_cluster_load_retried_once_then_served() -> None:
    routes = cluster_routes([A])
    get = ("GET", KEY_C)
    driver = Driver(
        routes,
        [(A, SLOTS_CMD, ConnectFailed("refused")), (A, SLOTS_CMD, table()), (C, get, "v")],
    )
    assert driver.run(routes.call(KEY_C, get)) == "v"
    assert driver.steps == [
        Refresh(0),
        Send(A, SLOTS_CMD),
        Pause(backoff(0)),
        Refresh(0),
        Send(A, SLOTS_CMD),
        Send(C, get),
    ]
    driver.done()


@pytest.mark.parametrize("empty", ["", None], ids=["empty-host", "nil-host"])
def test_cluster_load_takes_an_empty_host_as_the_asked_nodes(empty: str | None) -> None:
    routes = cluster_routes([Address("10.1.2.3", 7000)])
    entry = [[0, SLOTS - 1, [empty, 7001, "id", []]]]
    driver = Driver(routes, [(Address("10.1.2.3", 7000), SLOTS_CMD, reply(entry))])
    driver.run(routes.ready())
    assert routes.primaries() == [Address("10.1.2.3", 7001)]


@pytest.mark.parametrize(("key", "owner"), [(KEY_A, A), (KEY_B, B), (KEY_C, C)])
def test_cluster_sends_each_command_to_its_slot_owner(key: str, owner: Address) -> None:
    routes, driver = loaded()
    assert RANGES[[A, B, C].index(owner)][0] <= redis_key_slot(key.encode())
    assert redis_key_slot(key.encode()) <= RANGES[[A, B, C].index(owner)][1]
    driver.expect((owner, ("GET", key), "v"))
    assert driver.run(routes.call(key, ("GET", key))) == "v"
    assert driver.steps == [Send(owner, ("GET", key))]
    driver.done()


def test_cluster_commands_never_walk_the_slot_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command is routed by its key's slot alone; the list of primaries (a walk of
    all 16,384 slots) is for ready(), scan and each_primary. Routing by it once made
    every State command on a Cluster some 30 times slower."""
    routes, driver = loaded()
    walks: list[int] = []
    primaries = routes.primaries

    def counted() -> list[Address]:
        walks.append(1)
        return primaries()

    monkeypatch.setattr(routes, "primaries", counted)
    driver.expect((A, ("GET", KEY_A), "v"), (B, ("GET", KEY_B), "w"))
    assert driver.run(routes.call(KEY_A, ("GET", KEY_A))) == "v"
    assert driver.run(routes.call(KEY_B, ("GET", KEY_B))) == "w"
    assert walks == []
    assert driver.run(routes.ready()) == [A, B, C]
    assert walks == [1]
    driver.done()


def test_cluster_hash_tags_route_together() -> None:
    routes, driver = loaded()
    tag_c = first_key("conv-{}", *RANGES[2])
    keys = [f"{{{tag_c}}}", *(f"chat-sdk:cache:{{{tag_c}}}:{n}" for n in range(20))]
    assert {redis_key_slot(key.encode()) for key in keys} == {redis_key_slot(tag_c.encode())}
    # The untagged names would spread over the shards; tagged, all go to C.
    assert len({redis_key_slot(key.replace("{", "").encode()) // 5461 for key in keys}) > 1
    for key in keys:
        driver.expect((C, ("GET", key), "v"))
        assert driver.run(routes.call(key, ("GET", key))) == "v"
    assert driver.steps == [Send(C, ("GET", key)) for key in keys]
    # An empty tag "{}" does not count: the whole key is hashed (the empty text's
    # slot, 0, would be A's).
    empty = first_key("{{}}{}", *RANGES[2])
    driver.expect((C, ("GET", empty), "v"))
    assert driver.run(routes.call(empty, ("GET", empty))) == "v"
    driver.done()


def test_cluster_keyless_commands_go_to_the_first_node_in_the_table() -> None:
    routes, driver = loaded()
    script_load = ("SCRIPT", "LOAD", "return 1")
    driver.expect((A, script_load, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"))
    assert driver.run(routes.call(None, script_load)).startswith("e0e1")
    assert driver.steps == [Send(A, script_load)]
    # With the first slots served by nobody: the first node that serves any.
    routes = cluster_routes()
    gap = slots_reply((100, 16383, C, None))
    driver = Driver(routes, [(A, SLOTS_CMD, gap), (C, ("PING",), "PONG")])
    assert driver.run(routes.call(None, ("PING",))) == "PONG"
    assert driver.steps == [Refresh(0), Send(A, SLOTS_CMD), Send(C, ("PING",))]
    driver.done()


def test_cluster_slot_that_nobody_serves_is_read_again() -> None:
    routes = cluster_routes()
    gap = slots_reply((0, 5460, A, None), (10923, 16383, C, None))  # B's range missing
    driver = Driver(routes, [(A, SLOTS_CMD, gap), (A, SLOTS_CMD, table()), (B, GET_B, "v")])
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Refresh(0),
        Send(A, SLOTS_CMD),
        Pause(backoff(0)),
        Refresh(1),
        Send(A, SLOTS_CMD),
        Send(B, GET_B),
    ]
    assert routes.version == 2
    driver.done()


@pytest.mark.parametrize("to", [C, D], ids=["known-node", "new-node"])
def test_cluster_moved_reads_the_table_again_and_resends(to: Address) -> None:
    routes, driver = loaded()
    driver.expect(
        (B, GET_B, moved(SLOT_B, to)), (A, SLOTS_CMD, moved_table(SLOT_B, to)), (to, GET_B, "v")
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [Send(B, GET_B), Refresh(1), Send(A, SLOTS_CMD), Send(to, GET_B)]
    assert routes.version == 2
    assert routes.primaries() == ([A, B, C] if to == C else [A, B, D, C])
    # The table is fresh: the slot's next command goes straight to its new owner.
    driver.expect((to, GET_B2, "v2"))
    assert driver.run(routes.call(GET_B2[1], GET_B2)) == "v2"
    assert driver.steps[4:] == [Send(to, GET_B2)]
    driver.done()


def test_cluster_moved_again_when_the_table_read_lags() -> None:
    routes, driver = loaded()
    driver.expect(
        (B, GET_B, moved(SLOT_B, C)),
        (A, SLOTS_CMD, table()),  # that node has not heard of the move yet
        (B, GET_B, moved(SLOT_B, C)),
        (A, SLOTS_CMD, moved_table(SLOT_B, C)),
        (C, GET_B, "v"),
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Refresh(1),
        Send(A, SLOTS_CMD),
        Send(B, GET_B),
        Refresh(2),
        Send(A, SLOTS_CMD),
        Send(C, GET_B),
    ]
    driver.done()


def test_cluster_reload_asks_known_primaries_before_the_seeds() -> None:
    routes = cluster_routes([X, A, B, C])
    driver = Driver(
        routes,
        [
            (X, SLOTS_CMD, ConnectFailed("refused")),
            (A, SLOTS_CMD, table()),
            (B, GET_B, moved(SLOT_B, C)),
            (A, SLOTS_CMD, ConnectFailed("refused")),
            (B, SLOTS_CMD, ConnectionLost("closed")),
            (C, SLOTS_CMD, moved_table(SLOT_B, C)),
            (C, GET_B, "v"),
        ],
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    loads = [
        step.address for step in driver.steps if isinstance(step, Send) and step.args == SLOTS_CMD
    ]
    assert loads == [X, A, A, B, C]  # X, not a primary, is not asked first again
    driver.done()


def test_cluster_ask_sends_asking_to_the_target_without_changing_the_table() -> None:
    routes, driver = loaded()
    driver.expect((B, GET_B, error(f"ASK {SLOT_B} {C}")), (C, GET_B, "v"))
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [Send(B, GET_B), Send(C, GET_B, asking=True)]
    assert routes.version == 1
    # The slot is still B's (being migrated): the next command goes to B again.
    driver.expect((B, GET_B2, "v2"))
    assert driver.run(routes.call(GET_B2[1], GET_B2)) == "v2"
    assert driver.steps[2:] == [Send(B, GET_B2)]
    driver.done()


def test_cluster_ask_target_that_says_tryagain_sends_to_the_owner_again() -> None:
    routes, driver = loaded()
    tryagain = error("TRYAGAIN Multiple keys request during rehashing of slot")
    driver.expect((B, GET_B, error(f"ASK {SLOT_B} {C}")), (C, GET_B, tryagain), (B, GET_B, "v"))
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Send(C, GET_B, asking=True),
        Pause(backoff(1)),
        Send(B, GET_B),
    ]
    assert routes.version == 1
    driver.done()


def test_cluster_ask_target_down_reads_the_table_again() -> None:
    routes, driver = loaded()
    driver.expect(
        (B, GET_B, error(f"ASK {SLOT_B} {C}")),
        (C, GET_B, ConnectFailed("refused")),
        (A, SLOTS_CMD, table()),
        (B, GET_B, "v"),
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Send(C, GET_B, asking=True),
        Pause(backoff(1)),
        Refresh(1),
        Send(A, SLOTS_CMD),
        Send(B, GET_B),
    ]
    driver.done()


def test_cluster_ask_target_lost_in_flight_is_raised_and_never_resent() -> None:
    routes, driver = loaded()
    lost = ConnectionLost("the connection was closed")
    driver.expect((B, GET_B, error(f"ASK {SLOT_B} {C}")), (C, GET_B, lost))
    with pytest.raises(ConnectionLost) as caught:
        driver.run(routes.call(GET_B[1], GET_B))
    assert caught.value is lost
    assert driver.steps == [Send(B, GET_B), Send(C, GET_B, asking=True)]
    driver.done()


def test_cluster_tryagain_pauses_with_backoff_then_retries_the_same_node() -> None:
    routes, driver = loaded()
    tryagain = error("TRYAGAIN Multiple keys request during rehashing of slot")
    driver.expect((B, GET_B, tryagain), (B, GET_B, tryagain), (B, GET_B, "v"))
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Pause(backoff(0)),
        Send(B, GET_B),
        Pause(backoff(1)),
        Send(B, GET_B),
    ]
    assert backoff(0) < backoff(1)
    assert routes.version == 1  # no reload
    driver.done()


def test_cluster_tryagain_leaves_a_stale_table_stale() -> None:
    """Another caller's failure made the table stale: a TRYAGAIN does not make it fresh."""
    routes, driver = loaded()
    get_a = ("GET", KEY_A)
    first, second = routes.call(KEY_A, get_a), routes.call(GET_B[1], GET_B)
    assert next(first) == Send(A, get_a)
    assert next(second) == Send(B, GET_B)
    with pytest.raises(ConnectionLost):
        first.throw(ConnectionLost("the connection was closed"))  # A failed: stale
    assert second.throw(error("TRYAGAIN rehashing")) == Pause(backoff(0))
    assert second.send(None) == Refresh(1)  # still stale: read before sending again
    driver.expect((A, SLOTS_CMD, ConnectFailed("refused")), (B, SLOTS_CMD, table(RA, B, C)))
    driver.run(routes.load())
    assert routes.primaries() == [RA, B, C]
    assert second.send(None) == Send(B, GET_B)
    with pytest.raises(StopIteration):
        second.send("v")
    driver.done()


def test_cluster_clusterdown_pauses_then_reads_the_table_again() -> None:
    routes, driver = loaded()
    driver.expect(
        (B, GET_B, error("CLUSTERDOWN The cluster is down")),
        (A, SLOTS_CMD, table(A, RB, C)),
        (RB, GET_B, "v"),
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Pause(backoff(0)),
        Refresh(1),
        Send(A, SLOTS_CMD),
        Send(RB, GET_B),
    ]
    assert routes.primaries() == [A, RB, C]
    driver.done()


def test_cluster_connect_failed_reads_the_table_again_and_resends() -> None:
    routes, driver = loaded()
    driver.expect(
        (B, GET_B, ConnectFailed("cannot connect to 127.0.0.1:7001: refused")),
        (A, SLOTS_CMD, table(A, RB, C)),  # B's replica took over
        (RB, GET_B, "v"),
    )
    assert driver.run(routes.call(GET_B[1], GET_B)) == "v"
    assert driver.steps == [
        Send(B, GET_B),
        Pause(backoff(0)),
        Refresh(1),
        Send(A, SLOTS_CMD),
        Send(RB, GET_B),
    ]
    assert routes.primaries() == [A, RB, C]
    assert routes.version == 2
    driver.done()


def test_cluster_connection_lost_in_flight_is_raised_and_never_resent() -> None:
    routes, driver = loaded()
    lost = ConnectionLost("no reply within 2 s")
    driver.expect((B, GET_B, lost))
    with pytest.raises(ConnectionLost) as caught:
        driver.run(routes.call(GET_B[1], GET_B))
    assert caught.value is lost
    assert type(caught.value) is ConnectionLost
    assert driver.steps == [Send(B, GET_B)]
    assert len(driver.sends(GET_B)) == 1
    # A node failed, so its replica may be the primary soon: the next command reads
    # the table first (and carries the version it found stale).
    driver.expect((A, SLOTS_CMD, table(A, RB, C)), (RB, GET_B2, "v"))
    assert driver.run(routes.call(GET_B2[1], GET_B2)) == "v"
    assert driver.steps[1:] == [Refresh(1), Send(A, SLOTS_CMD), Send(RB, GET_B2)]
    assert len(driver.sends(GET_B)) == 1
    driver.done()


@pytest.mark.parametrize(
    "failure",
    [
        error("WRONGTYPE Operation against a key holding the wrong kind of value"),
        error("ERR unknown command 'NOPE'"),
        error("NOSCRIPT No matching script. Please use EVAL."),
    ],
    ids=["wrongtype", "err", "noscript"],
)
def test_cluster_other_error_replies_are_raised_at_once(failure: ServerError) -> None:
    routes, driver = loaded()
    driver.expect((B, GET_B, failure))
    raised = NoScriptError if str(failure).startswith("NOSCRIPT") else ServerError
    with pytest.raises(raised, match=str(failure).split()[0]):
        driver.run(routes.call(GET_B[1], GET_B))
    assert driver.steps == [Send(B, GET_B)]
    # The table is still fresh.
    driver.expect((B, GET_B2, "v"))
    assert driver.run(routes.call(GET_B2[1], GET_B2)) == "v"
    assert driver.steps == [Send(B, GET_B), Send(B, GET_B2)]
    driver.done()


def _bounded(kind: str) -> tuple[list[Expected], list[Step], Any]:
    """The script and the expected steps of a command that fails ``kind`` every time."""
    script: list[Expected] = []
    steps: list[Step] = []
    outcome: Any = None
    for attempt in range(CLUSTER_ATTEMPTS):
        last = attempt == CLUSTER_ATTEMPTS - 1
        reload = attempt > 0 and kind != "TRYAGAIN"
        if reload:
            script.append((A, SLOTS_CMD, table()))
            steps += [Refresh(attempt), Send(A, SLOTS_CMD)]
        if kind == "MOVED":
            outcome = moved(SLOT_B, C)  # and the table read says B, every time
        elif kind == "ConnectFailed":
            outcome = ConnectFailed(f"cannot connect to {B}: refused ({attempt})")
        else:
            outcome = error(f"{kind} try again later")
        script.append((B, GET_B, outcome))
        steps.append(Send(B, GET_B))
        if kind != "MOVED" and not last:
            steps.append(Pause(backoff(attempt)))
    return script, steps, outcome


@pytest.mark.parametrize("kind", ["MOVED", "TRYAGAIN", "CLUSTERDOWN", "ConnectFailed"])
def test_cluster_attempts_are_bounded(kind: str) -> None:
    routes, driver = loaded()
    script, expected, last = _bounded(kind)
    driver.expect(*script)
    with pytest.raises((ServerError, ConnectFailed)) as caught:
        driver.run(routes.call(GET_B[1], GET_B))
    assert caught.value is last  # the last failure, as it came
    assert driver.steps == expected
    assert len(driver.sends(GET_B)) == CLUSTER_ATTEMPTS
    assert isinstance(driver.steps[-1], Send)  # no pause after the last attempt
    driver.done()


def test_cluster_refresh_carries_the_version_it_found_stale() -> None:
    routes = cluster_routes()
    route = routes.ready()
    assert next(route) == Refresh(0)
    with pytest.raises(StopIteration):
        route.send(None)  # the driver read nothing: the route does not insist
    driver = Driver(routes, [(A, SLOTS_CMD, table())])
    driver.run(routes.ready())
    assert routes.version == 1
    assert list(routes.ready()) == []  # fresh: nothing to do
    driver.expect((B, GET_B, ConnectionLost("closed")))
    with pytest.raises(ConnectionLost):
        driver.run(routes.call(GET_B[1], GET_B))
    assert list(routes.ready()) == [Refresh(1)]


def test_cluster_primaries_after_load() -> None:
    routes = cluster_routes()
    assert routes.primaries() == []
    shards = slots_reply((0, 99, B, RB), (100, 199, A, RA), (200, 16383, B, RB))
    Driver(routes, [(A, SLOTS_CMD, shards)]).run(routes.ready())
    assert routes.primaries() == [B, A]  # each once, in slot order; no replica


# -- Cluster: callers that share one table -------------------------------------------------


def test_cluster_callers_that_find_the_table_stale_together_share_one_read() -> None:
    routes, driver = loaded()
    first, second = routes.call(GET_B[1], GET_B), routes.call(GET_B2[1], GET_B2)
    assert next(first) == Send(B, GET_B)
    assert next(second) == Send(B, GET_B2)
    assert first.throw(moved(SLOT_B, C)) == Refresh(1)
    assert second.throw(moved(SLOT_B, C)) == Refresh(1)
    driver.expect((A, SLOTS_CMD, moved_table(SLOT_B, C)))
    driver.run(routes.load())  # the one read, for both (the transports share it)
    assert routes.version == 2
    assert first.send(None) == Send(C, GET_B)
    assert second.send(None) == Send(C, GET_B2)  # its Refresh(1) was answered by that read
    driver.done()


@pytest.mark.parametrize(
    "failure",
    [moved(SLOT_B, C), ConnectFailed("cannot connect to 127.0.0.1:7001: refused")],
    ids=["moved", "connect-failed"],
)
def test_cluster_failure_of_a_command_routed_by_an_older_table_reads_nothing(
    failure: Exception,
) -> None:
    """A caller whose command was routed before the table was read again, and fails
    after (MOVED, or a node that could not be reached), resends by the new table: it
    does not read it once more (that would be one read per late caller)."""
    routes, driver = loaded()
    new = moved_table(SLOT_B, C) if isinstance(failure, ServerError) else table(A, C, RC)
    first, second = routes.call(GET_B[1], GET_B), routes.call(GET_B2[1], GET_B2)
    assert next(first) == Send(B, GET_B)
    assert next(second) == Send(B, GET_B2)
    step = first.throw(failure)
    if isinstance(failure, ConnectFailed):
        assert step == Pause(backoff(0))
        step = first.send(None)
    assert step == Refresh(1)
    driver.expect((A, SLOTS_CMD, new))
    driver.run(routes.load())
    assert first.send(None) == Send(C, GET_B)
    # Now the second caller's reply comes: it was routed by version 1, read since.
    step = second.throw(failure)
    if isinstance(failure, ConnectFailed):
        assert step == Pause(backoff(0))
        step = second.send(None)
    assert step == Send(C, GET_B2)
    assert routes.version == 2
    assert list(routes.ready()) == []  # and the table is not stale for anyone else
    driver.done()


# -- key_slot -----------------------------------------------------------------------------

FIXED_KEYS = [
    b"",
    b"a",
    b"123456789",
    b"{",
    b"}",
    b"{}",
    b"}{",
    b"{}{x}",
    b"{{}}",
    b"foo{}{bar}",
    b"foo{{bar}}zap",
    b"foo{bar}{zap}",
    b"{user1000}.following",
    b"{user1000}.followers",
    b"a{b",
    b"a}b{c",
    b"x{y}",
    b"{y}x",
    b"\x00",
    b"\x00{\x00}\xff",
    b"\xff\xfe{\xfd}",
    "h\xe9llo".encode(),
    "{\u00fc}ber".encode(),
    "\u4f1a\u8bdd{\u7528\u6237}:1".encode(),
    "\U0001f600{\U0001f600}".encode(),
    b"chat-sdk:cache:k",
    b"{chat-sdk}:lock:thread",
    b"k" * 10_000,
]


@pytest.mark.parametrize("key", FIXED_KEYS)
def test_key_slot_is_redis_pys(key: bytes) -> None:
    assert key_slot(key) == redis_key_slot(key)
    assert 0 <= key_slot(key) < SLOTS


def test_key_slot_known_values_and_hash_tags() -> None:
    assert key_slot(b"123456789") == 0x31C3  # CRC16/XMODEM's check value
    assert key_slot(b"") == 0
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")  # the first tag only
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")  # up to the first "}"
    assert key_slot(b"{}{x}") != key_slot(b"x")  # an empty tag: the whole key
    assert key_slot(b"foo{}{bar}") == redis_key_slot(b"foo{}{bar}")


@given(st.binary(max_size=64))
def test_key_slot_of_any_bytes_is_redis_pys(key: bytes) -> None:
    assert key_slot(key) == redis_key_slot(key)


TEXT = st.text(
    st.one_of(
        st.sampled_from("{}{}{}ab:"),
        st.characters(codec="utf-8"),  # text with a UTF-8 form (no lone surrogate)
    ),
    max_size=24,
)


@given(TEXT)
def test_key_slot_of_text_with_tags_is_redis_pys(key: str) -> None:
    assert key_slot(key.encode()) == redis_key_slot(key.encode())


@given(TEXT)
def test_cluster_routes_text_keys_by_redis_pys_slot(key: str) -> None:
    routes = cluster_routes()
    driver = Driver(routes, [(A, SLOTS_CMD, table())])
    driver.run(routes.ready())
    slot = redis_key_slot(key.encode())
    owner = [A, B, C][next(n for n, (_, last) in enumerate(RANGES) if slot <= last)]
    driver.expect((owner, ("GET", key), "v"))
    assert driver.run(routes.call(key, ("GET", key))) == "v"
    driver.done()


def test_cluster_routes_a_key_without_a_utf8_form_by_its_replaced_text() -> None:
    """A lone surrogate has no UTF-8 form (the operations refuse such keys); the route
    still picks a slot without failing: that of the text with "?" in its place."""
    routes = cluster_routes()
    key = "a\ud800b"
    wanted = key_slot(b"a?b")
    shard = next(n for n, (_, last) in enumerate(RANGES) if wanted <= last)
    driver = Driver(routes, [(A, SLOTS_CMD, table()), ([A, B, C][shard], ("GET",), "v")])
    assert driver.run(routes.call(key, ("GET", key))) == "v"


# -- single-flight reloads on a real Cluster ------------------------------------------------

ASYNC_CALLERS = 50
THREADS = 8
PER_THREAD = 4
#: A bound on the real-cluster tests' waits (seconds): they take milliseconds.
WAIT_S = 20.0


@dataclass(frozen=True)
class ClusterNode:
    """One node of the session's Cluster, as its own ``CLUSTER NODES`` describes it."""

    address: Address
    admin: redis.Redis
    view: ClusterNodeView


def cluster_nodes(url: str) -> list[ClusterNode]:
    """Every node named in ``url`` (the session's Cluster lists all of them)."""
    nodes = []
    for host, port in parse_redis_url(url).hosts:
        admin = redis.Redis(
            host=host, port=port, decode_responses=True, socket_timeout=5, socket_connect_timeout=5
        )
        lines = str(admin.execute_command("CLUSTER", "NODES")).splitlines()
        views = [ClusterNodeView.parse(line) for line in lines if line.strip()]
        myself = next(view for view in views if "myself" in view.flags)
        nodes.append(ClusterNode(Address(host, port), admin, myself))
    return nodes


def slot_reloads(nodes: list[ClusterNode]) -> int:
    """``CLUSTER SLOTS`` calls since the last ``CONFIG RESETSTAT``, over every node."""
    return sum(command_calls(node, "cluster|slots")[0] for node in nodes)


def command_calls(node: ClusterNode, command: str) -> tuple[int, int]:
    """(calls, rejected calls) of ``command`` on ``node`` since ``CONFIG RESETSTAT``."""
    stats: Any = node.admin.execute_command("INFO", "commandstats")
    entry = stats.get(f"cmdstat_{command}", {})
    return int(entry.get("calls", 0)), int(entry.get("rejected_calls", 0))


def reset_stats(nodes: list[ClusterNode]) -> None:
    for node in nodes:
        node.admin.execute_command("CONFIG", "RESETSTAT")


def move_slot(nodes: list[ClusterNode], slot: int, source: ClusterNode, target: ClusterNode) -> int:
    """Move ``slot`` from ``source`` to ``target`` with its keys, as a resharding does
    (IMPORTING, MIGRATING, MIGRATE, then SETSLOT NODE on every primary); → keys moved.

    (``tests.test_failover._migrate_slot`` does the same on a ``Cluster`` object, slowly
    on purpose, to run a load against the half-migrated slot; the session's Cluster is
    known here by its URL only.)
    """
    source_id, target_id = source.view.node_id, target.view.node_id
    target.admin.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.admin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    moved = 0
    for _batch in range(1_000):  # bounded: 100 keys a batch
        keys = source.admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
        if not keys:
            break
        where = target.address
        source.admin.execute_command("MIGRATE", where.host, where.port, "", 0, 5_000, "KEYS", *keys)
        moved += len(keys)
    else:
        raise AssertionError(f"slot {slot} still had keys after 100000 were moved")
    primaries = [node for node in nodes if node.view.is_primary]
    others = [node for node in primaries if node is not target and node is not source]
    for node in [target, source, *others]:
        node.admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


@contextmanager
def admin_nodes(url: str) -> Iterator[list[ClusterNode]]:
    nodes = cluster_nodes(url)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.admin.close()


Rounds = Generator[tuple[list[ClusterNode], ClusterNode, ClusterNode], None, None]


def rounds(url: str, tag: str) -> Rounds:
    """``tag``'s slot moved to another primary, then back (a round each, its table
    stale for every client): → (every node, the old owner, the new one) for each; the
    slot is back where it was after the last (or a failure), as the session found it."""
    with admin_nodes(url) as nodes:
        slot = redis_key_slot(tag.encode())
        home = next(node for node in nodes if node.view.is_primary and node.view.owns(slot))
        away = next(node for node in nodes if node.view.is_primary and node is not home)
        owner = home
        try:
            for source, target in [(home, away), (away, home)]:
                move_slot(nodes, slot, source, target)
                owner = target
                yield nodes, source, target
        finally:
            if owner is not home:
                move_slot(nodes, slot, owner, home)


def keys_in_slot(node: ClusterNode, tag: str) -> int:
    """How many of this test's keys (hash tag ``tag``) ``node`` holds. Only its own: other
    tests' keys on the shared cluster can fall in the same slot."""
    slot = redis_key_slot(tag.encode())
    keys = node.admin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000)
    mine = f"{{{tag}}}".encode()
    return sum(mine in (key if isinstance(key, bytes) else key.encode()) for key in keys)


@pytest.mark.anyio
async def test_asyncio_callers_that_find_the_table_stale_share_one_reload(servers: Any) -> None:
    url = servers.url("redis-server", "cluster")
    tag = f"sf-async-{uuid.uuid4().hex[:8]}"
    keys = [f"k{n}" for n in range(ASYNC_CALLERS)]
    async with AsyncState.from_url(url, key_prefix=f"{{{tag}}}") as state:
        for n, key in enumerate(keys):
            await state.set(key, {"n": n})
        try:
            with closing(rounds(url, tag)) as moves:
                for round_, (nodes, source, target) in enumerate(moves):
                    assert keys_in_slot(target, tag) == ASYNC_CALLERS
                    reset_stats(nodes)
                    with anyio.fail_after(WAIT_S):
                        results = await asyncio.gather(*(state.get(key) for key in keys))
                    assert results == [{"n": n} for n in range(ASYNC_CALLERS)]
                    # Every caller was sent to the old owner (MOVED: rejected there), then,
                    # after the one read that all of them shared, to the new owner, which
                    # served each once.
                    reloads = slot_reloads(nodes)
                    assert reloads == 1, f"round {round_}: {reloads} CLUSTER SLOTS"
                    assert command_calls(source, "get") == (0, ASYNC_CALLERS)
                    assert command_calls(target, "get") == (ASYNC_CALLERS, 0)
        finally:
            for key in keys:
                await state.delete(key)


def test_threads_that_find_the_table_stale_share_one_reload(servers: Any) -> None:
    url = servers.url("redis-server", "cluster")
    tag = f"sf-threads-{uuid.uuid4().hex[:8]}"
    keys = [[f"k{thread}-{n}" for n in range(PER_THREAD)] for thread in range(THREADS)]
    everyone = [key for thread_keys in keys for key in thread_keys]
    errors: list[BaseException] = []

    def run_all(work: Any) -> None:
        """``work(thread)`` in THREADS threads started together; bounded in time."""
        barrier = threading.Barrier(THREADS, timeout=WAIT_S)

        def main(thread: int) -> None:
            try:
                barrier.wait()
                work(thread)
            except BaseException as exc:  # recorded; the test checks there is none
                errors.append(exc)

        threads = [threading.Thread(target=main, args=(n,), daemon=True) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=WAIT_S)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []

    with State.from_url(url, key_prefix=f"{{{tag}}}") as state:
        for key in everyone:
            state.set(key, {"key": key})
        # A connection to the slot's owner for each thread, so that they all send at once.
        run_all(lambda thread: state.get(keys[thread][0]))
        try:
            with closing(rounds(url, tag)) as moves:
                for round_, (nodes, source, target) in enumerate(moves):
                    reset_stats(nodes)
                    results: dict[str, Any] = {}

                    def work(thread: int, results: dict[str, Any] = results) -> None:
                        for key in keys[thread]:
                            results[key] = state.get(key)

                    run_all(work)
                    assert results == {key: {"key": key} for key in everyone}
                    reloads = slot_reloads(nodes)
                    assert reloads == 1, f"round {round_}: {reloads} CLUSTER SLOTS"
                    # Each thread's first command was routed by the old table (unless the
                    # read was done before that thread sent it): rejected by the old owner;
                    # every command was served once, by the new owner.
                    assert command_calls(source, "get")[0] == 0
                    assert 1 <= command_calls(source, "get")[1] <= THREADS
                    assert command_calls(target, "get") == (THREADS * PER_THREAD, 0)
        finally:
            for key in everyone:
                state.delete(key)


def test_a_child_forked_while_a_thread_reloads_the_table_reloads_its_own(servers: Any) -> None:
    """A thread of the parent holds the slot-table reload lock (mid-CLUSTER SLOTS) when
    another forks: the child's copy of the lock stays held forever, so the child takes a
    new one and reads the table itself."""
    url = servers.url("redis-server", "cluster")
    tag = f"sf-fork-{uuid.uuid4().hex[:8]}"
    with State.from_url(url, key_prefix=f"{{{tag}}}") as state:
        state.set("k", {"v": 1})
        router = state._backend._node  # type: ignore[union-attr]  # the routed transport
        with closing(rounds(url, tag)) as moves:
            next(moves)  # the slot moved: the child's first command meets MOVED
            held, release = threading.Event(), threading.Event()

            def hold() -> None:
                with router._refresh_lock:
                    held.set()
                    release.wait(WAIT_S)

            holder = threading.Thread(target=hold, daemon=True)
            holder.start()
            assert held.wait(WAIT_S)
            try:
                pid, pipe = forked(lambda: {"value": state.get("k")})
                ready, _, _ = select.select([pipe], [], [], WAIT_S)
                if not ready:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    pytest.fail(f"the forked child hung for {WAIT_S} s on the reload lock")
                assert report_of(pid, pipe) == {"value": {"v": 1}}
            finally:
                release.set()
                holder.join(WAIT_S)
        state.delete("k")
