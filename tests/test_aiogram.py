"""chat-state as aiogram 3's FSM storage and event isolation, through aiogram itself.

A real ``aiogram.Dispatcher`` with ``ChatStateStorage`` and ``ChatStateEventIsolation``
is fed hand-built updates (``feed_update``); its ``Bot`` has a session that records the
API calls instead of sending them, so ``message.answer()`` works offline. On memory,
a standalone Redis and a Redis Cluster: an FSM form (state and data in chat-state's
cache namespace, read back through another adapter and raw), two dispatchers ("bot
instances") sharing a conversation, aiogram's TTLs (seconds), updates of one user
handled one at a time across instances and in arrival order within one (renewed past
the lock's TTL, given up after ``wait_ms``, cancelled when the lock is lost, the errors
reaching ``@dp.errors()``), who connects and disconnects the state, key builders
(topics, business connections), and copying aiogram's RedisStorage records. The form
is the example's. Then the import rules (``import chat_state`` never imports aiogram; a
missing aiogram names the extra to install) and ``examples/aiogram_bot.py``, run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import runpy
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import anyio
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import DataNotDictLikeError
from aiogram.filters import Command
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import DefaultKeyBuilder, KeyBuilder, StorageKey
from aiogram.fsm.storage.redis import RedisStorage
from aiogram.fsm.strategy import FSMStrategy
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Chat, ErrorEvent, Message, Update, User

from chat_state import (
    MAX_TTL_MS,
    AsyncState,
    LockLostError,
    LockUnavailableError,
    NotConnectedError,
    SerializationError,
    cli,
)
from chat_state.integrations.aiogram import ChatStateEventIsolation, ChatStateStorage

from .conftest import Target

pytestmark = pytest.mark.anyio

TARGETS = ["memory", "redis-server/standalone/redis-py", "redis-server/cluster/redis-py"]
on_targets = pytest.mark.targets(TARGETS)

TOKEN = "123456:TEST-token-for-a-bot-that-never-goes-online"
BOT_ID = 123456
ANN = 42  # a user (and, in private chats, the chat) id
BOB = 43
EXAMPLES = Path(__file__).parent.parent / "examples"


# -- a Bot that records what it sends ---------------------------------------------------


class RecordingSession(BaseSession):
    """A session that answers ``sendMessage`` itself (through aiogram's own response
    parsing) and records it; any other API call fails the test."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[int | str, str]] = []
        self.closed = False

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        if not isinstance(method, SendMessage):
            raise AssertionError(f"unexpected API call {method.__api_method__}")
        self.sent.append((method.chat_id, method.text))
        result = {
            "message_id": len(self.sent),
            "date": int(time.time()),
            "chat": {"id": method.chat_id, "type": "private"},
            "text": method.text,
        }
        content = json.dumps({"ok": True, "result": result})
        return self.check_response(bot, method, 200, content).result  # type: ignore[return-value]

    async def stream_content(
        self, url: str, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[bytes, None]:
        raise AssertionError(f"unexpected download of {url}")
        yield b""  # (an async generator)

    async def close(self) -> None:
        self.closed = True

    def texts(self) -> list[str]:
        return [text for _, text in self.sent]


def make_bot() -> tuple[Bot, RecordingSession]:
    session = RecordingSession()
    return Bot(TOKEN, session=session), session


_update_ids = iter(range(1, 1_000_000))


def update(text: str, user_id: int = ANN, chat_id: int | None = None) -> Update:
    """A private message from ``user_id``, as Telegram would deliver it."""
    update_id = next(_update_ids)
    return Update(
        update_id=update_id,
        message=Message(
            message_id=update_id,
            date=datetime.now(timezone.utc),
            chat=Chat(id=chat_id if chat_id is not None else user_id, type="private"),
            from_user=User(id=user_id, is_bot=False, first_name=f"user{user_id}"),
            text=text,
        ),
    )


def key(user_id: int = ANN, **fields: Any) -> StorageKey:
    """The FSM key aiogram builds for a private chat with ``user_id`` (USER_IN_CHAT)."""
    return StorageKey(bot_id=BOT_ID, chat_id=user_id, user_id=user_id, **fields)


# -- the form: the example's ---------------------------------------------------------------

#: examples/aiogram_bot.py's globals (it is not a package; run as a module, not as main).
example = runpy.run_path(str(EXAMPLES / "aiogram_bot.py"), run_name="aiogram_bot_example")
Form = example["Form"]
#: A new router with the example's form handlers (a router belongs to one dispatcher).
form_router: Callable[[], Router] = example["form_router"]
ASK_NAME = "Hello! What is your name?"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
async def open_state(target: Target) -> AsyncIterator[Callable[[], Awaitable[AsyncState]]]:
    """Connected adapters on the test's target and prefix (one per "bot instance"),
    disconnected (and the prefix cleared) afterwards."""
    opened: list[AsyncState] = []

    async def open_one() -> AsyncState:
        state = AsyncState.from_url(target.url, key_prefix=target.prefix)
        await state.connect()
        opened.append(state)
        return state

    yield open_one
    if opened:
        await opened[0].connect()  # (should the test have disconnected it)
        await opened[0].clear()
    for state in opened:
        await state.disconnect()


def dispatcher(
    state: AsyncState, *routers: Router, **isolation: Any
) -> tuple[Dispatcher, ChatStateStorage, ChatStateEventIsolation]:
    storage = ChatStateStorage(state)
    events_isolation = ChatStateEventIsolation(state, **isolation)
    dp = Dispatcher(storage=storage, events_isolation=events_isolation)
    dp.include_routers(*routers)
    return dp, storage, events_isolation


def cache_key(target: Target, name: str) -> str:
    return f"{target.prefix}:cache:{name}"


# -- the storage, through a dispatcher -----------------------------------------------------


@on_targets
async def test_a_form_keeps_its_state_and_data_in_chat_state(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    dp, _, _ = dispatcher(await open_state(), form_router())
    bot, session = make_bot()
    reader = ChatStateStorage(await open_state())  # another instance's view
    state_key, data_key = cache_key(target, "fsm:42:42:state"), cache_key(target, "fsm:42:42:data")

    await dp.feed_update(bot, update("/start"))
    assert session.sent == [(ANN, ASK_NAME)]
    assert target.raw.get(state_key) == '"Form:name"'
    assert target.raw.get(data_key) is None
    assert await reader.get_state(key()) == "Form:name"

    await dp.feed_update(bot, update("Ann"))
    assert session.texts()[-1] == "Nice to meet you, Ann. How old are you?"
    assert target.raw.get(state_key) == '"Form:age"'
    assert json.loads(target.raw.get(data_key) or "null") == {"name": "Ann"}
    assert await reader.get_data(key()) == {"name": "Ann"}

    await dp.feed_update(bot, update("thirty"))
    assert session.texts()[-1] == "Your age, in digits, please."
    assert await reader.get_state(key()) == "Form:age"

    await dp.feed_update(bot, update("33"))
    assert session.texts()[-1] == "Ann, 33: thank you!"
    assert len(session.sent) == 4
    # clear() deleted both records.
    assert target.raw.get(state_key) is None
    assert target.raw.get(data_key) is None
    assert await reader.get_state(key()) is None
    assert await reader.get_data(key()) == {}


@on_targets
async def test_two_bot_instances_share_a_conversation(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    (one, _, _), (two, _, _) = (
        dispatcher(await open_state(), form_router()),
        dispatcher(await open_state(), form_router()),
    )
    (bot_one, sent_one), (bot_two, sent_two) = make_bot(), make_bot()
    await one.feed_update(bot_one, update("/start"))
    await two.feed_update(bot_two, update("Ann"))
    await one.feed_update(bot_one, update("/start", user_id=BOB))
    await two.feed_update(bot_two, update("Bob", user_id=BOB))
    await two.feed_update(bot_two, update("33"))
    await one.feed_update(bot_one, update("44", user_id=BOB))
    assert sent_one.sent == [
        (ANN, ASK_NAME),
        (BOB, ASK_NAME),
        (BOB, "Bob, 44: thank you!"),
    ]
    assert sent_two.sent == [
        (ANN, "Nice to meet you, Ann. How old are you?"),
        (BOB, "Nice to meet you, Bob. How old are you?"),
        (ANN, "Ann, 33: thank you!"),
    ]


# -- the storage's records ------------------------------------------------------------------


@on_targets
async def test_set_state_none_and_set_data_empty_delete_their_keys(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    storage = ChatStateStorage(await open_state())
    state_key, data_key = cache_key(target, "fsm:42:42:state"), cache_key(target, "fsm:42:42:data")
    await storage.set_state(key(), Form.age)  # a State: its .state string
    await storage.set_data(key(), {"name": "Ann", "tags": ["a", "é"], "n": 1.5})
    assert target.raw.get(state_key) == '"Form:age"'
    assert json.loads(target.raw.get(data_key) or "null") == {
        "name": "Ann",
        "tags": ["a", "é"],
        "n": 1.5,
    }
    await storage.set_state(key(), None)
    await storage.set_data(key(), {})
    assert target.raw.get(state_key) is None
    assert target.raw.get(data_key) is None
    # The default state (State()) is "no state" too.
    await storage.set_state(key(), "Form:name")
    await storage.set_state(key(), State())
    assert target.raw.get(state_key) is None
    assert await storage.get_state(key()) is None


class Step(str, Enum):
    """States as a str enum: ``str()`` of one is ``"Step.name"``, its text ``"Form:name"``."""

    name = "Form:name"
    age = "Form:age"


@on_targets
async def test_a_str_subclass_state_is_stored_as_its_text(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    storage = ChatStateStorage(await open_state())
    await storage.set_state(key(), Step.age)
    assert target.raw.get(cache_key(target, "fsm:42:42:state")) == '"Form:age"'
    got = await storage.get_state(key())
    assert got == "Form:age"
    assert type(got) is str


@on_targets
async def test_a_state_that_is_not_a_json_string_is_refused(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    storage = ChatStateStorage(await open_state())
    for written, kind in (("5", "int"), ('{"a": 1}', "dict"), ('["Form:name"]', "list")):
        # What something else stored there (JSON, but not a string).
        target.raw.set(cache_key(target, "fsm:42:42:state"), written)
        with pytest.raises(SerializationError, match=f"'fsm:42:42:state' is a {kind}, not a str"):
            await storage.get_state(key())


@on_targets
async def test_get_data_is_a_fresh_dict_and_aiograms_helpers_work(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    storage = ChatStateStorage(await open_state())
    empty = await storage.get_data(key())
    empty["x"] = 1
    assert await storage.get_data(key()) == {}
    await storage.set_data(key(), {"items": [1]})
    data = await storage.get_data(key())
    data["items"].append(2)
    assert await storage.get_data(key()) == {"items": [1]}
    # aiogram's own update_data and get_value, over get_data and set_data.
    assert await storage.update_data(key(), {"name": "Ann"}) == {"items": [1], "name": "Ann"}
    assert await storage.get_value(key(), "name") == "Ann"
    assert await storage.get_value(key(), "nope", "default") == "default"
    assert await storage.get_data(key(BOB)) == {}


@on_targets
async def test_data_that_is_not_a_dict_is_refused(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    storage = ChatStateStorage(await open_state())
    for data in ([("a", 1)], MappingProxyType({"a": 1}), "a=1"):
        with pytest.raises(DataNotDictLikeError, match="Data must be a dict or dict-like object"):
            await storage.set_data(key(), data)  # type: ignore[arg-type]
    assert target.raw.get(cache_key(target, "fsm:42:42:data")) is None
    # What something else stored there, that is not a JSON object.
    target.raw.set(cache_key(target, "fsm:42:42:data"), "[1, 2]")
    with pytest.raises(DataNotDictLikeError, match="is a list, not a dict"):
        await storage.get_data(key())


# -- TTLs ---------------------------------------------------------------------------------


@on_targets
async def test_ttls_are_aiogram_seconds(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]], request: pytest.FixtureRequest
) -> None:
    clock = request.getfixturevalue("state_clock") if target.topology == "memory" else None
    storage = ChatStateStorage(await open_state(), state_ttl=60, data_ttl=timedelta(minutes=2))
    forever = ChatStateStorage(storage.state)
    await storage.set_state(key(), Form.name)
    await storage.update_data(key(), {"name": "Ann"})
    await forever.set_state(key(BOB), Form.name)
    state_ttl = target.raw.pttl(cache_key(target, "fsm:42:42:state"))
    data_ttl = target.raw.pttl(cache_key(target, "fsm:42:42:data"))
    assert target.raw.pttl(cache_key(target, "fsm:43:43:state")) == -1
    if clock is None:
        assert 55_000 < state_ttl <= 60_000
        assert 115_000 < data_ttl <= 120_000
        return
    assert (state_ttl, data_ttl) == (60_000, 120_000)
    clock.advance(59_999)
    assert await storage.get_state(key()) == "Form:name"
    clock.advance(1)
    assert await storage.get_state(key()) is None
    assert await storage.get_data(key()) == {"name": "Ann"}
    await storage.update_data(key(), {"age": 33})  # written again: a fresh TTL
    clock.advance(119_999)
    assert await storage.get_data(key()) == {"name": "Ann", "age": 33}
    clock.advance(1)
    assert await storage.get_data(key()) == {}
    assert await forever.get_state(key(BOB)) == "Form:name"


@on_targets
async def test_a_timedelta_ttl_is_kept_to_the_millisecond(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]], request: pytest.FixtureRequest
) -> None:
    on_memory = target.topology == "memory"
    if on_memory:
        request.getfixturevalue("state_clock")  # memory:// time held still
    storage = ChatStateStorage(
        await open_state(), state_ttl=timedelta(milliseconds=299, microseconds=1)
    )
    await storage.set_state(key(), Form.name)
    await storage.set_data(key(), {"name": "Ann"})
    state_ttl = target.raw.pttl(cache_key(target, "fsm:42:42:state"))
    if on_memory:
        assert state_ttl == 300  # rounded up to the millisecond, not to a second
    else:
        assert 0 < state_ttl <= 300
    assert target.raw.pttl(cache_key(target, "fsm:42:42:data")) == -1  # data_ttl=None


@pytest.mark.parametrize(
    ("ttl", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (timedelta(0), ValueError),
        (timedelta(seconds=-1), ValueError),
        (2**53, ValueError),
        (1.5, TypeError),
        (True, TypeError),
        ("60", TypeError),
    ],
)
@pytest.mark.parametrize("which", ["state_ttl", "data_ttl"])
def test_bad_ttls_are_refused_at_once(ttl: Any, error: type[Exception], which: str) -> None:
    with pytest.raises(error, match=which):
        ChatStateStorage(AsyncState.from_url("memory://"), **{which: ttl})


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"ttl_ms": 0}, ValueError),
        ({"ttl_ms": 1.5}, TypeError),
        ({"wait_ms": -1}, ValueError),
        ({"wait_ms": 2**53}, ValueError),
        ({"wait_ms": 0.5}, TypeError),
        ({"wait_ms": None}, TypeError),
    ],
)
def test_bad_lock_times_are_refused_at_once(arguments: dict[str, Any], error: type) -> None:
    with pytest.raises(error, match=next(iter(arguments))):
        ChatStateEventIsolation(AsyncState.from_url("memory://"), **arguments)


