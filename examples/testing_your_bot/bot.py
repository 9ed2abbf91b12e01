"""A tiny bot to test: it drops platforms' repeated deliveries, greets a thread once a
day, keeps the thread's last messages, and lets one worker at a time answer.

``test_bot.py`` beside it tests it with chat-state's pytest fixtures, on memory:// by
default and on a real server with ``--chat-state-server redis``.
"""

from __future__ import annotations

from chat_state import AsyncState, State

#: Platforms retry a delivery for a few minutes: remember its id for ten.
DEDUPE_TTL_MS = 10 * 60_000
#: Greet a thread again after a day.
GREETING_TTL_MS = 24 * 60 * 60_000
#: How long a worker that crashed keeps the thread from the others.
ANSWER_LOCK_TTL_MS = 30_000
HISTORY_LENGTH = 20
GREETING = "Hello! I keep notes of this thread."


def on_message(state: State, event_id: str, thread_id: str, text: str) -> list[str]:
    """Handle one delivery; → the bot's replies (none for a repeated delivery)."""
    if not state.set_if_not_exists(f"dedupe:{event_id}", True, ttl_ms=DEDUPE_TTL_MS):
        return []
    state.subscribe(thread_id)
    replies = []
    if state.set_if_not_exists(f"greeted:{thread_id}", True, ttl_ms=GREETING_TTL_MS):
        replies.append(GREETING)
    state.append_to_list(f"history:{thread_id}", text, max_length=HISTORY_LENGTH)
    replies.append(f"noted ({len(history(state, thread_id))} in this thread)")
    return replies


def history(state: State, thread_id: str) -> list[str]:
    """The thread's last messages, oldest first."""
    return [str(text) for text in state.get_list(f"history:{thread_id}")]


def claim_answer(state: State, thread_id: str) -> bool:
    """Whether this worker may answer the thread now: it takes the thread's lock, which
    expires by itself (a worker that crashed blocks the thread for its TTL only)."""
    return state.acquire_lock(thread_id, ANSWER_LOCK_TTL_MS) is not None


async def on_message_async(
    state: AsyncState, event_id: str, thread_id: str, text: str
) -> list[str]:
    """:func:`on_message` for an async bot."""
    if not await state.set_if_not_exists(f"dedupe:{event_id}", True, ttl_ms=DEDUPE_TTL_MS):
        return []
    await state.subscribe(thread_id)
    replies = []
    if await state.set_if_not_exists(f"greeted:{thread_id}", True, ttl_ms=GREETING_TTL_MS):
        replies.append(GREETING)
    await state.append_to_list(f"history:{thread_id}", text, max_length=HISTORY_LENGTH)
    count = len(await state.get_list(f"history:{thread_id}"))
    replies.append(f"noted ({count} in this thread)")
    return replies
