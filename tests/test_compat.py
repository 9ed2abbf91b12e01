"""Byte compatibility with the TypeScript adapters, and the scripts' Lua/Python twins."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from chat_sdk.types import Author, Message, MessageMetadata

from chat_state import Lock, MemoryStore, QueueEntry
from chat_state.core.scripts import EXTEND, LOCK_INFO, PUSH, QUEUE_INFO, RELEASE, SCRIPTS, Script

from .conftest import SERVER_TARGETS, Target

pytestmark = pytest.mark.anyio


class ChatSdkLikeMessage:
    """Has ``to_json()`` like ``chat_sdk.Message`` (whose output is camelCase)."""

    def to_json(self) -> dict[str, Any]:
        return {"_type": "chat:Message", "id": "m1", "text": "héllo", "isMention": True}


# What JSON.stringify writes for the same values (checked against Node.js by hand; the
# interop suite checks it against the real adapters).
GOLDEN: list[tuple[Any, str]] = [
    ({"b": 1, "a": "é", "n": [1, 2.5, True, None]}, '{"b":1,"a":"é","n":[1,2.5,true,null]}'),
    ('日本 "q" \\ /\n\t', '"日本 \\"q\\" \\\\ /\\n\\t"'),
    ("\x01\x1f\x7f\u2028👋", '"\\u0001\\u001f\x7f\u2028👋"'),
    ({"nested": {"deep": [[], {}]}}, '{"nested":{"deep":[[],{}]}}'),
    (
        {"msg": ChatSdkLikeMessage()},
        '{"msg":{"_type":"chat:Message","id":"m1","text":"héllo","isMention":true}}',
    ),
    (-0.5, "-0.5"),
    ([1e-05, 0.0000123, 1.5e-07, -2.5e-08, 1e-10], "[0.00001,0.0000123,1.5e-7,-2.5e-8,1e-10]"),
    ({"text": "not 1e-05 a number"}, '{"text":"not 1e-05 a number"}'),
    ("lone \ud800 surrogate", '"lone \\ud800 surrogate"'),
    (10**20, "100000000000000000000"),
    # Python keeps a float's ".0" (JSON.stringify(1.0) is "1"): both are the same JSON
    # number to every reader, and Python gets its float back.
    (1.0, "1.0"),
]


@pytest.mark.parametrize(("value", "text"), GOLDEN, ids=range(len(GOLDEN)))
async def test_cache_values_are_stored_as_json_stringify_text(
    state: Any, target: Target, value: Any, text: str
) -> None:
    await state.set("k", value)
    assert target.raw.get(target.key("cache", "k")) == text
    await state.append_to_list("l", value)
    assert target.raw.lrange(target.key("list", "l")) == [text]


async def test_key_layout_and_lock_value(state: Any, target: Target) -> None:
    await state.subscribe("slack:C1:17.5")
    lock = await state.acquire_lock("slack:C1:17.5", 30_000)
    await state.set("user:1:prefs", {"tz": "UTC"})
    await state.append_to_list("history:t", 1)
    await state.enqueue("slack:C1:17.5", QueueEntry(1, 2, ChatSdkLikeMessage()), 10)
    p = target.prefix
    assert target.raw.keys(p) == sorted(
        [
            f"{p}:subscriptions",
            f"{p}:lock:slack:C1:17.5",
            f"{p}:cache:user:1:prefs",
            f"{p}:list:history:t",
            f"{p}:queue:slack:C1:17.5",
        ]
    )
    assert target.raw.get(f"{p}:lock:slack:C1:17.5") == lock.token
    assert target.raw.lrange(f"{p}:queue:slack:C1:17.5") == [
        '{"enqueuedAt":1,"expiresAt":2,"message":{"_type":"chat:Message","id":"m1",'
        '"text":"héllo","isMention":true}}'
    ]


async def test_values_written_by_typescript_are_read(state: Any, target: Target) -> None:
    # Texts as the TypeScript adapters write them.
    target.raw.set(target.key("cache", "ts"), '{"count":5,"name":"Zoë","ok":true,"n":null}')
    target.raw.rpush(target.key("list", "ts"), '{"role":"user","text":"日本"}')
    target.raw.rpush(
        target.key("queue", "ts"),
        '{"enqueuedAt":1700000000000,"expiresAt":1700000090000,"message":{"id":"x"}}',
    )
    assert await state.get("ts") == {"count": 5, "name": "Zoë", "ok": True, "n": None}
    assert await state.get_list("ts") == [{"role": "user", "text": "日本"}]
    assert await state.dequeue("ts") == QueueEntry(1700000000000, 1700000090000, {"id": "x"})
    # A TypeScript lock (any token format) is respected and released only by its token.
    target.raw.set(target.key("lock", "ts"), "ioredis_1700000000000_k3j4h5")
    assert await state.acquire_lock("ts", 1_000) is None
    await state.release_lock(Lock("ts", "ioredis_1700000000000_other", 0))
    assert target.raw.get(target.key("lock", "ts")) == "ioredis_1700000000000_k3j4h5"
    await state.release_lock(Lock("ts", "ioredis_1700000000000_k3j4h5", 0))
    assert target.raw.get(target.key("lock", "ts")) is None


# -- scripts --------------------------------------------------------------------------------


@pytest.mark.targets(SERVER_TARGETS)
async def test_scripts_survive_a_flushed_script_cache(state: Any, target: Target) -> None:
    """As after a restart or a failover: NOSCRIPT, then the source, on the key's node."""
    lock = await state.acquire_lock("t", 30_000)
    target.raw.flush_scripts()
    assert await state.extend_lock(lock, 30_000) is True
    assert target.raw.script_cached(EXTEND.sha, target.key("lock", "t"))
    target.raw.flush_scripts()
    await state.release_lock(lock)
    assert target.raw.get(target.key("lock", "t")) is None
    target.raw.flush_scripts()
    await state.append_to_list("l", 1, max_length=1)
    await state.append_to_list("l", 2, max_length=1)
    assert await state.get_list("l") == [2]


