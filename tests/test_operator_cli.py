"""The operator commands of ``chat-state`` (stats, subscriptions, locks, queues, get, list,
health, top, clear): their human and ``--json`` output, on data written by chat-state and
by the TypeScript adapters, on memory://NAME (in-process) and on real servers (standalone,
Cluster, Sentinel), and their error exits.

Most tests run the command line in-process (``cli.main``) after seeding a state with
:class:`State`; ``top`` also runs as ``python -m chat_state`` in a pseudo-terminal, whose
screen is read back.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import chat_state
from chat_state import BackendError, Health, NodeHealth, QueueEntry, State, cli
from chat_state.memory import store_for_url
from chat_state.testing import RedisServer, ServerUnavailable, free_port

from .conftest import Servers, _unavailable, raw_client
from .interop.bridge import ADAPTERS, TSBridge

Run = tuple[int, str, str]  # (status, stdout, stderr)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Run:
    capsys.readouterr()
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_lines(out: str) -> list[Any]:
    return [json.loads(line) for line in out.splitlines()]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the seeded state ---------------------------------------------------------------------

SUBSCRIBED = ["slack:C1:1.1", "slack:C2:2.2", "discord:Zoë 日本:👋 space", "teams:T9"]
#: thread → lock TTL (ms): far enough apart that their order cannot change while a test runs
LOCKS = {"slack:C2:2.2": 600_000, "slack:C1:1.1": 20_000, "teams:T9": 120_000}
#: thread → queue depth
QUEUES = {"slack:C1:1.1": 4, "teams:T9": 1, "slack:C2:2.2": 2}
CACHE = {"user:1": {"name": "Zoë", "tags": [1, 2], "nested": {"ok": True}}, "dedupe:e1": True}
LISTS = {"history:slack:C1:1.1": ["hello", {"id": 2}, 3]}
OLDEST_AGO_MS = 180_000  # the deepest queue's oldest entry: 3 minutes old


def seed(state: State) -> None:
    for thread in SUBSCRIBED:
        state.subscribe(thread)
    for thread, ttl in LOCKS.items():
        assert state.acquire_lock(thread, ttl) is not None
    for key, value in CACHE.items():
        state.set(key, value, ttl_ms=600_000)
    for key, values in LISTS.items():
        for value in values:
            state.append_to_list(key, value, ttl_ms=600_000)
    now = now_ms()
    for thread, depth in QUEUES.items():
        for n in range(depth):
            enqueued = now - OLDEST_AGO_MS + n if thread == "slack:C1:1.1" else now - 1_000
            entry = QueueEntry(enqueued, now + 600_000, {"id": f"{thread}-{n}"})
            state.enqueue(thread, entry, max_size=100)


@dataclass
class Where:
    """A seeded state the command line is pointed at."""

    name: str
    url: str
    prefix: str

    def args(self, *argv: str) -> list[str]:
        return [*argv, "--url", self.url, "--prefix", self.prefix]

    def state(self) -> State:
        return State.from_url(self.url, key_prefix=self.prefix)


TOPOLOGIES = ["memory", "standalone", "cluster", "sentinel"]


def _server_url(servers: Servers, topology: str) -> str:
    try:
        return servers.url("redis-server", topology)
    except ServerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture(params=TOPOLOGIES)
def where(request: pytest.FixtureRequest) -> Iterator[Where]:
    """A state seeded with the data above: on memory://NAME, or on the session's
    standalone server, Cluster and Sentinel group (each shared by the tests)."""
    prefix = f"cli-{uuid.uuid4().hex[:10]}"
    topology = str(request.param)
    if topology == "memory":
        url = f"memory://{prefix}"
    else:
        url = _server_url(request.getfixturevalue("servers"), topology)
    place = Where(topology, url, prefix)
    with place.state() as state:
        seed(state)
    try:
        yield place
    finally:
        with place.state() as state:
            state.clear()
        if topology == "memory":
            store_for_url(url).flush()


# -- stats --------------------------------------------------------------------------------


def test_stats_json_counts_the_seeded_data(
    where: Where, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, *where.args("stats", "--json"))
    assert (status, err) == (0, "")
    stats = json.loads(out)
    assert out.count("\n") == 1  # one compact document when piped
    assert stats["prefix"] == where.prefix
    assert stats["subscriptions"] == len(SUBSCRIBED)
    assert stats["locks"] == len(LOCKS)
    assert stats["cache_keys"] == len(CACHE)
    assert stats["lists"] == len(LISTS)
    assert stats["queues"] == len(QUEUES)
    assert stats["queued_entries"] == sum(QUEUES.values())
    assert stats["other_keys"] == 0
    assert [q["thread_id"] for q in stats["deepest_queues"]] == sorted(
        QUEUES, key=lambda t: -QUEUES[t]
    )
    primaries = {"memory": 1, "standalone": 1, "cluster": 3, "sentinel": 1}[where.name]
    assert len(stats["servers"]) == primaries
    if where.name != "memory":
        assert all(s["used_memory_bytes"] > 0 for s in stats["servers"])
        assert all(s["connected_clients"] >= 1 for s in stats["servers"])


def test_stats_human_table(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, *where.args("stats"))
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == f"chat-state stats: prefix {where.prefix!r} on {where.url}"
    assert re.search(r"^subscriptions +4$", out, re.M)
    assert re.search(r"^locks +3  held$", out, re.M)
    assert re.search(r"^cache keys +2$", out, re.M)
    assert re.search(r"^lists +1$", out, re.M)
    assert re.search(r"^queues +3  7 entries$", out, re.M)
    assert re.search(r"^SERVER +MEMORY +OPS/S +CLIENTS$", out, re.M)
    deepest = lines[lines.index(next(x for x in lines if x.startswith("DEEPEST QUEUES"))) :]
    assert deepest[1].split()[:2] == ["slack:C1:1.1", "4"]
    assert deepest[1].endswith("3 min ago")
    assert [row.split()[0] for row in deepest[1:]] == ["slack:C1:1.1", "slack:C2:2.2", "teams:T9"]
    if where.name != "memory":
        assert re.search(r"\d+\.\d (KiB|MiB|GiB)", out)  # the servers' memory


# -- subscriptions ------------------------------------------------------------------------


def test_subscriptions(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *where.args("subscriptions"))
    assert (status, err) == (0, "")
    assert sorted(out.splitlines()) == sorted(SUBSCRIBED)
    status, out, _ = run(capsys, *where.args("subscriptions", "--json"))
    assert status == 0
    assert sorted(line["thread_id"] for line in json_lines(out)) == sorted(SUBSCRIBED)


def test_subscriptions_match_and_limit(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, *where.args("subscriptions", "--match", "slack:*"))
    assert status == 0
    assert sorted(out.splitlines()) == ["slack:C1:1.1", "slack:C2:2.2"]
    status, out, err = run(capsys, *where.args("subscriptions", "--limit", "3"))
    assert status == 0
    assert len(out.splitlines()) == 3
    assert set(out.splitlines()) <= set(SUBSCRIBED)
    assert err == "chat-state: stopped at --limit 3 of 4 subscriptions\n"
    status, out, err = run(capsys, *where.args("subscriptions", "--json", "--limit", "2"))
    assert (status, err) == (0, "")
    assert len(json_lines(out)) == 2
    status, out, err = run(capsys, *where.args("subscriptions", "--match", "nothing*"))
    assert (status, out) == (0, "")
    assert "no subscriptions" in err


# -- locks --------------------------------------------------------------------------------


def test_locks_sorted_by_remaining_ttl(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, *where.args("locks"))
    assert (status, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == ["THREAD", "TTL", "HOLDER", "ACQUIRED"]
    assert [row.split()[0] for row in rows] == ["slack:C1:1.1", "teams:T9", "slack:C2:2.2"]
    assert re.fullmatch(r"slack:C1:1\.1 +1\d\.\d s  chat-state #[0-9a-f]{8}  -", rows[0])
    assert re.search(r" (1|2) min  chat-state #", rows[1])
    assert re.search(r" (9|10) min  chat-state #", rows[2])


def test_locks_json_lines(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, *where.args("locks", "--json"))
    assert status == 0
    locks = json_lines(out)
    assert [lock["thread_id"] for lock in locks] == ["slack:C1:1.1", "teams:T9", "slack:C2:2.2"]
    for lock in locks:
        assert 0 < lock["ttl_ms"] <= LOCKS[lock["thread_id"]]
        assert lock["holder"]["origin"] == "chat-state"
        assert re.fullmatch(r"[0-9a-f]{8}", lock["holder"]["fingerprint"])
        assert "token" not in json.dumps(lock)


def test_locks_limit_keeps_the_soonest_to_expire(
    where: Where, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *where.args("locks", "--limit", "2"))
    assert status == 0
    _, *rows, footer = out.splitlines()
    assert [row.split()[0] for row in rows] == ["slack:C1:1.1", "teams:T9"]
    assert footer == "(2 of 3 locks shown: --limit 2)"
    status, out, _ = run(capsys, *where.args("locks", "--json", "--match", "slack:*"))
    assert [lock["thread_id"] for lock in json_lines(out)] == ["slack:C1:1.1", "slack:C2:2.2"]
    status, out, _ = run(capsys, *where.args("locks", "--match", "none:*"))
    assert (status, out) == (0, f"no locks held (prefix {where.prefix!r} on {where.url})\n")


# -- queues -------------------------------------------------------------------------------


def test_queues_deepest_first(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, *where.args("queues"))
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["THREAD", "DEPTH", "OLDEST"]
    assert [row.split()[:2] for row in rows] == [
        ["slack:C1:1.1", "4"],
        ["slack:C2:2.2", "2"],
        ["teams:T9", "1"],
    ]
    assert rows[0].endswith("3 min ago")
    status, out, _ = run(capsys, *where.args("queues", "--json", "--limit", "1"))
    assert json_lines(out) == [
        {
            "thread_id": "slack:C1:1.1",
            "depth": 4,
            "oldest_enqueued_at": json_lines(out)[0]["oldest_enqueued_at"],
        }
    ]
    assert now_ms() - json_lines(out)[0]["oldest_enqueued_at"] >= OLDEST_AGO_MS
    status, out, _ = run(capsys, *where.args("queues", "--match", "*:T9"))
    assert [row.split()[:2] for row in out.splitlines()[1:]] == [["teams:T9", "1"]]


# -- get and list -------------------------------------------------------------------------


def test_get_and_list_print_the_stored_json(
    where: Where, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *where.args("get", "user:1"))
    assert status == 0
    assert out == '{"name": "Zoë", "tags": [1, 2], "nested": {"ok": true}}\n'
    assert run(capsys, *where.args("get", "dedupe:e1"))[1] == "true\n"
    status, out, _ = run(capsys, *where.args("list", "history:slack:C1:1.1"))
    assert (status, json.loads(out)) == (0, ["hello", {"id": 2}, 3])


def test_unknown_key_is_a_one_line_error(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("get", "list"):
        status, out, err = run(capsys, *where.args(command, "no-such-key"))
        assert (status, out) == (1, "")
        assert err.startswith("chat-state: error: no ")
        assert "'no-such-key'" in err
        assert where.url in err
        assert err.count("\n") == 1


def test_json_is_pretty_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        state.set("k", {"a": [1, 2]})
    monkeypatch.setattr(cli, "is_terminal", lambda stream: True)
    status, out, _ = run(capsys, "get", "k", "--url", url, "--prefix", "p")
    assert status == 0
    assert out == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    store_for_url(url).flush()


# -- health -------------------------------------------------------------------------------


def test_health(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, *where.args("health"))
    assert status == 0
    first, _, header, *nodes = out.splitlines()
    assert first.startswith("ok: ")
    assert where.url in first
    assert header.split() == ["NODE", "ROLE", "STATUS", "LATENCY", "ERROR"]
    assert len(nodes) == (3 if where.name == "cluster" else 1)
    assert all(" ok " in node for node in nodes)
    status, out, _ = run(capsys, *where.args("health", "--json"))
    health = json.loads(out)
    assert status == 0
    assert health["ok"] is True
    assert health["topology"] == where.name
    assert len(health["nodes"]) == len(nodes)


def test_health_not_ok_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    down = Health(
        False, None, "standalone", (NodeHealth("10.0.0.1:6379", False, None, error="timed out"),)
    )
    monkeypatch.setattr(State, "health", lambda self: down)
    status, out, _ = run(capsys, "health", "--url", "memory://h")
    assert status == 1
    assert out.startswith("NOT OK: ")
    assert re.search(r"^10\.0\.0\.1:6379 +- +down +- +timed out$", out, re.M)
    status, out, _ = run(capsys, "health", "--json", "--url", "memory://h")
    assert status == 1
    assert json.loads(out)["ok"] is False


# -- clear --------------------------------------------------------------------------------


def test_clear_removes_exactly_this_prefix(
    where: Where, capsys: pytest.CaptureFixture[str]
) -> None:
    # Neighbours: a prefix that starts with this one, and another state altogether.
    neighbours = [
        Where(where.name, where.url, where.prefix + "x"),
        Where(where.name, where.url, "o" + where.prefix),
    ]
    for neighbour in neighbours:
        with neighbour.state() as state:
            state.subscribe("kept")
            state.set("kept", 1)
    try:
        status, out, err = run(capsys, *where.args("clear", "--yes"))
        assert (status, err) == (0, "")
        keys = 1 + len(LOCKS) + len(CACHE) + len(LISTS) + len(QUEUES)  # 1: the subscriptions
        assert out == f"removed {keys} keys (prefix {where.prefix!r} on {where.url})\n"
        with where.state() as state:
            assert list(state.iter_keys()) == []
        for neighbour in neighbours:
            with neighbour.state() as state:
                assert sorted(state.iter_keys()) == [
                    f"{neighbour.prefix}:cache:kept",
                    f"{neighbour.prefix}:subscriptions",
                ]
        status, out, _ = run(capsys, *where.args("clear", "--yes", "--json"))
        assert (status, json.loads(out)) == (0, {"removed": 0, "prefix": where.prefix})
    finally:
        for neighbour in neighbours:
            with neighbour.state() as state:
                state.clear()


def test_clear_off_a_terminal_needs_yes(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        state.subscribe("t")
    status, out, err = run(capsys, "clear", "--url", url, "--prefix", "p")
    assert (status, out) == (2, "")
    assert err.startswith("chat-state: error: clear deletes keys: pass --yes")
    with State.from_url(url, key_prefix="p") as state:
        assert state.subscription_count() == 1
    store_for_url(url).flush()


@pytest.mark.parametrize(("answer", "removed"), [("y\n", True), ("n\n", False), ("", False)])
def test_clear_asks_on_a_terminal(
    answer: str, removed: bool, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        state.subscribe("t")
        state.set("k", 1)
    monkeypatch.setattr(cli, "is_terminal", lambda stream: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
    status, out, err = run(capsys, "clear", "--url", url, "--prefix", "p")
    assert f"Delete all 2 keys of prefix 'p' on {url}? [y/N] " in err
    with State.from_url(url, key_prefix="p") as state:
        assert state.subscription_count() == (0 if removed else 1)
    if removed:
        assert (status, out) == (0, f"removed 2 keys (prefix 'p' on {url})\n")
    else:
        assert (status, out) == (1, "")
        assert err.endswith("chat-state: nothing deleted\n")
    store_for_url(url).flush()


def test_clear_of_the_default_prefix_needs_allowing(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://{uuid.uuid4().hex}"  # never a shared server's default prefix
    with State.from_url(url) as state:
        state.subscribe("t")
    for prefix in ([], ["--prefix", "chat-sdk"], ["--prefix", ""]):
        status, _, err = run(capsys, "clear", "--yes", "--url", url, *prefix)
        assert status == 2
        assert "--allow-default-prefix" in err
        with State.from_url(url) as state:
            assert state.subscription_count() == 1
    status, out, _ = run(capsys, "clear", "--yes", "--allow-default-prefix", "--url", url)
    assert (status, out) == (0, f"removed 1 keys (prefix 'chat-sdk' on {url})\n")
    store_for_url(url).flush()


# -- top, piped ---------------------------------------------------------------------------


def test_top_piped_prints_one_snapshot_per_refresh(
    where: Where, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, *where.args("top", "--iterations", "2", "--interval", "0.05"))
    assert status == 0
    assert "\x1b" not in out  # no escapes when piped
    assert out.endswith("\n\n")  # each snapshot ends with a blank line
    shots = out.split("chat-state top: ")[1:]
    assert len(shots) == 2
    for shot in shots:
        assert re.search(r"^subscriptions +4$", shot, re.M)
        assert re.search(r"^locks held +3$", shot, re.M)
        assert re.search(r"^queued entries +7$", shot, re.M)
        assert re.search(r"^slack:C1:1\.1 +4  3 min ago$", shot, re.M)


def test_top_json_lines(where: Where, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, *where.args("top", "--json", "--iterations", "3", "--interval", "0.01")
    )
    assert status == 0
    shots = json_lines(out)
    assert len(shots) == 3
    assert all(s["subscriptions"] == 4 and s["locks"] == 3 for s in shots)
    assert shots[0]["time_ms"] <= shots[1]["time_ms"] <= shots[2]["time_ms"]


# -- data written by the TypeScript adapters ----------------------------------------------


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_data_written_by_typescript(
    adapter: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"cli-ts-{uuid.uuid4().hex[:10]}"
    place = Where("standalone", redis_url, prefix)
    try:
        bridge = TSBridge(adapter, redis_url, prefix).start()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    try:
        with bridge:
            bridge.call("subscribe", "ts:thread:1")
            bridge.call("subscribe", "ts:thread:2")
            bridge.call("acquireLock", "ts:thread:1", 45_000)
            bridge.call("set", "ts-key", {"from": adapter, "n": [1.5, None]}, 600_000)
            bridge.call("appendToList", "ts-list", "a", {"ttlMs": 600_000})
            bridge.call("appendToList", "ts-list", "b", {"ttlMs": 600_000})
            now = now_ms()
            for n in range(3):
                entry = {
                    "enqueuedAt": now - 120_000 + n,
                    "expiresAt": now + 600_000,
                    "message": {"id": n},
                }
                bridge.call("enqueue", "ts:thread:2", entry, 10)
        with place.state() as state:  # and one of ours beside them
            state.acquire_lock("py:thread", 5_000)

        status, out, _ = run(capsys, *place.args("locks"))
        assert status == 0
        _, *rows = out.splitlines()
        assert [row.split()[0] for row in rows] == ["py:thread", "ts:thread:1"]
        origin = {"ioredis": "state-ioredis", "redis": "state-redis"}[adapter]
        assert re.search(
            rf" 4\d\.\d s  {origin} #[0-9a-f]{{8}}  (just now|\d+\.\d s ago)$", rows[1]
        )
        assert rows[0].endswith(" -")  # chat-state's tokens do not tell when

        locks = json_lines(run(capsys, *place.args("locks", "--json"))[1])
        assert locks[1]["holder"]["origin"] == origin
        assert now_ms() - 60_000 < locks[1]["holder"]["acquired_at"] <= now_ms()

        status, out, _ = run(capsys, *place.args("queues"))
        assert out.splitlines()[1].split() == ["ts:thread:2", "3", "2", "min", "ago"]
        stats = json.loads(run(capsys, *place.args("stats", "--json"))[1])
        assert (stats["subscriptions"], stats["locks"], stats["cache_keys"]) == (2, 2, 1)
        assert (stats["lists"], stats["queues"], stats["queued_entries"]) == (1, 1, 3)
        assert json.loads(run(capsys, *place.args("get", "ts-key"))[1]) == {
            "from": adapter,
            "n": [1.5, None],
        }
        assert json.loads(run(capsys, *place.args("list", "ts-list"))[1]) == ["a", "b"]
        assert sorted(run(capsys, *place.args("subscriptions"))[1].splitlines()) == [
            "ts:thread:1",
            "ts:thread:2",
        ]
    finally:
        with place.state() as state:
            state.clear()


# -- top in a real terminal ---------------------------------------------------------------


class Screen:
    """Just enough of a terminal to read ``top``'s screen back: text, newlines, and the
    escapes it uses (cursor home, clear screen, clear to end of line / screen)."""

    CSI = re.compile(r"\x1b\[(\??[0-9;]*)([A-Za-z])")

    def __init__(self, rows: int, columns: int) -> None:
        self.rows, self.columns = rows, columns
        self.lines = [""] * rows
        self.row = self.col = 0

    def feed(self, text: str) -> None:
        at = 0
        for found in self.CSI.finditer(text):
            self._text(text[at : found.start()])
            self._escape(found.group(1), found.group(2))
            at = found.end()
        self._text(text[at:])

    def _text(self, text: str) -> None:
        for ch in text:
            if ch == "\n":
                self.row, self.col = min(self.row + 1, self.rows - 1), 0
            elif ch == "\r":
                self.col = 0
            else:
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[: self.col] + ch + line[self.col + 1 :]
                self.col += 1

    def _escape(self, params: str, final: str) -> None:
        if final == "H":
            self.row = self.col = 0
        elif final == "J":
            if params == "2":
                self.lines = [""] * self.rows
            else:
                self.lines[self.row] = self.lines[self.row][: self.col]
                self.lines[self.row + 1 :] = [""] * (self.rows - self.row - 1)
        elif final == "K":
            self.lines[self.row] = self.lines[self.row][: self.col]

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.lines).rstrip() + "\n"


opened: list[int] = []  # pseudo-terminals left open for a running process


def _in_terminal(
    argv: list[str], *, until: str | None = None, deadline_s: float = 30.0
) -> tuple[subprocess.Popen[bytes], bytes]:
    """Run ``python -m chat_state ARGV`` with a pseudo-terminal (100x30) as its stdin,
    stdout and stderr; → (the process, all it wrote, or what it wrote until ``until``
    showed, if given). Bounded by ``deadline_s``."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    # Without COLUMNS and LINES, the size is the terminal's own.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "chat_state", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    written = b""
    ends = time.monotonic() + deadline_s
    try:
        while time.monotonic() < ends:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                written += chunk
                if until is not None and until.encode() in written:
                    break
            elif process.poll() is not None:
                break
        else:
            process.kill()
            pytest.fail(f"no end in {deadline_s} s; it wrote {written[-2000:]!r}")
    finally:
        if until is None:
            os.close(master)
        else:
            opened.append(master)  # the caller closes it once the process has ended
    return process, written


