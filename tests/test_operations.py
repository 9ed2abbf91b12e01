"""The sans-IO operation layer, driven by hand with scripted replies (no server)."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from chat_state import AsyncState, ConfigurationError, Lock, QueueEntry, SerializationError
from chat_state import operations as ops
from chat_state._scripts import EXTEND, PUSH, RELEASE
from chat_state.operations import Command, Layout, Operation, ScriptCall

KEYS = Layout("p")


def drive(operation: Operation[Any], replies: list[Any]) -> tuple[list[Any], Any]:
    """Run ``operation``, answering its calls with ``replies``; → (calls, result)."""
    calls: list[Any] = []
    try:
        call = next(operation)
        for reply in replies:
            calls.append(call)
            call = operation.send(reply)
    except StopIteration as done:
        return calls, done.value
    raise AssertionError(f"operation wanted more replies after {calls}")


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
    calls, _ = drive(ops.enqueue(snake, "t", QueueEntry(1, 2, "m"), 3), [1])
    assert calls[0].args[0] == '{"enqueued_at":1,"expires_at":2,"message":"m"}'
    with pytest.raises(ConfigurationError, match="queue_format must be one of"):
        Layout("p", "camel")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="queue_format"):
        AsyncState.from_url("memory://", queue_format="snake")  # type: ignore[arg-type]


def test_subscription_commands() -> None:
    assert drive(ops.subscribe(KEYS, "t"), [1]) == (
        [Command("sadd", ("p:subscriptions", "t"))],
        None,
    )
    assert drive(ops.unsubscribe(KEYS, "t"), [0])[0] == [Command("srem", ("p:subscriptions", "t"))]
    assert drive(ops.is_subscribed(KEYS, "t"), [1])[1] is True
    assert drive(ops.is_subscribed(KEYS, "t"), [False])[1] is False


def test_acquire_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "now_ms", lambda: 1_000)
    calls, lock = drive(ops.acquire_lock(KEYS, "t", 500), [True])
    [call] = calls
    assert call.name == "set"
    key, token, ttl, nx = call.args
    assert (key, ttl, nx) == ("p:lock:t", 500, True)
    assert lock == Lock("t", token, 1_500)
    assert drive(ops.acquire_lock(KEYS, "t", 500), [None])[1] is None
    assert drive(ops.acquire_lock(KEYS, "t", 500), [False])[1] is None


def test_json_nested_deeper_than_python_reads_is_our_error() -> None:
    with pytest.raises(SerializationError, match="nests deeper"):
        drive(ops.get(KEYS, "k"), ["[" * 5000 + "]" * 5000])


def test_tokens_are_unique_and_long() -> None:
    tokens = {ops.new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(token) - len("cs_") == 32 for token in tokens)


def test_expires_at_is_read_before_the_command_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100, 999_999])
    monkeypatch.setattr(ops, "now_ms", lambda: next(clock))
    operation = ops.acquire_lock(KEYS, "t", 50)
    next(operation)  # the clock is read by now; a later reading must not be used
    with pytest.raises(StopIteration) as done:
        operation.send(True)
    assert done.value.value.expires_at == 150


def test_release_and_extend_are_scripts() -> None:
    lock = Lock("t", "tok", 0)
    assert drive(ops.release_lock(KEYS, lock), [1])[0] == [
        ScriptCall(RELEASE, ("p:lock:t",), ("tok",))
    ]
    calls, extended = drive(ops.extend_lock(KEYS, lock, 700), [1])
    assert calls == [ScriptCall(EXTEND, ("p:lock:t",), ("tok", 700))]
    assert extended is True
    assert drive(ops.extend_lock(KEYS, lock, 700), [0])[1] is False
    assert drive(ops.force_release_lock(KEYS, "t"), [1])[0] == [Command("delete", ("p:lock:t",))]


def test_cache_commands() -> None:
    assert drive(ops.get(KEYS, "k"), ['{"a":1}']) == ([Command("get", ("p:cache:k",))], {"a": 1})
    assert drive(ops.get(KEYS, "k"), [None])[1] is None
    assert drive(ops.get(KEYS, "k"), ["oops"])[1] == "oops"
    assert drive(ops.set(KEYS, "k", {"é": [1.5]}), [True])[0] == [
        Command("set", ("p:cache:k", '{"é":[1.5]}', None, False))
    ]
    assert drive(ops.set(KEYS, "k", 1, 10), [True])[0] == [
        Command("set", ("p:cache:k", "1", 10, False))
    ]
    calls, written = drive(ops.set_if_not_exists(KEYS, "k", True, 60_000), [None])
    assert calls == [Command("set", ("p:cache:k", "true", 60_000, True))]
    assert written is False
    assert drive(ops.delete(KEYS, "k"), [0])[0] == [Command("delete", ("p:cache:k",))]


def test_list_commands() -> None:
    calls, _ = drive(ops.append_to_list(KEYS, "h", "x", max_length=5, ttl_ms=9), [1])
    assert calls == [ScriptCall(PUSH, ("p:list:h",), ('"x"', 5, 9))]
    calls, _ = drive(ops.append_to_list(KEYS, "h", "x"), [1])
    assert calls == [ScriptCall(PUSH, ("p:list:h",), ('"x"', 0, 0))]
    assert drive(ops.get_list(KEYS, "h"), [["1", '"a"', "raw"]]) == (
        [Command("lrange", ("p:list:h", 0, -1))],
        [1, "a", "raw"],
    )


def test_queue_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "now_ms", lambda: 10_000)
    calls, depth = drive(ops.enqueue(KEYS, "t", QueueEntry(9_000, 200_000, {"m": 1}), 3), [2])
    assert calls == [
        ScriptCall(
            PUSH,
            ("p:queue:t",),
            ('{"enqueuedAt":9000,"expiresAt":200000,"message":{"m":1}}', 3, 190_000),
        )
    ]
    assert depth == 2
    calls, _ = drive(ops.enqueue(KEYS, "t", QueueEntry(9_000, 11_000, "m"), 3), [1])
    assert calls[0].args[2] == 60_000
    text = '{"enqueuedAt":1,"expiresAt":2,"message":"m"}'
    assert drive(ops.dequeue(KEYS, "t"), [text]) == (
        [Command("lpop", ("p:queue:t",))],
        QueueEntry(1, 2, "m"),
    )
    assert drive(ops.dequeue(KEYS, "t"), [None])[1] is None
    # TypeScript accepts a fractional time; it is read as whole milliseconds.
    fractional = '{"enqueuedAt":1.5,"expiresAt":2.0,"message":"m"}'
    assert drive(ops.dequeue(KEYS, "t"), [fractional])[1] == QueueEntry(1, 2, "m")
    assert drive(ops.queue_depth(KEYS, "t"), [4]) == ([Command("llen", ("p:queue:t",))], 4)


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
def test_bad_input_fails_before_any_call(operation: Any) -> None:
    with pytest.raises((ValueError, TypeError, SerializationError)):
        next(operation())


class Color(str, enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 5


def test_enum_members_are_sent_as_their_plain_values() -> None:
    """A str or int subclass goes out as the text or number it stands for."""
    calls, lock = drive(ops.acquire_lock(KEYS, Color.RED, Size.BIG), [True])
    assert type(lock.thread_id) is str  # the Lock holds what was sent
    assert calls[0].args[0] == "p:lock:red"
    assert type(calls[0].args[0]) is str
    assert calls[0].args[2] == 5
    assert type(calls[0].args[2]) is int
