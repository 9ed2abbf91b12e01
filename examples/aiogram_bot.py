"""An aiogram 3 bot whose FSM lives in chat-state: a small form (/start, name, age).

``ChatStateStorage`` keeps each user's state and answers in chat-state (memory, Redis,
Valkey...), so every instance of the bot shares them; ``ChatStateEventIsolation``
(``storage.create_isolation()``) handles one user's updates one at a time across those
instances (in the order they came, within one), under a lock renewed while a handler
runs.

Run it: ``uv run python examples/aiogram_bot.py [URL]`` (default ``memory://``).
Without ``BOT_TOKEN`` it needs no Telegram and no network: it feeds a few updates to the
dispatcher itself, through a session that prints what the bot would send. With
``BOT_TOKEN`` set (a token from @BotFather), it runs for real, polling Telegram::

    BOT_TOKEN=123456:ABC... uv run python examples/aiogram_bot.py redis://localhost:6379/0

Start two of those on the same Redis URL and the conversation goes on whichever
instance gets the next update. Look at what it stores with
``chat-state get fsm:<chat id>:<user id>:data --prefix aiogram-demo --url URL``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncGenerator
from datetime import datetime, timezone
from typing import Any

from aiogram import Bot, Dispatcher, F, Router
from aiogram.client.session.base import BaseSession
from aiogram.filters import Command, CommandStart
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.fsm.storage.base import StorageKey
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.methods.base import TelegramType
from aiogram.types import Chat, Message, Update, User

from chat_state.integrations.aiogram import ChatStateStorage


class Form(StatesGroup):
    name = State()
    age = State()


async def start(message: Message, state: FSMContext) -> None:
    await state.clear()
    await state.set_state(Form.name)
    await message.answer("Hello! What is your name?")


async def cancel(message: Message, state: FSMContext) -> None:
    await state.clear()
    await message.answer("Cancelled. /start to begin again.")


async def name(message: Message, state: FSMContext) -> None:
    await state.update_data(name=message.text)
    await state.set_state(Form.age)
    await message.answer(f"Nice to meet you, {message.text}. How old are you?")


async def age(message: Message, state: FSMContext) -> None:
    if not (message.text or "").isdigit():
        await message.answer("Your age, in digits, please.")
        return
    data = await state.update_data(age=int(message.text or 0))
    await state.clear()
    await message.answer(f"{data['name']}, {data['age']}: thank you!")


def form_router() -> Router:
    """A new router with the form's handlers (a router belongs to one dispatcher)."""
    router = Router(name="form")
    router.message(CommandStart())(start)
    router.message(Command("cancel"))(cancel)
    router.message(Form.name, F.text)(name)
    router.message(Form.age, F.text)(age)
    return router


def make_dispatcher(url: str) -> tuple[Dispatcher, ChatStateStorage]:
    """A dispatcher whose FSM lives at ``url`` (its shutdown disconnects from there),
    and its storage."""
    # TTLs in seconds, as with aiogram's RedisStorage: a form left for a day is forgotten.
    storage = ChatStateStorage.from_url(
        url, key_prefix="aiogram-demo", state_ttl=86_400, data_ttl=86_400
    )
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation())
    dp.include_router(form_router())
    return dp, storage


# -- the offline demonstration -----------------------------------------------------------


class PrintingSession(BaseSession):
    """Instead of calling Telegram: print each message the bot sends, and answer as
    Telegram would (through aiogram's own response parsing)."""

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        if not isinstance(method, SendMessage):
            raise NotImplementedError(f"the demonstration does not call {method.__api_method__}")
        await asyncio.sleep(0.01)  # about what a round trip to Telegram takes
        print(f"bot> {method.text}")
        result = {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": method.chat_id, "type": "private"},
            "text": method.text,
        }
        content = self.json_dumps({"ok": True, "result": result})
        response = self.check_response(bot, method, 200, content)
        return response.result  # type: ignore[return-value]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        raise NotImplementedError("the demonstration downloads nothing")
        yield b""  # (an async generator)

    async def close(self) -> None:
        pass


USERS = {"ann": 42, "bob": 43}
_update_ids = iter(range(1, 1_000_000))


def incoming(user: str, text: str) -> Update:
    """The update Telegram would send when ``user`` writes ``text`` to the bot."""
    user_id, update_id = USERS[user], next(_update_ids)
    print(f"{user}> {text}")
    return Update(
        update_id=update_id,
        message=Message(
            message_id=update_id,
            date=datetime.now(timezone.utc),
            chat=Chat(id=user_id, type="private"),
            from_user=User(id=user_id, is_bot=False, first_name=user.title()),
            text=text,
        ),
    )


async def show_stored(storage: ChatStateStorage) -> None:
    """What chat-state holds for ann, under the keys ``chat-state get`` takes."""
    found = {k: await storage.state.get(k) for k in ("fsm:42:42:state", "fsm:42:42:data")}
    stored = {k: v for k, v in found.items() if v is not None}
    if not stored:
        print("  stored: nothing (the form cleared it)")
    else:
        print("  stored: " + ", ".join(f"{k} = {v!r}" for k, v in stored.items()))


async def demonstrate(url: str) -> None:
    dp, storage = make_dispatcher(url)
    bot = Bot("123456:offline-demonstration", session=PrintingSession())
    try:
        for text in ["/start", "Ann"]:
            await dp.feed_update(bot, incoming("ann", text))
        await show_stored(storage)
        for text in ["thirty", "33"]:
            await dp.feed_update(bot, incoming("ann", text))
        await show_stored(storage)
        # Two updates from bob at once (a double tap): the isolation handles them in the
        # order they came, the second once the first is done, so it sees the state the
        # first one set.
        await asyncio.gather(
            dp.feed_update(bot, incoming("bob", "/start")),
            dp.feed_update(bot, incoming("bob", "Bob")),
        )
        bob = StorageKey(bot_id=bot.id, chat_id=USERS["bob"], user_id=USERS["bob"])
        print(f"  bob's state after both: {await storage.get_state(bob)!r}")
        await dp.feed_update(bot, incoming("bob", "44"))
    finally:
        await dp.emit_shutdown(bot=bot)  # closes the storage: it disconnects


async def run_for_real(token: str, url: str) -> None:
    dp, _ = make_dispatcher(url)
    await dp.start_polling(Bot(token))


if __name__ == "__main__":
    where = sys.argv[1] if len(sys.argv) > 1 else "memory://"
    token = os.environ.get("BOT_TOKEN")
    asyncio.run(run_for_real(token, where) if token else demonstrate(where))