def test_top_redraws_in_place_on_a_terminal(redis_url: str) -> None:
    place = Where("standalone", redis_url, f"cli-pty-{uuid.uuid4().hex[:10]}")
    with place.state() as state:
        seed(state)
    try:
        process, written = _in_terminal(place.args("top", "--iterations", "2", "--interval", "0.1"))
        assert process.wait(10) == 0
        text = written.decode()
        assert text.count("\x1b[H") == 3  # the first clear, then one redraw per refresh
        assert text.count("\x1b[2J") == 1
        assert text.endswith("\x1b[?25h")  # the cursor shown again
        screen = Screen(30, 100)
        screen.feed(text.replace("\r\n", "\n"))
        shown = screen.text()
        assert shown.startswith(f"chat-state top: prefix {place.prefix!r} on {redis_url}")
        assert re.search(r"^127\.0\.0\.1:\d+ +\d+\.\d (KiB|MiB) +\d+ +\d+$", shown, re.M)
        assert re.search(r"^subscriptions +4$", shown, re.M)
        assert re.search(r"^locks held +3$", shown, re.M)
        assert re.search(r"^queues +3$", shown, re.M)
        assert re.search(r"^slack:C1:1\.1 +4  3 min ago$", shown, re.M)
        assert shown.count("chat-state top: ") == 1  # redrawn in place, not scrolled
        assert "Traceback" not in text
    finally:
        with place.state() as state:
            state.clear()