def test_lock_times_take_timedeltas_and_the_largest_wait() -> None:
    isolation = ChatStateEventIsolation(
        AsyncState.from_url("memory://"),
        ttl_ms=timedelta(seconds=10),
        wait_ms=timedelta(microseconds=1500),
    )
    assert (isolation.ttl_ms, isolation.wait_ms) == (10_000, 2)  # rounded up
    assert ChatStateEventIsolation(AsyncState.from_url("memory://"), wait_ms=2**53 - 1).wait_ms


def test_an_update_waits_for_its_lock_for_good_by_default() -> None:
    # As aiogram's SimpleEventIsolation and RedisEventIsolation (whose timeout is a TTL).
    state = AsyncState.from_url("memory://")
    isolations = [
        ChatStateEventIsolation(state),
        ChatStateEventIsolation.from_url("memory://"),
        ChatStateStorage(state).create_isolation(),
        ChatStateStorage.from_url("memory://").create_isolation(),
    ]
    assert [isolation.wait_ms for isolation in isolations] == [MAX_TTL_MS] * 4


# -- the isolation ----------------------------------------------------------------------


Journal = list[tuple[Literal["enter", "exit"], str]]
During = Callable[[Message], Awaitable[object]]


def journaling_router(journal: Journal, during: During | None = None) -> Router:
    """A router whose one handler records entering and leaving, around ``during``."""
    router = Router()

    @router.message()
    async def handle(message: Message) -> None:
        journal.append(("enter", message.text or ""))
        if during is not None:
            await during(message)
        journal.append(("exit", message.text or ""))

    return router


