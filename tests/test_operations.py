"""The sans-IO operation layer: each operation a prepared command, finished by hand
with scripted replies (no server)."""

from __future__ import annotations

import enum
import threading
from typing import Any

import pytest

from chat_state import AsyncState, ConfigurationError, Lock, QueueEntry, SerializationError
from chat_state.core import operations as ops
from chat_state.core.commands import script_call, set_options
from chat_state.core.layout import Layout
from chat_state.core.scripts import EXTEND, PUSH, RELEASE

KEYS = Layout("p")


def run(prepared: ops.Prepared[Any], reply: Any) -> tuple[str | None, tuple[Any, ...], Any]:
    """``prepared`` answered with ``reply``: → (its key, its command, its result)."""
    key, args, finish = prepared
    return key, args, finish(reply)


def test_keys_layout() -> None:
    assert KEYS.subscriptions == "p:subscriptions"
    assert KEYS.lock("slack:C1:1.2") == "p:lock:slack:C1:1.2"
    assert KEYS.cache("user:1") == "p:cache:user:1"
    assert KEYS.list("h") == "p:list:h"
    assert KEYS.queue("t") == "p:queue:t"
    assert Layout().prefix == "chat-sdk"
    assert Layout("").subscriptions == "chat-sdk:subscriptions"


def test_queue_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "now_ms", lambda: 0)
    snake = Layout("p", "chat_sdk")
    _, args, _ = run(ops.enqueue(snake, "t", QueueEntry(1, 2, "m"), 3), 1)
    assert args[4] == '{"enqueued_at":1,"expires_at":2,"message":"m"}'
    with pytest.raises(ConfigurationError, match="queue_format must be one of"):
        Layout("p", "camel")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="queue_format"):
        AsyncState.from_url("memory://", queue_format="snake")  # type: ignore[arg-type]


def test_subscription_commands() -> None:
    assert run(ops.subscribe(KEYS, "t"), 1) == (
        "p:subscriptions",
        ("SADD", "p:subscriptions", "t"),
        None,
    )
    assert run(ops.unsubscribe(KEYS, "t"), 0)[1] == ("SREM", "p:subscriptions", "t")
    assert run(ops.is_subscribed(KEYS, "t"), 1) == (
        "p:subscriptions",
        ("SISMEMBER", "p:subscriptions", "t"),
        True,
    )
    assert run(ops.is_subscribed(KEYS, "t"), False)[2] is False  # RESP3's boolean
    assert run(ops.is_subscribed(KEYS, "t"), 0)[2] is False


def test_acquire_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "now_ms", lambda: 1_000)
    key, args, lock = run(ops.acquire_lock(KEYS, "t", 500), "OK")
    command, lock_key, token, px, ttl, nx = args
    assert (key, command, lock_key, px, ttl, nx) == ("p:lock:t", "SET", "p:lock:t", "PX", 500, "NX")
    assert lock == Lock("t", str(token), 1_500)
    assert run(ops.acquire_lock(KEYS, "t", 500), True)[2] is not None  # redis-py's OK
    assert run(ops.acquire_lock(KEYS, "t", 500), None)[2] is None
    assert run(ops.acquire_lock(KEYS, "t", 500), False)[2] is None


def test_json_nested_deeper_than_python_reads_is_our_error() -> None:
    # (Python 3.13's parser reads 5,000 levels; none reads 100,000)
    with pytest.raises(SerializationError, match="nests deeper"):
        run(ops.get(KEYS, "k"), "[" * 100_000 + "]" * 100_000)


def test_tokens_are_unique_and_long() -> None:
    tokens = {ops.new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(token) - len("cs_") == 32 for token in tokens)


def test_expires_at_is_read_before_the_command_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100, 999_999])
    monkeypatch.setattr(ops, "now_ms", lambda: next(clock))
    _, _, finish = ops.acquire_lock(KEYS, "t", 50)  # the clock is read by now
    lock = finish("OK")
    assert lock is not None
    assert lock.expires_at == 150  # a later reading is not used


def test_release_and_extend_are_scripts() -> None:
    lock = Lock("t", "tok", 0)
    assert run(ops.release_lock(KEYS, lock), 1) == (
        "p:lock:t",
        ("EVALSHA", RELEASE.sha, 1, "p:lock:t", "tok"),
        None,
    )
    key, args, extended = run(ops.extend_lock(KEYS, lock, 700), 1)
    assert (key, args) == ("p:lock:t", ("EVALSHA", EXTEND.sha, 1, "p:lock:t", "tok", 700))
    assert extended is True
    assert run(ops.extend_lock(KEYS, lock, 700), 0)[2] is False
    assert run(ops.force_release_lock(KEYS, "t"), 1)[1] == ("DEL", "p:lock:t")


def test_a_script_is_sent_in_full_after_noscript() -> None:
    _, args, _ = ops.release_lock(KEYS, Lock("t", "tok", 0))
    assert ops.evaluated(args) == ("EVAL", RELEASE.source, 1, "p:lock:t", "tok")


def test_cache_commands() -> None:
    assert run(ops.get(KEYS, "k"), '{"a":1}') == ("p:cache:k", ("GET", "p:cache:k"), {"a": 1})
    assert run(ops.get(KEYS, "k"), None)[2] is None
    assert run(ops.get(KEYS, "k"), "oops")[2] == "oops"
    assert run(ops.set(KEYS, "k", {"é": [1.5]}), "OK")[1] == ("SET", "p:cache:k", '{"é":[1.5]}')
    assert run(ops.set(KEYS, "k", 1, 10), "OK")[1] == ("SET", "p:cache:k", "1", "PX", 10)
    key, args, written = run(ops.set_if_not_exists(KEYS, "k", True, 60_000), None)
    assert (key, args) == ("p:cache:k", ("SET", "p:cache:k", "true", "PX", 60_000, "NX"))
    assert written is False
    assert run(ops.set_if_not_exists(KEYS, "k", True), "OK")[1:] == (
        ("SET", "p:cache:k", "true", "NX"),
        True,
    )
    assert run(ops.set_if_not_exists(KEYS, "k", True), True)[2] is True  # redis-py's OK
    assert run(ops.delete(KEYS, "k"), 0)[1] == ("DEL", "p:cache:k")


