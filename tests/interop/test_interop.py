"""chat-state and the real TypeScript adapters sharing one Redis.

Each test runs against ``@chat-adapter/state-ioredis`` and ``@chat-adapter/state-redis``
(the ``ts`` fixture, a Node.js process), with chat-state (``py``) on the same server
and key prefix. Data written by either side is read by the other; where both write
the same value the stored text is compared byte for byte (``raw``, redis-py).

Differences found are pinned down here, as passing tests: the ones chat-state keeps
on purpose (integral floats, integer-like key order, JavaScript's 2**53 precision,
a TTL of 0 refused) and how each side reads the other's form.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
import redis
from chat_sdk.types import Author, Message, MessageMetadata

from chat_state import Lock, QueueEntry, SerializationError

from .bridge import TSBridge, TSError
from .conftest import FACADES

pytestmark = pytest.mark.anyio

both_facades = pytest.mark.parametrize("py", FACADES, indirect=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def to_ts(lock: Lock) -> dict[str, Any]:
    """A chat-state lock in the TypeScript shape."""
    return {"threadId": lock.thread_id, "token": lock.token, "expiresAt": lock.expires_at}


def from_ts(lock: dict[str, Any]) -> Lock:
    """A TypeScript lock as a chat-state Lock."""
    return Lock(lock["threadId"], lock["token"], lock["expiresAt"])


def key(ts: TSBridge, kind: str, name: str) -> str:
    return f"{ts.prefix}:{kind}:{name}"


THREAD = "slack:C0123ABCD:1717171717.123456"
ODD_THREAD = "discord:Zoë 日本:👋 space"

# Values both languages write as the same text, and read back equal.
SAME_TEXT: list[Any] = [
    "Zoë 日本 👋",
    "",
    'quotes " and \\ backslash / slash\n\t\r\b\f',
    "\x00\x01\x1f\x7f \u2028\u2029 </script> 👩‍👩‍👧 é",
    0,
    -1,
    42,
    2**53 - 1,
    -(2**53 - 1),
    -12.75,
    0.1,
    0.30000000000000004,
    123.456,
    -0.5,
    1.5e300,
    -2.5e-10,
    0.0001,
    -9.9e-10,
    5e-324,
    1.7976931348623157e308,
    True,
    False,
    None,
    [],
    {},
    [1, -2, 3.5, -0.25, True, False, None, "x", [], {}],
    {"z": 1, "a": 2, "m": [{"deep": {"deeper": [None, "Zoë"]}}]},
    {
        "user": {"name": "Zoë 日本 👋", "tags": ["a", "b"], "active": True, "manager": None},
        "score": -12.75,
        "ratio": 0.001,
        "count": 42,
        "neg": -7,
        "nested": {"list": [[1, 2], [3, [4, [5]]]], "empty": {}, "flag": False},
    },
]

# Values that read back equal both ways but are written as different text (below).
SAME_VALUE_ONLY: list[Any] = [
    1.0,
    -3.0,
    1e16,
    -0.0,
    1e-05,
    1.5e-07,
    {"b": 1, "10": 2, "2": 3},
]


def _ids(values: list[Any]) -> list[str]:
    return [f"{i}:{type(v).__name__}" for i, v in enumerate(values)]


# -- subscriptions -----------------------------------------------------------------------


async def test_subscriptions_are_shared(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    await py.subscribe(THREAD)
    assert ts.call("isSubscribed", THREAD) is True
    assert ts.call("isSubscribed", ODD_THREAD) is False
    ts.call("subscribe", ODD_THREAD)
    assert await py.is_subscribed(ODD_THREAD) is True
    assert raw.smembers(f"{ts.prefix}:subscriptions") == {THREAD, ODD_THREAD}

    ts.call("unsubscribe", THREAD)
    assert await py.is_subscribed(THREAD) is False
    await py.unsubscribe(ODD_THREAD)
    assert ts.call("isSubscribed", ODD_THREAD) is False
    assert raw.exists(f"{ts.prefix}:subscriptions") == 0


# -- locks -------------------------------------------------------------------------------


@both_facades
async def test_a_python_lock_blocks_typescript(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    lock = await py.acquire_lock(THREAD, 30_000)
    assert lock is not None
    assert raw.get(key(ts, "lock", THREAD)) == lock.token
    assert ts.call("acquireLock", THREAD, 30_000) is None

    await py.release_lock(lock)
    taken = ts.call("acquireLock", THREAD, 30_000)
    assert taken is not None
    assert taken["threadId"] == THREAD
    assert taken["token"].startswith(f"{ts.adapter}_")
    assert raw.get(key(ts, "lock", THREAD)) == taken["token"]
    assert await py.acquire_lock(THREAD, 30_000) is None


@both_facades
async def test_a_typescript_lock_blocks_python(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    before = now_ms()
    taken = ts.call("acquireLock", ODD_THREAD, 30_000)
    assert taken is not None
    assert before + 30_000 <= taken["expiresAt"] <= now_ms() + 30_000
    assert await py.acquire_lock(ODD_THREAD, 30_000) is None
    assert 0 < raw.pttl(key(ts, "lock", ODD_THREAD)) <= 30_000

    ts.call("releaseLock", taken)
    assert raw.exists(key(ts, "lock", ODD_THREAD)) == 0
    lock = await py.acquire_lock(ODD_THREAD, 30_000)
    assert lock is not None
    assert ts.call("acquireLock", ODD_THREAD, 30_000) is None


@both_facades
async def test_python_ignores_a_foreign_token_on_a_typescript_lock(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    taken = ts.call("acquireLock", THREAD, 5_000)
    assert taken is not None
    forged = Lock(THREAD, taken["token"] + "x", taken["expiresAt"])
    await py.release_lock(forged)
    assert await py.extend_lock(forged, 60_000) is False
    assert raw.get(key(ts, "lock", THREAD)) == taken["token"]
    assert 0 < raw.pttl(key(ts, "lock", THREAD)) <= 5_000
    assert await py.acquire_lock(THREAD, 5_000) is None


@both_facades
async def test_typescript_ignores_a_foreign_token_on_a_python_lock(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    lock = await py.acquire_lock(THREAD, 5_000)
    assert lock is not None
    forged = {**to_ts(lock), "token": "ioredis_0_guess"}
    assert ts.call("releaseLock", forged) is None
    assert ts.call("extendLock", forged, 60_000) is False
    assert raw.get(key(ts, "lock", THREAD)) == lock.token
    assert 0 < raw.pttl(key(ts, "lock", THREAD)) <= 5_000
    assert ts.call("acquireLock", THREAD, 5_000) is None


@both_facades
async def test_a_lock_value_works_in_the_other_language(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """The lock is its token: either language can extend or release the other's lock."""
    lock = await py.acquire_lock(THREAD, 1_000)
    assert lock is not None
    assert ts.call("extendLock", to_ts(lock), 60_000) is True
    assert 50_000 < raw.pttl(key(ts, "lock", THREAD)) <= 60_000  # fresh TTL from now
    ts.call("releaseLock", to_ts(lock))
    assert raw.exists(key(ts, "lock", THREAD)) == 0

    taken = ts.call("acquireLock", THREAD, 1_000)
    assert taken is not None
    assert await py.extend_lock(from_ts(taken), 60_000) is True
    assert 50_000 < raw.pttl(key(ts, "lock", THREAD)) <= 60_000
    await py.release_lock(from_ts(taken))
    assert raw.exists(key(ts, "lock", THREAD)) == 0