def busy(seconds: float) -> During:
    """A handler's work: ``seconds`` in which another update could interleave."""
    return lambda _: asyncio.sleep(seconds)


def steps(texts: list[str]) -> Journal:
    """The journal of ``texts`` handled one at a time, in that order."""
    return [(what, text) for text in texts for what in ("enter", "exit")]


class AnnouncingIsolation(ChatStateEventIsolation):
    """An isolation that says when an update has asked it for its lock."""

    def __init__(self, state: AsyncState, **isolation: Any) -> None:
        super().__init__(state, **isolation)
        self.asked = asyncio.Event()

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        self.asked.set()
        async with super().lock(key):
            yield None


async def feed_failing(dp: Dispatcher, error: type[Exception], *, handled: bool) -> None:
    """Feed ANN's "hi", whose handling raises ``error``: out of ``feed_update``, or with
    ``handled``, to an ``@dp.errors()`` handler, which can still answer the user."""
    bot, session = make_bot()
    if not handled:
        with pytest.raises(error):
            await dp.feed_update(bot, update("hi"))
        return
    errors: list[BaseException] = []

    @dp.errors()
    async def on_error(event: ErrorEvent) -> str:
        errors.append(event.exception)
        assert event.update.message is not None
        await event.update.message.answer(f"Sorry: {type(event.exception).__name__}")
        return "handled"

    assert await dp.feed_update(bot, update("hi")) == "handled"
    assert [type(caught) for caught in errors] == [error]
    assert session.sent == [(ANN, f"Sorry: {error.__name__}")]