def test_list_commands() -> None:
    _, args, _ = run(ops.append_to_list(KEYS, "h", "x", max_length=5, ttl_ms=9), 1)
    assert args == ("EVALSHA", PUSH.sha, 1, "p:list:h", '"x"', 5, 9)
    _, args, _ = run(ops.append_to_list(KEYS, "h", "x"), 1)
    assert args == ("EVALSHA", PUSH.sha, 1, "p:list:h", '"x"', 0, 0)
    assert run(ops.get_list(KEYS, "h"), ["1", '"a"', "raw"]) == (
        "p:list:h",
        ("LRANGE", "p:list:h", 0, -1),
        [1, "a", "raw"],
    )


def test_queue_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "now_ms", lambda: 10_000)
    key, args, depth = run(ops.enqueue(KEYS, "t", QueueEntry(9_000, 200_000, {"m": 1}), 3), 2)
    assert (key, args, depth) == (
        "p:queue:t",
        (
            "EVALSHA",
            PUSH.sha,
            1,
            "p:queue:t",
            '{"enqueuedAt":9000,"expiresAt":200000,"message":{"m":1}}',
            3,
            190_000,
        ),
        2,
    )
    _, args, _ = run(ops.enqueue(KEYS, "t", QueueEntry(9_000, 11_000, "m"), 3), 1)
    assert args[-1] == 60_000
    text = '{"enqueuedAt":1,"expiresAt":2,"message":"m"}'
    assert run(ops.dequeue(KEYS, "t"), text) == (
        "p:queue:t",
        ("LPOP", "p:queue:t"),
        QueueEntry(1, 2, "m"),
    )
    assert run(ops.dequeue(KEYS, "t"), None)[2] is None
    # TypeScript accepts a fractional time; it is read as whole milliseconds.
    fractional = '{"enqueuedAt":1.5,"expiresAt":2.0,"message":"m"}'
    assert run(ops.dequeue(KEYS, "t"), fractional)[2] == QueueEntry(1, 2, "m")
    assert run(ops.queue_depth(KEYS, "t"), 4) == ("p:queue:t", ("LLEN", "p:queue:t"), 4)


@pytest.mark.parametrize(
    "operation",
    [
        lambda: ops.subscribe(KEYS, ""),
        lambda: ops.acquire_lock(KEYS, "t", 0),
        lambda: ops.extend_lock(KEYS, Lock("t", "x", 0), -1),
        lambda: ops.release_lock(KEYS, object()),
        lambda: ops.set(KEYS, "k", float("nan")),
        lambda: ops.set(KEYS, "", 1),
        lambda: ops.append_to_list(KEYS, "k", 1, max_length=-2),
        lambda: ops.enqueue(KEYS, "t", QueueEntry(1, 2, 3), -1),
        lambda: ops.enqueue(KEYS, "t", "not an entry", 1),
    ],
)
def test_bad_input_fails_before_any_command_is_prepared(operation: Any) -> None:
    with pytest.raises((ValueError, TypeError, SerializationError)):
        operation()


class Color(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 5


def test_enum_members_are_sent_as_their_plain_values() -> None:
    """A str or int subclass goes out as the text or number it stands for."""
    _, args, lock = run(ops.acquire_lock(KEYS, Color.RED, Size.BIG), "OK")
    assert type(lock.thread_id) is str  # the Lock holds what was sent
    assert args[1] == "p:lock:red"
    assert type(args[1]) is str
    assert args[4] == 5
    assert type(args[4]) is int


def test_a_value_that_contains_itself_is_refused_as_such() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="Circular reference detected"):
        ops.set(KEYS, "k", {"a": cyclic})

    class Itself:
        def to_json(self) -> Any:
            return self

    with pytest.raises(SerializationError, match="cannot be stored as JSON"):
        ops.set(KEYS, "k", Itself())
    deep: Any = "x"
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="recursion"):
        ops.set(KEYS, "k", deep)


def test_threads_encoding_one_shared_value_never_see_each_other() -> None:
    """The encoder keeps no state between values: threads that encode the same dict at
    once all get its text (a shared memo of "containers being encoded" would report a
    false cycle)."""
    shared = {"a": [{"b": i} for i in range(200)], "c": {"d": [1, 2, 3]}}
    expected = ops.set(KEYS, "k", shared)[1]
    failures: list[BaseException] = []

    def encode_many() -> None:
        try:
            for _ in range(300):
                assert ops.set(KEYS, "k", shared)[1] == expected
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=encode_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []


def test_the_command_readers_that_backends_share() -> None:
    assert set_options(("SET", "k", "v")) == (None, False)
    assert set_options(("SET", "k", "v", "PX", 60_000, "NX")) == (60_000, True)
    assert set_options(("SET", "k", "v", "nx", "px", "5")) == (5, True)
    for refused in [("SET", "k", "v", "XX"), ("SET", "k", "v", "PX"), ("SET", "k", "v", "EX", 1)]:
        with pytest.raises(ValueError, match="ERR syntax error"):
            set_options(refused)
    assert script_call(("EVALSHA", "abc", 1, "key", "a", 2)) == ("abc", ["key"], ["a", 2])
    assert script_call(("EVAL", "return 1", 0)) == ("return 1", [], [])