@both_facades
async def test_force_release_in_typescript_voids_the_python_holder(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    old = await py.acquire_lock(THREAD, 30_000)
    assert old is not None
    ts.call("forceReleaseLock", THREAD)
    assert raw.exists(key(ts, "lock", THREAD)) == 0
    new = ts.call("acquireLock", THREAD, 30_000)
    assert new is not None

    await py.release_lock(old)  # the old holder's release: a no-op
    assert await py.extend_lock(old, 60_000) is False
    assert raw.get(key(ts, "lock", THREAD)) == new["token"]
    assert raw.pttl(key(ts, "lock", THREAD)) <= 30_000
    ts.call("releaseLock", new)
    assert raw.exists(key(ts, "lock", THREAD)) == 0


@both_facades
async def test_force_release_in_python_voids_the_typescript_holder(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    old = ts.call("acquireLock", THREAD, 30_000)
    assert old is not None
    await py.force_release_lock(THREAD)
    assert raw.exists(key(ts, "lock", THREAD)) == 0
    new = await py.acquire_lock(THREAD, 30_000)
    assert new is not None

    ts.call("releaseLock", old)  # the old holder's release: a no-op
    assert ts.call("extendLock", old, 60_000) is False
    assert raw.get(key(ts, "lock", THREAD)) == new.token
    assert raw.pttl(key(ts, "lock", THREAD)) <= 30_000
    await py.release_lock(new)
    assert raw.exists(key(ts, "lock", THREAD)) == 0


async def test_an_expired_lock_is_never_resurrected(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    mine = await py.acquire_lock("t-py", 50)
    theirs = ts.call("acquireLock", "t-ts", 50)
    assert mine is not None
    assert theirs is not None
    await anyio.sleep(0.15)
    assert ts.call("extendLock", to_ts(mine), 60_000) is False
    assert await py.extend_lock(from_ts(theirs), 60_000) is False
    assert raw.exists(key(ts, "lock", "t-py"), key(ts, "lock", "t-ts")) == 0
    assert ts.call("acquireLock", "t-py", 1_000) is not None
    assert await py.acquire_lock("t-ts", 1_000) is not None


# -- cache values ------------------------------------------------------------------------


@both_facades
async def test_values_written_by_python_are_read_by_typescript(ts: TSBridge, py: Any) -> None:
    for i, value in enumerate(SAME_TEXT + SAME_VALUE_ONLY):
        await py.set(f"v{i}", value)
        assert ts.call("get", f"v{i}") == value, value


@both_facades
async def test_values_written_by_typescript_are_read_by_python(ts: TSBridge, py: Any) -> None:
    for i, value in enumerate(SAME_TEXT + SAME_VALUE_ONLY):
        ts.call("set", f"v{i}", value)
        assert await py.get(f"v{i}") == value, value


@both_facades
@pytest.mark.parametrize("value", SAME_TEXT, ids=_ids(SAME_TEXT))
async def test_stored_text_is_byte_identical(
    ts: TSBridge, py: Any, raw: redis.Redis, value: Any
) -> None:
    ts.call("set", "ts", value)
    await py.set("py", value)
    assert raw.get(key(ts, "cache", "py")) == raw.get(key(ts, "cache", "ts"))
    ts.call("appendToList", "l", value, {"maxLength": 10})
    await py.append_to_list("l", value, max_length=10)
    first, second = raw.lrange(key(ts, "list", "l"), 0, -1)
    assert first == second == raw.get(key(ts, "cache", "ts"))


@both_facades
@pytest.mark.parametrize(
    ("value", "python_text", "typescript_text"),
    [
        (1.0, "1.0", "1"),
        (-3.0, "-3.0", "-3"),
        (1e16, "1e+16", "10000000000000000"),
        (-0.0, "-0.0", "0"),
    ],
)
async def test_integral_floats_differ_in_text_not_in_value(
    ts: TSBridge,
    py: Any,
    raw: redis.Redis,
    value: float,
    python_text: str,
    typescript_text: str,
) -> None:
    """Known and deliberate: a Python float with an integral value keeps its float form
    (``1.0``, ``1e+16``, ``-0.0``); ``JSON.stringify`` writes an integer (and ``0`` for
    -0). Both are the same JSON number: each side reads the other's text as an equal
    number."""
    await py.set("py", value)
    ts.call("set", "ts", value)
    assert raw.get(key(ts, "cache", "py")) == python_text
    assert raw.get(key(ts, "cache", "ts")) == typescript_text
    assert ts.call("get", "py") == value
    from_typescript = await py.get("ts")
    assert from_typescript == value
    assert isinstance(from_typescript, int)  # Python gets an int back from TS text


@pytest.mark.parametrize(
    ("value", "typescript_text"),
    [(1e-05, "0.00001"), (0.0000123, "0.0000123"), (1.5e-07, "1.5e-7"), (2.5e-08, "2.5e-8")],
)
async def test_small_floats_are_byte_identical(
    ts: TSBridge, py: Any, raw: redis.Redis, value: float, typescript_text: str
) -> None:
    ts.call("set", "ts", value)
    await py.set("py", value)
    assert raw.get(key(ts, "cache", "ts")) == typescript_text
    assert raw.get(key(ts, "cache", "py")) == typescript_text


async def test_integer_like_keys_are_ordered_differently(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """Known: a JavaScript object lists integer-like keys first, in numeric order, so
    TypeScript can never write ``{"b":…,"10":…}``; Python keeps insertion order."""
    value = {"b": 1, "10": 2, "2": 3}
    await py.set("py", value)
    ts.call("set", "ts", value)
    assert raw.get(key(ts, "cache", "py")) == '{"b":1,"10":2,"2":3}'
    assert raw.get(key(ts, "cache", "ts")) == '{"2":3,"10":2,"b":1}'
    assert await py.get("ts") == value
    assert ts.call("get", "py") == value


async def test_integers_beyond_2_to_the_53_lose_precision_in_typescript(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """Known, inherent to JavaScript numbers: Python writes every digit; TypeScript
    reads the nearest double (and would write it back rounded)."""
    await py.set("big", 2**53 + 1)
    assert raw.get(key(ts, "cache", "big")) == "9007199254740993"
    assert ts.call("get", "big") == 2**53  # rounded
    await py.set("huge", 10**21)
    assert raw.get(key(ts, "cache", "huge")) == "1000000000000000000000"
    assert ts.call("get", "huge") == 1e21  # JSON.stringify writes it as 1e+21
    raw.set(key(ts, "cache", "digits"), "12345678901234567890")
    assert await py.get("digits") == 12345678901234567890
    assert ts.call("get", "digits") == 12345678901234567000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json {", "not json {"),
        ("", ""),
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("undefined", "undefined"),
        ("{a:1}", "{a:1}"),
        ("[1,]", "[1,]"),
        ("'single'", "'single'"),
        ("01", "01"),
        ("1.", "1."),
        ("\ufeff1", "\ufeff1"),
        ('"tab\tinside"', '"tab\tinside"'),
        ("Zoë 日本 👋", "Zoë 日本 👋"),
        ("  42 \n", 42),
        ('{"a":1,"a":2}', {"a": 2}),
        ('"\\u00e9\\ud83d\\udc4b"', "é👋"),
        ("-0", 0),
    ],
)
async def test_get_of_text_that_may_not_be_json(
    ts: TSBridge, py: Any, raw: redis.Redis, text: str, expected: Any
) -> None:
    """Text written by something else: both return the raw string when it is not JSON,
    and agree on what is."""
    raw.set(key(ts, "cache", "x"), text)
    assert ts.call("get", "x") == expected
    assert await py.get("x") == expected


async def test_lone_surrogates_written_by_typescript(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """JSON.stringify escapes a lone surrogate (``"\\ud800"``, ASCII); Python reads it."""
    ts.call("set", "ts", "a\ud800b")
    assert raw.get(key(ts, "cache", "ts")) == '"a\\ud800b"'
    assert await py.get("ts") == "a\ud800b"


async def test_lone_surrogates_written_by_python(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    await py.set("py", "a\ud800b")
    assert raw.get(key(ts, "cache", "py")) == '"a\\ud800b"'
    assert ts.call("get", "py") == "a\ud800b"


async def test_deeply_nested_values_written_by_typescript(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """JSON.parse reads an array nested 1500 deep (checked by hand: the bridge's own
    Python JSON reader could not carry it back); Python's parser stops near 1000
    levels, and chat-state says so with an error of its own."""
    depth = 1500
    # What JSON.stringify writes for an array nested 1500 deep.
    raw.set(key(ts, "cache", "deep"), "[" * depth + "]" * depth)
    with pytest.raises(SerializationError, match="nests deeper"):
        await py.get("deep")


async def test_invalid_utf8_reads_as_replacement_characters(
    ts: TSBridge, py: Any, redis_url: str
) -> None:
    """Bytes that are not UTF-8 (written by a third party) come back with U+FFFD on
    both sides."""
    binary = redis.Redis.from_url(redis_url)
    try:
        binary.set(key(ts, "cache", "bin").encode(), b"\xff\xfe")
    finally:
        binary.close()
    assert ts.call("get", "bin") == "\ufffd\ufffd"
    assert await py.get("bin") == "\ufffd\ufffd"


@both_facades
async def test_ttls_and_delete_across_languages(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    ts.call("set", "a", {"by": "ts"}, 60_000)
    assert 50_000 < raw.pttl(key(ts, "cache", "a")) <= 60_000
    assert await py.get("a") == {"by": "ts"}
    await py.set("b", {"by": "py"}, 60_000)
    assert 50_000 < raw.pttl(key(ts, "cache", "b")) <= 60_000
    assert ts.call("get", "b") == {"by": "py"}
    ts.call("set", "c", "no ttl")
    await py.set("d", "no ttl")
    assert raw.pttl(key(ts, "cache", "c")) == raw.pttl(key(ts, "cache", "d")) == -1

    await py.delete("a")
    assert ts.call("get", "a") is None
    ts.call("delete", "b")
    assert await py.get("b") is None
    assert ts.call("get", "never") is None
    assert await py.get("never") is None


async def race(
    ts: TSBridge,
    names: list[str],
    typescript_call: Callable[[str], tuple[Any, ...]],
    python_call: Callable[[str], Awaitable[Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both languages go for the same ``names``; → (Python's results, TypeScript's).

    TypeScript takes them in order, one call at a time; chat-state (four tasks) in
    reverse, starting once TypeScript has its first result. They meet and contend in
    the middle, and neither can take every name before the other starts, however
    much faster one of them is.
    """
    todo = list(reversed(names))
    python: dict[str, Any] = {}
    typescript: dict[str, Any] = {}
    typescript_started = anyio.Event()

    async def run_typescript() -> None:
        for name in names:
            request = ts.submit(*typescript_call(name))
            typescript[name] = await anyio.to_thread.run_sync(ts.result, request)
            typescript_started.set()

    async def run_python() -> None:
        await typescript_started.wait()
        while todo:
            name = todo.pop(0)
            python[name] = await python_call(name)
            await anyio.sleep(0)  # State's calls block: let the others run too

    async with anyio.create_task_group() as group:
        for _ in range(4):
            group.start_soon(run_python)
        group.start_soon(run_typescript)
    return python, typescript


# -- de-duplication ----------------------------------------------------------------------


@both_facades
async def test_set_if_not_exists_has_one_winner_across_languages(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    """Both languages race for the same 100 de-duplication keys (see :func:`race`)."""
    keys = [f"dedupe:evt-{i}" for i in range(100)]
    python_won, typescript_won = await race(
        ts,
        keys,
        lambda k: ("setIfNotExists", k, {"by": "ts"}, 600_000),
        lambda k: py.set_if_not_exists(k, {"by": "py"}, 600_000),
    )

    for k in keys:
        assert python_won[k] != typescript_won[k], k  # exactly one winner
        winner = {"by": "py"} if python_won[k] else {"by": "ts"}
        assert await py.get(k) == winner
        assert ts.call("get", k) == winner
        assert 0 < raw.pttl(key(ts, "cache", k)) <= 600_000
    assert any(python_won.values())
    assert any(typescript_won.values())
    # Later attempts from either side lose.
    assert ts.call("setIfNotExists", keys[0], "late", 1_000) is False
    assert await py.set_if_not_exists(keys[0], "late", 1_000) is False


@both_facades
async def test_a_lock_race_across_languages_has_one_holder(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    threads = [f"race:{i}" for i in range(100)]
    python_locks, typescript_locks = await race(
        ts,
        threads,
        lambda t: ("acquireLock", t, 30_000),
        lambda t: py.acquire_lock(t, 30_000),
    )

    for t in threads:
        mine, theirs = python_locks[t], typescript_locks[t]
        assert (mine is None) != (theirs is None), t  # exactly one holder
        token = mine.token if mine is not None else theirs["token"]
        assert raw.get(key(ts, "lock", t)) == token
    assert any(python_locks.values())
    assert any(typescript_locks.values())


async def test_set_if_not_exists_sequential(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    assert await py.set_if_not_exists("a", {"n": 1}) is True
    assert ts.call("setIfNotExists", "a", {"n": 2}) is False
    assert ts.call("setIfNotExists", "b", {"n": 3}, 60_000) is True
    assert await py.set_if_not_exists("b", {"n": 4}, 60_000) is False
    assert ts.call("get", "a") == {"n": 1}
    assert await py.get("b") == {"n": 3}
    assert raw.pttl(key(ts, "cache", "a")) == -1
    assert 0 < raw.pttl(key(ts, "cache", "b")) <= 60_000


# -- lists -------------------------------------------------------------------------------


async def test_lists_are_shared_and_trimmed(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    values: list[Any] = [
        {"i": 0, "text": "Zoë"},
        "日本",
        [1, -2.5],
        None,
        {"i": 4, "nested": {"ok": True}},
        -7,
    ]
    for i, value in enumerate(values):
        if i % 2:
            ts.call("appendToList", "h", value, {"maxLength": 4, "ttlMs": 60_000})
        else:
            await py.append_to_list("h", value, max_length=4, ttl_ms=60_000)
        expected = values[max(0, i - 3) : i + 1]
        assert await py.get_list("h") == expected
        assert ts.call("getList", "h") == expected
    assert raw.llen(key(ts, "list", "h")) == 4
    assert 50_000 < raw.pttl(key(ts, "list", "h")) <= 60_000
    assert ts.call("getList", "absent") == []
    assert await py.get_list("absent") == []
    # The list and the cache are separate keys.
    assert ts.call("get", "h") is None
    assert await py.get("h") is None


async def test_list_ttl_and_unbounded_length(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    await py.append_to_list("l", 1, ttl_ms=60_000)
    ts.call("appendToList", "l", 2, {"maxLength": 0})  # no TTL given: the TTL stays
    assert 50_000 < raw.pttl(key(ts, "list", "l")) <= 60_000
    ts.call("appendToList", "l", 3, {"ttlMs": 120_000})  # refreshed
    assert 110_000 < raw.pttl(key(ts, "list", "l")) <= 120_000
    await py.append_to_list("l", 4, max_length=0)  # unbounded, TTL kept
    assert 110_000 < raw.pttl(key(ts, "list", "l")) <= 120_000
    ts.call("appendToList", "l", 5)  # no options at all
    await py.append_to_list("l", 6)
    assert ts.call("getList", "l") == await py.get_list("l") == [1, 2, 3, 4, 5, 6]
    assert raw.lrange(key(ts, "list", "l"), 0, -1) == ["1", "2", "3", "4", "5", "6"]

    ts.call("appendToList", "fresh", "x")
    await py.append_to_list("fresh", "y")
    assert raw.pttl(key(ts, "list", "fresh")) == -1


# -- queues ------------------------------------------------------------------------------

MESSAGE = {
    "id": "m1",
    "text": "Zoë 日本 👋",
    "author": {"userId": "U1", "isBot": False},
    "attachments": [],
    "score": -0.5,
    "replyTo": None,
}


async def test_python_queue_entries_are_read_by_typescript(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    t = now_ms()
    entries = [QueueEntry(t + i, t + 90_000 + i, {**MESSAGE, "id": f"m{i}"}) for i in range(3)]
    assert [await py.enqueue(THREAD, e, 2) for e in entries] == [1, 2, 2]  # drop-oldest
    assert ts.call("queueDepth", THREAD) == 2
    for e in entries[1:]:
        assert ts.call("dequeue", THREAD) == {
            "enqueuedAt": e.enqueued_at,
            "expiresAt": e.expires_at,
            "message": e.message,
        }
    assert ts.call("dequeue", THREAD) is None
    assert ts.call("queueDepth", THREAD) == 0
    assert await py.queue_depth(THREAD) == 0
    assert raw.exists(key(ts, "queue", THREAD)) == 0


async def test_typescript_queue_entries_are_read_by_python(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    t = now_ms()
    entries: list[dict[str, Any]] = [
        {"enqueuedAt": t + i, "expiresAt": t + 90_000 + i, "message": {**MESSAGE, "id": f"m{i}"}}
        for i in range(3)
    ]
    assert [ts.call("enqueue", ODD_THREAD, e, 2) for e in entries] == [1, 2, 2]
    assert await py.queue_depth(ODD_THREAD) == 2
    for e in entries[1:]:
        assert await py.dequeue(ODD_THREAD) == QueueEntry(
            e["enqueuedAt"], e["expiresAt"], e["message"]
        )
    assert await py.dequeue(ODD_THREAD) is None
    assert ts.call("dequeue", ODD_THREAD) is None


async def test_a_queue_fed_by_both_languages_stays_in_order(
    ts: TSBridge, py: Any, raw: redis.Redis
) -> None:
    t = now_ms()
    for i in range(6):
        message = {"seq": i, "from": "ts" if i % 2 else "py"}
        if i % 2:
            depth = ts.call(
                "enqueue", THREAD, {"enqueuedAt": t, "expiresAt": t + 60_000, "message": message}, 4
            )
        else:
            depth = await py.enqueue(THREAD, QueueEntry(t, t + 60_000, message), 4)
        assert depth == min(i + 1, 4)
    assert await py.queue_depth(THREAD) == ts.call("queueDepth", THREAD) == 4
    seen = []
    for i in range(4):
        if i % 2:
            entry = await py.dequeue(THREAD)
            seen.append(entry.message["seq"])
        else:
            seen.append(ts.call("dequeue", THREAD)["message"]["seq"])
    assert seen == [2, 3, 4, 5]


async def test_a_fractional_enqueued_at_written_by_typescript(ts: TSBridge, py: Any) -> None:
    t = now_ms()
    entry = {"enqueuedAt": t + 0.5, "expiresAt": t + 60_000, "message": MESSAGE}
    assert ts.call("enqueue", THREAD, entry, 10) == 1
    got = await py.dequeue(THREAD)
    assert got is not None
    assert got.message == MESSAGE


async def test_queue_entry_text_and_ttl(ts: TSBridge, py: Any, raw: redis.Redis) -> None:
    """Same entry, same bytes, when the TypeScript entry lists its fields in the
    documented order. The Chat SDK's own Chat class builds ``{message, enqueuedAt,
    expiresAt}`` (message first), which JSON.stringify keeps: those bytes differ from
    chat-state's, and each side reads the other's (test_chat_sdk_messages...)."""
    t = now_ms()
    ts.call("enqueue", "a", {"enqueuedAt": t, "expiresAt": t + 120_000, "message": MESSAGE}, 0)
    await py.enqueue("b", QueueEntry(t, t + 120_000, MESSAGE), 0)
    text = raw.lindex(key(ts, "queue", "a"), 0)
    assert text == raw.lindex(key(ts, "queue", "b"), 0)
    assert isinstance(text, str)
    assert text.startswith(f'{{"enqueuedAt":{t},"expiresAt":{t + 120_000},"message":{{"id":"m1"')
    for name in ("a", "b"):  # max(expiresAt - now, 60000)
        assert 110_000 < raw.pttl(key(ts, "queue", name)) <= 120_000

    ts.call("enqueue", "c", {"message": MESSAGE, "enqueuedAt": t, "expiresAt": t + 1_000}, 0)
    chat_sdk_order = raw.lindex(key(ts, "queue", "c"), 0)
    assert isinstance(chat_sdk_order, str)
    assert chat_sdk_order.startswith('{"message":{"id":"m1"')
    assert await py.dequeue("c") == QueueEntry(t, t + 1_000, MESSAGE)
    # An entry that expires soon still keeps the queue for a minute, in both.
    await py.enqueue("d", QueueEntry(t, t + 1_000, MESSAGE), 0)
    ts.call("enqueue", "e", {"enqueuedAt": t, "expiresAt": t + 1_000, "message": MESSAGE}, 0)
    for name in ("d", "e"):
        assert 55_000 < raw.pttl(key(ts, "queue", name)) <= 60_000


async def test_chat_sdk_messages_cross_between_languages(ts: TSBridge, py: Any) -> None:
    """A real ``chat`` Message queued by TypeScript comes out of chat-state as a
    ``chat_sdk`` Message, and the reverse: TypeScript revives Python's with
    Message.fromJSON."""
    sent = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=timezone.utc)
    serialized = {
        "_type": "chat:Message",
        "id": "1717171717.123456",
        "threadId": THREAD,
        "text": "Zoë 日本 👋",
        "formatted": {"type": "root", "children": []},
        "raw": {"ts": "1717171717.123456", "team": "T1"},
        "author": {
            "userId": "U1",
            "userName": "zoe",
            "fullName": "Zoë",
            "isBot": False,
            "isMe": False,
        },
        "metadata": {"dateSent": "2024-05-06T07:08:09.123Z", "edited": False},
        "attachments": [],
        "isMention": True,
    }
    assert ts.call("enqueueChatMessage", THREAD, serialized, 10, 60_000) == 1
    entry = await py.dequeue(THREAD)
    assert entry is not None
    message = entry.message
    assert isinstance(message, Message)
    assert (message.id, message.thread_id, message.text) == (
        serialized["id"],
        THREAD,
        "Zoë 日本 👋",
    )
    assert message.author.user_name == "zoe"
    assert message.metadata.date_sent == sent
    assert message.is_mention is True
    assert message.raw == serialized["raw"]

    t = now_ms()
    await py.enqueue(THREAD, QueueEntry(t, t + 60_000, message), 10)
    back = ts.call("dequeueChatMessage", THREAD)
    assert back["entry"]["enqueuedAt"] == t
    revived = back["revived"]
    assert revived["id"] == serialized["id"]
    assert revived["text"] == "Zoë 日本 👋"
    assert revived["author"]["fullName"] == "Zoë"
    assert revived["metadata"]["dateSent"] == "2024-05-06T07:08:09.123Z"
    assert revived["isMention"] is True


async def test_a_chat_sdk_message_built_in_python(ts: TSBridge, py: Any) -> None:
    message = Message(
        id="m-py",
        thread_id=THREAD,
        text="héllo",
        formatted={"type": "root", "children": []},
        author=Author(full_name="Zoë", is_bot=False, is_me=False, user_id="U1", user_name="zoe"),
        metadata=MessageMetadata(date_sent=datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
    )
    t = now_ms()
    await py.enqueue(THREAD, QueueEntry(t, t + 60_000, message), 10)
    back = ts.call("dequeueChatMessage", THREAD)
    assert back["entry"]["message"]["_type"] == "chat:Message"
    assert back["revived"]["metadata"]["dateSent"] == "2024-01-02T03:04:05.000Z"
    assert back["revived"]["author"]["userName"] == "zoe"


# -- the bridge itself -------------------------------------------------------------------


def test_the_bridge_reports_typescript_errors(ts: TSBridge) -> None:
    with pytest.raises(TSError, match="unknown op"):
        ts.call("noSuchOp")
    assert ts.versions[f"@chat-adapter/state-{ts.adapter}"] in {"4.41.0", "4.41.1"}
    assert ts.call("isSubscribed", "x") is False  # still answering