@on_targets
async def test_one_users_updates_are_handled_one_at_a_time_across_instances(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    journal: Journal = []
    one, _, _ = dispatcher(await open_state(), journaling_router(journal, busy(0.15)))
    two, _, _ = dispatcher(await open_state(), journaling_router(journal, busy(0.15)))
    (bot_one, _), (bot_two, _) = make_bot(), make_bot()
    await asyncio.gather(
        *(
            (one if n % 2 else two).feed_update(bot_one if n % 2 else bot_two, update(f"m{n}"))
            for n in range(4)
        )
    )
    assert len(journal) == 8
    for n in range(0, 8, 2):  # enter X, exit X: never two at once
        assert journal[n][0] == "enter"
        assert journal[n + 1] == ("exit", journal[n][1])
    assert {text for _, text in journal} == {"m0", "m1", "m2", "m3"}


@on_targets
async def test_one_users_updates_are_handled_in_the_order_they_came(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    journal: Journal = []
    dp, _, isolation = dispatcher(await open_state(), journaling_router(journal, busy(0.01)))
    bot, _ = make_bot()
    texts = [f"m{n}" for n in range(10)]
    await asyncio.gather(*(dp.feed_update(bot, update(text)) for text in texts))
    assert journal == steps(texts)
    assert isolation._gates == {}  # nobody holds or waits: nothing is kept


@on_targets
async def test_different_users_updates_overlap(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    entered = {ANN: asyncio.Event(), BOB: asyncio.Event()}
    finished: list[int] = []
    router_one, router_two = Router(), Router()

    async def handle(message: Message) -> None:
        me = message.from_user.id if message.from_user else 0
        entered[me].set()
        other = BOB if me == ANN else ANN
        # Waits for the other user's handler to be running at the same time.
        await asyncio.wait_for(entered[other].wait(), timeout=5)
        finished.append(me)

    router_one.message()(handle)
    router_two.message()(handle)
    one, _, _ = dispatcher(await open_state(), router_one)
    two, _, _ = dispatcher(await open_state(), router_two)
    (bot_one, _), (bot_two, _) = make_bot(), make_bot()
    await asyncio.gather(
        one.feed_update(bot_one, update("hi", user_id=ANN)),
        two.feed_update(bot_two, update("hi", user_id=BOB)),
    )
    assert sorted(finished) == [ANN, BOB]


@on_targets
async def test_a_handler_longer_than_the_lock_ttl_keeps_the_lock(
    open_state: Callable[[], Awaitable[AsyncState]],
) -> None:
    journal: Journal = []
    observer = await open_state()
    lock_id = "fsm:42:42:lock"
    slow_entered = asyncio.Event()
    second = AnnouncingIsolation(await open_state(), ttl_ms=1500)

    async def outlast_the_first_ttl(message: Message) -> None:
        if message.text != "slow":
            return
        slow_entered.set()
        first = await observer.inspect_lock(lock_id)
        assert first is not None
        expiry = time.monotonic() + first.ttl_ms / 1000  # had it not been renewed
        with anyio.fail_after(10):
            await second.asked.wait()  # the other instance's update wants the lock
            for _ in range(1000):
                now = time.monotonic()
                held = await observer.inspect_lock(lock_id)
                assert held is not None  # renewed (every 500 ms), never let go
                if now > expiry:
                    break
                await asyncio.sleep(0.05)  # polling the lock, whose TTL is 1.5 s
            else:
                pytest.fail("the lock's first TTL never ran out")

    one, _, isolation = dispatcher(
        await open_state(), journaling_router(journal, outlast_the_first_ttl), ttl_ms=1500
    )
    two = Dispatcher(storage=ChatStateStorage(second.state), events_isolation=second)
    two.include_router(journaling_router(journal))
    (bot_one, _), (bot_two, _) = make_bot(), make_bot()
    assert isolation.key_builder.build(key(), "lock") == lock_id

    async def meanwhile() -> None:
        with anyio.fail_after(10):
            await slow_entered.wait()
        await two.feed_update(bot_two, update("fast"))

    await asyncio.gather(one.feed_update(bot_one, update("slow")), meanwhile())
    assert journal == steps(["slow", "fast"])
    assert await observer.inspect_lock(lock_id) is None  # released


@on_targets
@pytest.mark.parametrize("with_error_handler", [False, True])
async def test_a_lock_not_taken_within_wait_ms_raises_lock_unavailable(
    open_state: Callable[[], Awaitable[AsyncState]], with_error_handler: bool
) -> None:
    journal: Journal = []
    holder = await open_state()
    dp, _, isolation = dispatcher(await open_state(), journaling_router(journal), wait_ms=200)
    held = await holder.acquire_lock(isolation.key_builder.build(key(), "lock"), 10_000)
    assert held is not None
    await feed_failing(dp, LockUnavailableError, handled=with_error_handler)
    assert journal == []  # the handler never ran
    bot, _ = make_bot()
    # Another user is not held up; and once released, the first user's update runs.
    await dp.feed_update(bot, update("hi", user_id=BOB))
    await holder.release_lock(held)
    await dp.feed_update(bot, update("again"))
    assert [text for what, text in journal if what == "exit"] == ["hi", "again"]
    assert isolation._gates == {}


@on_targets
@pytest.mark.parametrize("wait_ms", [0, 200])
async def test_an_update_queued_in_this_process_waits_no_longer_than_wait_ms(
    open_state: Callable[[], Awaitable[AsyncState]], wait_ms: int
) -> None:
    journal: Journal = []
    entered, done = asyncio.Event(), asyncio.Event()

    async def hold(message: Message) -> None:
        if message.text == "slow":
            entered.set()
            with anyio.fail_after(10):
                await done.wait()

    dp, _, isolation = dispatcher(
        await open_state(), journaling_router(journal, hold), wait_ms=wait_ms
    )
    bot, _ = make_bot()
    slow = asyncio.ensure_future(dp.feed_update(bot, update("slow")))
    try:
        with anyio.fail_after(10):
            await entered.wait()
            # Behind "slow" in this process's queue for the lock: given up after wait_ms.
            with pytest.raises(LockUnavailableError, match=repr("fsm:42:42:lock")):
                await dp.feed_update(bot, update("queued"))
        assert not slow.done()
    finally:
        done.set()
        await slow
    assert journal == steps(["slow"])
    assert isolation._gates == {}


@on_targets
@pytest.mark.parametrize("with_error_handler", [False, True])
async def test_a_lost_lock_cancels_the_handler_and_raises_lock_lost(
    open_state: Callable[[], Awaitable[AsyncState]], with_error_handler: bool
) -> None:
    other = await open_state()
    entered, outcome = asyncio.Event(), []
    router = Router()

    @router.message()
    async def handle(message: Message) -> None:
        entered.set()
        try:
            await asyncio.sleep(10)
            outcome.append("finished")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    dp, _, isolation = dispatcher(await open_state(), router, ttl_ms=300)
    lock_id = isolation.key_builder.build(key(), "lock")

    async def take_it_over() -> None:
        await asyncio.wait_for(entered.wait(), timeout=5)
        await other.force_release_lock(lock_id)
        assert await other.acquire_lock(lock_id, 10_000) is not None

    takeover = asyncio.ensure_future(take_it_over())
    try:
        await feed_failing(dp, LockLostError, handled=with_error_handler)
    finally:
        await takeover  # never left pending
    assert outcome == ["cancelled"]
    assert await other.inspect_lock(lock_id) is not None  # the new holder's, left alone
    assert isolation._gates == {}


# -- who connects ---------------------------------------------------------------------------


def _connections(caplog: pytest.LogCaptureFixture, logger: str = "chat_state") -> int:
    return sum(
        r.name == logger and r.getMessage().startswith("chat-state connected to")
        for r in caplog.records
    )


@on_targets
async def test_from_url_connects_on_first_use_and_close_disconnects(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chat_state")
    logger = "chat_state.aiogram-bot"  # state_kwargs go to AsyncState.from_url
    storage = ChatStateStorage.from_url(
        target.url, key_prefix=target.prefix, state_ttl=60, logger=logging.getLogger(logger)
    )
    assert storage.state.key_prefix == target.prefix
    assert storage.state_ttl == 60
    assert not storage.state.is_connected
    try:
        # Five coroutines at once: one connection attempt.
        await asyncio.gather(
            storage.set_state(key(), "Form:name"),
            storage.set_data(key(), {"name": "Ann"}),
            *(storage.get_state(key(user)) for user in (1, 2, 3)),
        )
        assert storage.state.is_connected
        assert _connections(caplog, logger) == 1
        assert target.raw.get(cache_key(target, "fsm:42:42:state")) == '"Form:name"'
        await storage.close()
        assert not storage.state.is_connected
        # Used again, it connects again.
        assert await storage.get_data(key()) == {"name": "Ann"}
        assert storage.state.is_connected
        assert _connections(caplog, logger) == 2
    finally:
        await storage.state.clear()
        await storage.close()
    assert not storage.state.is_connected


@on_targets
async def test_isolation_from_url_connects_on_first_use_and_close_disconnects(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    observer = await open_state()
    isolation = ChatStateEventIsolation.from_url(target.url, key_prefix=target.prefix)
    assert not isolation.state.is_connected
    async with isolation.lock(key()):
        assert isolation.state.is_connected
        assert await observer.inspect_lock("fsm:42:42:lock") is not None
    assert await observer.inspect_lock("fsm:42:42:lock") is None
    await isolation.close()
    assert not isolation.state.is_connected


@on_targets
async def test_create_isolation_shares_the_storages_state_and_its_shutdown(
    target: Target,
) -> None:
    storage = ChatStateStorage.from_url(
        target.url, key_prefix=target.prefix, key_builder=DefaultKeyBuilder(prefix="b")
    )
    isolation = storage.create_isolation(ttl_ms=5_000, wait_ms=1_000)
    assert isolation.state is storage.state
    assert isolation.key_builder is storage.key_builder
    assert (isolation.ttl_ms, isolation.wait_ms) == (5_000, 1_000)
    dp = Dispatcher(storage=storage, events_isolation=isolation)
    dp.include_router(form_router())
    bot, session = make_bot()
    try:
        # The FSM middleware takes the lock first: the isolation connects the state.
        await dp.feed_update(bot, update("/start"))
        assert session.texts() == [ASK_NAME]
        assert target.raw.get(cache_key(target, "b:42:42:state")) == '"Form:name"'
        await isolation.close()
        assert storage.state.is_connected  # the storage's to disconnect
    finally:
        await storage.state.clear()
        await dp.emit_shutdown(bot=bot)  # aiogram's shutdown closes both
    assert not storage.state.is_connected


@on_targets
async def test_a_given_state_is_never_connected_nor_disconnected(
    open_state: Callable[[], Awaitable[AsyncState]], target: Target
) -> None:
    state = await open_state()
    dp, storage, _ = dispatcher(state, form_router())
    bot, _ = make_bot()
    await dp.feed_update(bot, update("/start"))
    await dp.emit_shutdown(bot=bot)  # closes the storage and the isolation
    assert state.is_connected
    assert await storage.get_state(key()) == "Form:name"
    # Not connected by the application: the storage does not connect it.
    idle = AsyncState.from_url(target.url, key_prefix=target.prefix)
    with pytest.raises(NotConnectedError):
        await ChatStateStorage(idle).get_state(key())
    with pytest.raises(NotConnectedError):
        async with ChatStateEventIsolation(idle).lock(key()):
            pass
    assert not idle.is_connected


def test_a_state_must_be_an_async_state() -> None:
    with pytest.raises(TypeError, match="AsyncState"):
        ChatStateStorage("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncState"):
        ChatStateEventIsolation(object())  # type: ignore[arg-type]


# -- key builders ---------------------------------------------------------------------------


class FlatKeyBuilder(KeyBuilder):
    """A key builder of one's own."""

    def build(self, key: StorageKey, part: Literal["data", "state", "lock"] | None = None) -> str:
        return f"u{key.user_id}/{part}"


@on_targets
async def test_key_builders_name_the_records_and_the_lock(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    observer = await open_state()
    builder = DefaultKeyBuilder(prefix="bot", with_bot_id=True, with_destiny=True)
    held_while_handling: list[object] = []
    peeker = Router()  # (before the form's handlers, which take any text in Form.age)

    @peeker.message(Command("peek"))
    async def peek(message: Message) -> None:
        held_while_handling.append(await observer.inspect_lock("bot:123456:42:42:default:lock"))

    state = await open_state()
    storage = ChatStateStorage(state, builder)
    dp = Dispatcher(storage=storage, events_isolation=ChatStateEventIsolation(state, builder))
    dp.include_routers(peeker, form_router())
    bot, _ = make_bot()
    await dp.feed_update(bot, update("/start"))
    await dp.feed_update(bot, update("Ann"))
    await dp.feed_update(bot, update("/peek"))
    prefix = f"{target.prefix}:cache:bot:123456:42:42:default"
    assert target.raw.get(f"{prefix}:state") == '"Form:age"'
    assert json.loads(target.raw.get(f"{prefix}:data") or "null") == {"name": "Ann"}
    assert len(held_while_handling) == 1
    assert held_while_handling[0] is not None
    assert await observer.inspect_lock("bot:123456:42:42:default:lock") is None
    # Another destiny is another record.
    scene = key(destiny="scene")
    assert await storage.get_state(scene) is None
    await storage.set_data(scene, {"step": 1})
    assert target.raw.get(f"{target.prefix}:cache:bot:123456:42:42:scene:data") == '{"step":1}'
    assert await storage.get_data(key()) == {"name": "Ann"}
    # The default builder refuses other destinies, as it does with aiogram's storages.
    with pytest.raises(ValueError, match="destiny"):
        await ChatStateStorage(state).get_state(scene)
    # A key builder of one's own.
    flat = ChatStateStorage(state, FlatKeyBuilder())
    await flat.set_state(key(), "Form:name")
    assert target.raw.get(f"{target.prefix}:cache:u42/state") == '"Form:name"'


@on_targets
async def test_topics_and_business_connections_name_their_records_and_locks(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    observer, adapter = await open_state(), await open_state()
    builder = DefaultKeyBuilder(with_business_connection_id=True)
    held: list[list[str]] = []  # the locks held while each update is handled
    router = Router()

    async def note(message: Message, state: FSMContext) -> None:
        held.append(sorted([info.thread_id async for info in observer.iter_locks()]))
        await state.set_state(Form.name)
        await state.update_data(text=message.text)

    router.message()(note)
    router.business_message()(note)
    storage = ChatStateStorage(adapter, builder)
    dp = Dispatcher(
        storage=storage,
        events_isolation=ChatStateEventIsolation(adapter, builder),
        fsm_strategy=FSMStrategy.USER_IN_TOPIC,  # a topic's thread id is in the key
    )
    dp.include_router(router)
    bot, _ = make_bot()
    group, topic = -1001, 7
    in_topic = Message(
        message_id=1,
        date=datetime.now(timezone.utc),
        chat=Chat(id=group, type="supergroup", is_forum=True),
        message_thread_id=topic,
        is_topic_message=True,
        from_user=User(id=ANN, is_bot=False, first_name="Ann"),
        text="in a topic",
    )
    business = update("for a business").message
    assert business is not None
    await dp.feed_update(bot, Update(update_id=next(_update_ids), message=in_topic))
    await dp.feed_update(
        bot,
        Update(
            update_id=next(_update_ids),
            business_message=business.model_copy(update={"business_connection_id": "bc1"}),
        ),
    )
    assert held == [[f"fsm:{group}:{topic}:{ANN}:lock"], [f"fsm:bc1:{ANN}:{ANN}:lock"]]
    assert await observer.inspect_lock(f"fsm:{group}:{topic}:{ANN}:lock") is None
    for name, text in (
        (f"fsm:{group}:{topic}:{ANN}", "in a topic"),
        ("fsm:bc1:42:42", "for a business"),
    ):
        assert target.raw.get(cache_key(target, f"{name}:state")) == '"Form:name"'
        assert json.loads(target.raw.get(cache_key(target, f"{name}:data")) or "null") == {
            "text": text
        }
    # Not the records of the chat and user outside the topic, or without the connection.
    assert await storage.get_state(key()) is None
    assert await storage.get_state(StorageKey(BOT_ID, group, ANN)) is None
    assert await storage.get_state(StorageKey(BOT_ID, group, ANN, thread_id=topic)) == "Form:name"
    assert await storage.get_data(key(business_connection_id="bc1")) == {"text": "for a business"}


@pytest.mark.targets(["redis-server/standalone/redis-py"])
async def test_records_of_aiograms_redis_storage_are_copied_as_documented(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    state = await open_state()
    builder = DefaultKeyBuilder(prefix=f"{target.prefix}-fsm")  # (not "fsm": a shared server)
    state_key, data_key = (builder.build(key(), part) for part in ("state", "data"))
    theirs = RedisStorage.from_url(target.url, key_builder=builder, state_ttl=60)
    ours = ChatStateStorage(state, builder, state_ttl=60)
    redis = theirs.redis
    try:
        await theirs.set_state(key(), Form.age)
        await theirs.set_data(key(), {"name": "Ann", "tags": ["a"]})
        assert await redis.get(state_key) == b"Form:age"  # a bare string
        # Other keys, and a bare string for the state: not read here.
        assert await ours.get_state(key()) is None
        assert await ours.get_data(key()) == {}
        # The copy the module's docstring describes (with the bot stopped).
        async for raw_name in redis.scan_iter(match=f"{builder.prefix}:*"):
            name, raw = raw_name.decode(), await redis.get(raw_name)
            assert isinstance(raw, bytes)
            ttl_ms = max(await redis.pttl(raw_name), 0)  # -1 (no expiry): 0, never
            value = raw.decode()
            await state.set(name, json.loads(value) if name.endswith(":data") else value, ttl_ms)
        assert await ours.get_state(key()) == "Form:age"
        assert await ours.get_data(key()) == {"name": "Ann", "tags": ["a"]}
        assert 55_000 < target.raw.pttl(cache_key(target, state_key)) <= 60_000
        assert target.raw.pttl(cache_key(target, data_key)) == -1
    finally:
        await redis.delete(state_key, data_key)
        await theirs.close()


@on_targets
async def test_data_that_json_cannot_give_back_is_refused(
    target: Target, open_state: Callable[[], Awaitable[AsyncState]]
) -> None:
    storage = ChatStateStorage(await open_state())
    samples: list[dict[Any, Any]] = [
        {1: "a"},  # json.dumps would make it {"1": "a"}
        {"when": datetime.now(timezone.utc)},
        {"x": float("nan")},
    ]
    for data in samples:
        with pytest.raises(SerializationError):
            await storage.set_data(key(), data)
    assert target.raw.get(cache_key(target, "fsm:42:42:data")) is None


# -- imports --------------------------------------------------------------------------------


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_chat_state_never_imports_aiogram() -> None:
    done = _run(
        """
        import sys
        import chat_state, chat_state.integrations, chat_state.integrations.chat_sdk
        from chat_state import AsyncState, State
        print(sorted(m for m in sys.modules if m == "aiogram" or m.startswith("aiogram.")))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("how", ["sys.modules", "meta_path"])
def test_without_aiogram_the_error_names_the_extra(how: str) -> None:
    hide = {
        "sys.modules": 'sys.modules["aiogram"] = None',
        "meta_path": textwrap.dedent(
            """
            class NoAiogram:
                def find_spec(self, name, path=None, target=None):
                    if name == "aiogram" or name.startswith("aiogram."):
                        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                    return None
            sys.meta_path.insert(0, NoAiogram())
            """
        ),
    }[how]
    done = _run(
        "import sys\n"
        + hide
        + textwrap.dedent(
            """
            import chat_state
            try:
                import chat_state.integrations.aiogram
            except ImportError as exc:
                print("ImportError:", exc)
                print("cause:", type(exc.__cause__).__name__)
            """
        )
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ImportError: chat_state.integrations.aiogram needs aiogram:"
        ' pip install "chat-state[aiogram]"',
        "cause: ModuleNotFoundError",
    ]


# -- the example ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_aiogram_example_runs_offline(where: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if where == "memory" else str(request.getfixturevalue("redis_url"))
    environment = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "aiogram_bot.py"), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=environment,  # no BOT_TOKEN: the offline demonstration
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "ann> /start",
        "bot> Hello! What is your name?",
        "ann> Ann",
        "bot> Nice to meet you, Ann. How old are you?",
        "  stored: fsm:42:42:state = 'Form:age', fsm:42:42:data = {'name': 'Ann'}",
        "ann> thirty",
        "bot> Your age, in digits, please.",
        "ann> 33",
        "bot> Ann, 33: thank you!",
        "  stored: nothing (the form cleared it)",
        "bob> /start",
        "bob> Bob",
        "bot> Hello! What is your name?",
        "bot> Nice to meet you, Bob. How old are you?",
        "  bob's state after both: 'Form:age'",
        "bob> 44",
        "bot> Bob, 44: thank you!",
    ]


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_the_records_and_the_lock_are_read_with_the_operator_commands(
    target: Target,
    open_state: Callable[[], Awaitable[AsyncState]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = await open_state()
    storage, isolation = ChatStateStorage(state), ChatStateEventIsolation(state)
    key = StorageKey(bot_id=1, chat_id=42, user_id=42)
    await storage.set_state(key, "Form:age")
    await storage.set_data(key, {"name": "Ann"})
    where = ["--url", target.url, "--prefix", target.prefix, "--json"]
    capsys.readouterr()
    async with isolation.lock(key):
        # (the CLI is blocking: in a worker thread, while this loop renews the lock)
        assert await anyio.to_thread.run_sync(cli.main, ["locks", *where]) == 0
        (held,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert held["thread_id"] == "fsm:42:42:lock"
    assert cli.main(["get", "fsm:42:42:data", *where]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "Ann"}
    assert cli.main(["get", "fsm:42:42:state", *where]) == 0
    assert json.loads(capsys.readouterr().out) == "Form:age"