def test_shipped_sources_match_the_registry() -> None:
    assert set(SCRIPTS.values()) == {RELEASE, EXTEND, PUSH, LOCK_INFO, QUEUE_INFO}
    for script in SCRIPTS.values():
        assert script.source.lstrip().startswith("--")
        assert "redis.call" in script.source


# Each case: a script, the key's initial content, and ARGV (strings, as Redis passes them).
TWIN_CASES: list[tuple[Script, str | list[str] | None, int | None, list[str]]] = [
    (RELEASE, None, None, ["tok"]),
    (RELEASE, "tok", 5_000, ["tok"]),
    (RELEASE, "other", 5_000, ["tok"]),
    (EXTEND, None, None, ["tok", "9000"]),
    (EXTEND, "tok", 5_000, ["tok", "9000"]),
    (EXTEND, "other", 5_000, ["tok", "9000"]),
    (PUSH, None, None, ['"a"', "0", "0"]),
    (PUSH, ["1", "2", "3"], None, ['"a"', "2", "0"]),
    (PUSH, ["1", "2", "3"], 5_000, ['"a"', "0", "0"]),
    (PUSH, ["1", "2", "3"], 5_000, ['"a"', "10", "9000"]),
    (PUSH, ["1"], None, ['"a"', "1", "60000"]),
    # The ends of the ranges (Lua would write these numbers as "1e+16" and refuse them).
    (PUSH, ["1", "2"], None, ['"a"', "9223372036854775807", "9007199254740991"]),
    (PUSH, ["1", "2"], 5_000, ['"a"', "10000000000000000", "10000000000000000"]),
    (PUSH, ["1", "2", "3"], None, ['"a"', "1", "1"]),
    (EXTEND, "tok", 5_000, ["tok", "9007199254740991"]),
    # The inspection scripts: nothing, the kind they read, and another type (no writes).
    (LOCK_INFO, None, None, []),
    (LOCK_INFO, "tok", None, []),
    (LOCK_INFO, "tok", 5_000, []),
    (LOCK_INFO, ["1"], 5_000, []),
    (QUEUE_INFO, None, None, []),
    (QUEUE_INFO, ["1", "2", "3"], 5_000, []),
    (QUEUE_INFO, "tok", None, []),
]