def test_top_ends_on_ctrl_c_with_status_0(redis_url: str) -> None:
    place = Where("standalone", redis_url, f"cli-pty-{uuid.uuid4().hex[:10]}")
    process, written = _in_terminal(place.args("top", "--interval", "0.2"), until="subscriptions")
    try:
        assert b"subscriptions" in written
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        while opened:
            os.close(opened.pop())


# -- errors -------------------------------------------------------------------------------


PASSWORD = "hunter2-s3cret"


def test_server_down_is_exit_1_with_the_redacted_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://bot:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for command in (["stats"], ["locks"], ["get", "k"], ["health"], ["top", "--iterations", "1"]):
        status, out, err = run(capsys, *command, "--url", url, "--prefix", "p")
        assert (status, out) == (1, ""), command
        assert err.startswith("chat-state: error: cannot connect to 127.0.0.1:")
        assert f"(redis://***@127.0.0.1:{url.rsplit(':', 1)[1]})" in err
        assert PASSWORD not in err
        assert err.count("\n") == 1


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    try:
        with RedisServer(["--requirepass", PASSWORD]) as server:
            yield server
    except ServerUnavailable as exc:
        _unavailable(str(exc))


def test_passwords_are_never_printed(
    password_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = f"redis://:{PASSWORD}@127.0.0.1:{password_server.port}/0"
    status, out, err = run(capsys, "health", "--url", good, "--prefix", "p")
    assert status == 0
    assert f"redis://***@127.0.0.1:{password_server.port}/0" in out
    assert PASSWORD not in out + err
    wrong = f"redis://:not-{PASSWORD}@127.0.0.1:{password_server.port}/0"
    status, out, err = run(capsys, "stats", "--url", wrong, "--prefix", "p")
    assert (status, out) == (1, "")
    assert err.startswith("chat-state: error: ")
    assert "redis://***@127.0.0.1" in err
    assert PASSWORD not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--url", f"nope://u:{PASSWORD}@x"], "unknown URL scheme nope://"),
        (["--url", f"redis://:{PASSWORD}@x/0?bogus=1"], "unknown URL option 'bogus'"),
        (["--url", "memory://a/b"], "a memory URL is memory:// or memory://NAME"),
        (["--url", "redis://x", "--driver", "nope"], "unknown driver 'nope'"),
    ],
)
def test_bad_url_or_driver_is_a_usage_error(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "stats", *argv)
    assert (status, out) == (2, "")
    assert err.startswith(f"chat-state: error: {says}")
    assert PASSWORD not in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["locks", "--limit", "0"],
        ["queues", "--limit", "x"],
        ["top", "--interval", "0"],
        ["top", "--iterations", "-1"],
        ["get"],
        ["stats", "--limit", "3"],
        ["nonsense"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


# -- the URL, the version, python -m ------------------------------------------------------


def test_url_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = (f"memory://{uuid.uuid4().hex}" for _ in range(2))
    for url, thread in ((first, "from-chat-state-url"), (second, "from-redis-url")):
        with State.from_url(url, key_prefix="p") as state:
            state.subscribe(thread)
    monkeypatch.setenv("REDIS_URL", second)
    monkeypatch.setenv("CHAT_STATE_URL", first)
    assert run(capsys, "subscriptions", "--prefix", "p")[1:] == ("from-chat-state-url\n", "")
    monkeypatch.delenv("CHAT_STATE_URL")
    assert run(capsys, "subscriptions", "--prefix", "p")[1:] == ("from-redis-url\n", "")
    assert (
        run(capsys, "subscriptions", "--prefix", "p", "--url", first)[1] == "from-chat-state-url\n"
    )
    monkeypatch.delenv("REDIS_URL")
    status, out, err = run(capsys, "subscriptions", "--prefix", "p")
    assert (status, out) == (0, "")
    assert err.startswith(
        "chat-state: note: no --url, CHAT_STATE_URL or REDIS_URL: looking at memory://"
    )
    for url in (first, second):
        store_for_url(url).flush()


def test_common_options_before_or_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        state.subscribe("t1")
    for argv in (
        ["--url", url, "--prefix", "p", "--json", "subscriptions"],
        ["--url", url, "subscriptions", "--prefix", "p", "--json"],
        ["subscriptions", "--url", url, "--prefix", "p", "--json"],
        # given twice, the one after the command's name wins (it was given last)
        [
            *("--url", "memory://elsewhere", "--prefix", "q", "subscriptions"),
            *("--url", url, "--prefix", "p", "--json"),
        ],
    ):
        assert run(capsys, *argv) == (0, '{"thread_id": "t1"}\n', ""), argv
    # what is given before the name is not undone by the command's defaults
    status, out, _ = run(capsys, "--prefix", "p", "--url", url, "stats")
    assert (status, out.splitlines()[0]) == (0, f"chat-state stats: prefix 'p' on {url}")
    store_for_url(url).flush()


def test_demo_takes_url_and_json_before_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    status, out, _ = run(capsys, "--url", url, "--json", "demo", "--messages", "20")
    assert status == 0
    assert json.loads(out)["backend"].startswith(f"AsyncState(url='{url}'")
    for option in ("--prefix", "--driver"):
        with pytest.raises(SystemExit) as exited:
            cli.main([option, "x", "demo"])
        assert exited.value.code == 2
        assert f"demo does not take {option}" in capsys.readouterr().err
    store_for_url(url).flush()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"chat-state {chat_state.__version__}\n"


def test_python_dash_m(tmp_path: Any) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "chat_state", "get", "k", "--url", "memory://x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert (
        done.stderr == "chat-state: error: no value at key 'k' (prefix 'chat-sdk' on memory://x)\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "chat_state", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for command in (
        "stats",
        "subscriptions",
        "locks",
        "queues",
        "get",
        "list",
        "health",
        "top",
        "clear",
        "demo",
    ):
        assert command in done.stdout


