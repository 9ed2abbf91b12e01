"""A webhook handler's use of AsyncState: de-duplicate, lock the thread, queue, history.

Run it: ``uv run python examples/async_bot.py [URL]`` (default ``memory://``).
"""

from __future__ import annotations

import sys
import time

import anyio

from chat_state import AsyncState, QueueEntry


async def on_webhook(state: AsyncState, event_id: str, thread_id: str, text: str) -> str:
    """Handle one delivery; → what happened to it."""
    # Platforms retry deliveries: keep the id long enough to outlast their retries.
    if not await state.set_if_not_exists(f"dedupe:{event_id}", True, ttl_ms=600_000):
        return "duplicate dropped"
    now = time.time_ns() // 1_000_000
    await state.enqueue(thread_id, QueueEntry(now, now + 90_000, {"text": text}), max_size=10)
    lock = await state.acquire_lock(thread_id, ttl_ms=30_000)
    if lock is None:
        return "queued for the worker that holds the thread"
    try:
        handled = 0
        while (entry := await state.dequeue(thread_id)) is not None:
            await state.append_to_list(
                f"history:{thread_id}", entry.message, max_length=100, ttl_ms=86_400_000
            )
            handled += 1
        return f"handled {handled} message(s)"
    finally:
        await state.release_lock(lock)


async def main(url: str) -> None:
    async with AsyncState.from_url(url) as state:
        await state.subscribe("slack:C1:1700000000.1")
        for event_id, text in [("e1", "hello"), ("e1", "hello"), ("e2", "héllo again")]:
            print(event_id, await on_webhook(state, event_id, "slack:C1:1700000000.1", text))
        print("history:", await state.get_list("history:slack:C1:1700000000.1"))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