def _rounded(reply: Any) -> Any:
    """A reply with LOCK_INFO's TTL to the second (the two clocks are a moment apart)."""
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], int):
        return [reply[0], reply[1] if reply[1] < 0 else round(reply[1], -3)]
    return reply


def _seed(target: Any, key: str, content: str | list[str] | None, ttl: int | None) -> None:
    if isinstance(content, str):
        target.set(key, content)
    elif content is not None:
        for item in content:
            target.rpush(key, item)
    if content is not None and ttl is not None:
        target.pexpire(key, ttl)


def _observe(target: Any, key: str, is_list: bool) -> tuple[Any, int]:
    content = target.lrange(key, 0, -1) if is_list else target.get(key)
    pttl = target.pttl(key)
    return content, -1 if pttl == -1 else (-2 if pttl == -2 else round(pttl, -3))


@pytest.mark.parametrize(("script", "content", "ttl", "argv"), TWIN_CASES)
def test_python_twin_matches_lua(
    redis_url: str, script: Script, content: Any, ttl: int | None, argv: list[str]
) -> None:
    key = f"twin:{script.name}"
    server = redis.Redis.from_url(redis_url, decode_responses=True)
    store = MemoryStore()
    try:
        server.delete(key)
        _seed(server, key, content, ttl)
        _seed(store, key, content, ttl)
        lua_reply = server.eval(script.source, 1, key, *argv)
        twin_reply = script.twin(store, [key], argv)
        assert _rounded(twin_reply) == _rounded(lua_reply)
        is_list = script is PUSH or isinstance(content, list)
        assert _observe(store, key, is_list) == _observe(server, key, is_list)
    finally:
        server.delete(key)
        server.close()


@pytest.mark.parametrize(
    "argv",
    [
        ['"a"', "x", "0"],
        ['"a"', "0", ""],
        ['"a"', "1"],
        ['"a"', "1.5", "0"],
        ['"a"', "0", "1e3"],
        ['"a"', "0x10", "0"],
        ['"a"', "0", "inf"],
        ['"a"', "-1", "0"],
        ['"a"', "1_0", "0"],
        ['"a"', " 1", "0"],
    ],
)
def test_the_push_script_refuses_bad_numbers_before_it_writes(
    redis_url: str, argv: list[str]
) -> None:
    """A script never fails after its first write: what it cannot use, it refuses first."""
    server = redis.Redis.from_url(redis_url, decode_responses=True)
    store = MemoryStore()
    try:
        server.delete("twin:bad")
        with pytest.raises(redis.ResponseError):
            server.eval(PUSH.source, 1, "twin:bad", *argv)
        assert server.exists("twin:bad") == 0
        with pytest.raises(ValueError, match="non-negative integers"):
            PUSH.twin(store, ["twin:bad"], argv)
        assert store.live_keys() == []
    finally:
        server.close()


async def test_chat_sdk_messages_come_back_as_messages(state: Any, target: Target) -> None:
    message = Message(
        id="m1",
        thread_id="slack:C1:1.2",
        text="héllo",
        formatted={"type": "root", "children": []},
        raw={"ts": "1.2"},
        author=Author(user_id="U1", user_name="zoe", full_name="Zoë", is_bot=False, is_me=False),
        metadata=MessageMetadata(
            date_sent=datetime(2026, 11, 25, tzinfo=timezone.utc), edited=False
        ),
    )
    await state.enqueue("slack:C1:1.2", QueueEntry(1, 2, message), 10)
    [stored] = target.raw.lrange(target.key("queue", "slack:C1:1.2"))
    assert stored.startswith('{"enqueuedAt":1,"expiresAt":2,"message":{')
    assert '"_type":"chat:Message"' in stored
    assert '"threadId":"slack:C1:1.2"' in stored  # the TypeScript (camelCase) shape
    dequeued = await state.dequeue("slack:C1:1.2")
    assert isinstance(dequeued.message, Message)
    assert dequeued.message.text == "héllo"
    assert dequeued.message.author.full_name == "Zoë"