# -- terminal niceties --------------------------------------------------------------------


def test_control_characters_in_thread_ids_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        state.subscribe("evil\x1b[2J\nthread")
        state.acquire_lock("evil\x1b[2J\nthread", 60_000)
    for command in ("subscriptions", "locks"):
        out = run(capsys, command, "--url", url, "--prefix", "p")[1]
        assert "\x1b" not in out
        assert "evil\\x1b[2J\\nthread" in out
    raw = json_lines(run(capsys, "subscriptions", "--json", "--url", url, "--prefix", "p")[1])
    assert raw == [{"thread_id": "evil\x1b[2J\nthread"}]  # JSON carries the id as it is
    store_for_url(url).flush()


def test_wide_characters_keep_the_columns_aligned() -> None:
    lines = cli.table(("THREAD", "DEPTH"), [("日本", "1"), ("ab", "10")], ".R")
    assert lines == ["THREAD  DEPTH", "日本        1", "ab         10"]


def test_progress_only_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with State.from_url(url, key_prefix="p") as state:
        for n in range(5):
            state.acquire_lock(f"t{n}", 60_000 + 10_000 * n)
    monkeypatch.setattr(cli.Progress, "EVERY_S", 0.0)  # draw on every item
    status, out, err = run(capsys, "locks", "--url", url, "--prefix", "p")
    assert (status, err) == (0, "")  # stderr is not a terminal here
    monkeypatch.setattr(cli, "is_terminal", lambda stream: stream is sys.stderr)
    status, out_tty, err = run(capsys, "locks", "--url", url, "--prefix", "p")
    assert status == 0
    # progress never goes to stdout
    assert [row.split()[0] for row in out_tty.splitlines()] == [
        "THREAD",
        "t0",
        "t1",
        "t2",
        "t3",
        "t4",
    ]
    assert [row.split()[0] for row in out.splitlines()] == ["THREAD", "t0", "t1", "t2", "t3", "t4"]
    assert "\rscanning… 5 locks\x1b[K" in err
    assert err.endswith("\r\x1b[K")  # and is wiped when the table is printed
    store_for_url(url).flush()


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (850, "850 ms"),
        (29_999, "29.9 s"),
        (240_000, "4 min"),
        (299_999, "4 min"),
        (9_000_000, "2.5 h"),
        (259_200_000, "3.0 d"),
    ],
)
def test_durations(ms: int, text: str) -> None:
    assert cli.duration(ms) == text


