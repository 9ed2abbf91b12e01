"""The bot's tests, on chat-state's fixtures.

    uv run pytest examples/testing_your_bot                              # memory://
    uv run pytest examples/testing_your_bot --chat-state-server redis    # a private redis-server
    uv run pytest examples/testing_your_bot --chat-state-server valkey:cluster
    uv run pytest examples/testing_your_bot --chat-state-url redis://127.0.0.1:6380/0

Each test gets a state adapter under a key prefix of its own, emptied after the test.
"""

from __future__ import annotations

import bot
import pytest

from chat_state import AsyncState, State
from chat_state.pytest_plugin import StateClock


def test_a_message_is_greeted_and_noted(state: State) -> None:
    assert bot.on_message(state, "e1", "thread-1", "hi") == [
        bot.GREETING,
        "noted (1 in this thread)",
    ]
    assert bot.on_message(state, "e2", "thread-1", "again") == ["noted (2 in this thread)"]
    assert bot.history(state, "thread-1") == ["hi", "again"]
    assert state.is_subscribed("thread-1")


def test_a_repeated_delivery_is_dropped(state: State) -> None:
    bot.on_message(state, "e1", "thread-1", "hi")
    assert bot.on_message(state, "e1", "thread-1", "hi") == []
    assert bot.history(state, "thread-1") == ["hi"]


def test_the_history_keeps_the_last_messages(state: State) -> None:
    for n in range(bot.HISTORY_LENGTH + 5):
        bot.on_message(state, f"e{n}", "thread-1", f"m{n}")
    assert bot.history(state, "thread-1") == [f"m{n}" for n in range(5, bot.HISTORY_LENGTH + 5)]


def test_one_worker_at_a_time_answers(state: State) -> None:
    assert bot.claim_answer(state, "thread-1")
    assert not bot.claim_answer(state, "thread-1")
    assert bot.claim_answer(state, "thread-2")


def test_the_greeting_comes_again_the_next_day(state: State, clock: StateClock) -> None:
    bot.on_message(state, "e1", "thread-1", "hi")
    clock.advance(bot.GREETING_TTL_MS - 1)
    assert bot.on_message(state, "e2", "thread-1", "hi") == ["noted (2 in this thread)"]
    clock.advance(1)
    assert bot.on_message(state, "e3", "thread-1", "hi")[0] == bot.GREETING


def test_a_delivery_id_is_forgotten_after_ten_minutes(state: State, clock: StateClock) -> None:
    bot.on_message(state, "e1", "thread-1", "hi")
    clock.advance(bot.DEDUPE_TTL_MS)
    assert bot.on_message(state, "e1", "thread-1", "hi") == ["noted (2 in this thread)"]


def test_a_crashed_workers_lock_expires(state: State, clock: StateClock) -> None:
    assert bot.claim_answer(state, "thread-1")  # ... and the worker crashes
    clock.advance(bot.ANSWER_LOCK_TTL_MS)
    assert bot.claim_answer(state, "thread-1")


@pytest.mark.anyio
async def test_the_async_bot(async_state: AsyncState) -> None:
    replies = await bot.on_message_async(async_state, "e1", "thread-1", "hi")
    assert replies == [bot.GREETING, "noted (1 in this thread)"]
    assert await bot.on_message_async(async_state, "e1", "thread-1", "hi") == []
    assert await async_state.is_subscribed("thread-1")