def test_ages() -> None:
    now = 1_000_000_000
    assert cli.age(None, now) == "-"
    assert cli.age(now - 500, now) == "just now"
    assert cli.age(now - 180_000, now) == "3 min ago"
    assert cli.age(now + 5_000, now) == "in 5.0 s"
    assert cli.ttl(-1) == "no expiry"


def test_a_key_the_operations_refuse_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "get", "", "--url", "memory://refused")
    assert (status, out) == (2, "")
    assert err == "chat-state: error: key must not be empty (memory://refused)\n"


def test_top_shows_a_failed_refresh_and_carries_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = State.stats
    calls = iter([False, True, False])

    def flaky(self: State) -> Any:
        if next(calls):
            raise BackendError("redis command failed: connection lost")
        return stats(self)

    monkeypatch.setattr(State, "stats", flaky)
    argv = ["top", "--iterations", "3", "--interval", "0.01", "--url", "memory://flaky"]
    status, out, err = run(capsys, *argv)
    assert (status, err) == (0, "")
    shots = out.split("chat-state top: ")[1:]
    assert len(shots) == 3
    assert "error: redis command failed: connection lost (memory://flaky)" in shots[1]
    assert re.search(r"^subscriptions +0$", shots[2], re.M)
    calls = iter([False, True])
    assert cli.main([*argv[:2], "2", *argv[3:]]) == 1  # the last refresh failed
    capsys.readouterr()


def test_a_reader_that_stops_early_is_no_error(redis_url: str) -> None:
    prefix = f"cli-pipe-{uuid.uuid4().hex[:10]}"
    with State.from_url(redis_url, key_prefix=prefix) as state:
        client = raw_client(redis_url)
        try:  # more than a pipe's buffer of output
            client.sadd(f"{prefix}:subscriptions", *(f"thread-{n:06}" for n in range(20_000)))
        finally:
            client.close()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chat_state",
                    "subscriptions",
                    "--url",
                    redis_url,
                    "--prefix",
                    prefix,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert process.stdout is not None
            assert process.stdout.readline().startswith(b"thread-")
            process.stdout.close()  # as `| head -1` does
            _, err = process.communicate(timeout=60)
            assert process.returncode == 0
            assert err == b""
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
            state.clear()


def test_a_value_no_encoding_can_print_is_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    """JSON.stringify writes a lone surrogate as ``\\ud800``: it reads back as one, which
    no output encoding takes. The CLI escapes it rather than fail."""
    url = f"memory://{uuid.uuid4().hex}"
    store_for_url(url).set("p:cache:odd", '"a\\ud800b"')
    for extra in ([], ["--json"]):
        status, out, err = run(capsys, "get", "odd", "--prefix", "p", "--url", url, *extra)
        assert (status, err) == (0, "")
        assert "\\ud800" in out
