"""A webhook handler's use of AsyncState: de-duplicate, queue, drain under the thread's
lock (held with ``state.lock()``, renewed while the handler runs), keep history.

Run it: ``uv run python examples/async_bot.py [URL]`` (default ``memory://``).
"""

from __future__ import annotations

import contextlib
import sys
import time

import anyio

from chat_state import AsyncState, ChatStateError, LockLostError, LockUnavailableError, QueueEntry


async def handle(state: AsyncState, thread_id: str, message: dict[str, str]) -> None:
    """The bot's work for one message (here: keep it in the thread's history)."""
    await state.append_to_list(f"history:{thread_id}", message, max_length=100, ttl_ms=86_400_000)


async def drain(state: AsyncState, thread_id: str) -> int:
    """Handle the thread's queued messages under its lock; → how many this worker handled.

    The hand-off: the holder looks at the queue again after releasing, and a newcomer
    tries the lock after queueing, so a message queued just as the holder releases is
    never left behind (vercel/chat #928).
    """
    handled = 0
    while True:
        try:
            # Renewed every 10 s; were it lost, the block is cancelled (LockLostError).
            async with state.lock(thread_id, ttl_ms=30_000):
                while (entry := await state.dequeue(thread_id)) is not None:
                    if entry.expires_at >= time.time_ns() // 1_000_000:
                        await handle(state, thread_id, entry.message)
                        handled += 1
        except LockUnavailableError:
            return handled  # its holder looks at the queue again after releasing
        except LockLostError:
            pass  # look at the queue again, as after a release
        if not await state.queue_depth(thread_id):
            return handled


async def on_webhook(state: AsyncState, event_id: str, thread_id: str, text: str) -> str:
    """Handle one delivery; → what happened to it."""
    # Platforms retry deliveries: keep the id long enough to outlast their retries.
    if not await state.set_if_not_exists(f"dedupe:{event_id}", True, ttl_ms=600_000):
        return "duplicate dropped"
    now = time.time_ns() // 1_000_000
    try:
        await state.enqueue(thread_id, QueueEntry(now, now + 90_000, {"text": text}), max_size=10)
    except Exception:
        # Not queued (the server is down, a bad thread id...): forget the delivery, so
        # that the platform's retry is handled, not dropped as a duplicate. Best effort:
        # if this fails too, the error above still propagates; and after a timeout the
        # entry may have been queued, so the retry may handle it twice.
        with contextlib.suppress(ChatStateError):
            await state.delete(f"dedupe:{event_id}")
        raise
    handled = await drain(state, thread_id)
    return f"handled {handled} message(s)" if handled else "queued for the worker that holds it"


async def main(url: str) -> None:
    async with AsyncState.from_url(url) as state:
        await state.subscribe("slack:C1:1700000000.1")
        for event_id, text in [("e1", "hello"), ("e1", "hello"), ("e2", "héllo again")]:
            print(event_id, await on_webhook(state, event_id, "slack:C1:1700000000.1", text))
        print("history:", await state.get_list("history:slack:C1:1700000000.1"))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1] if len(sys.argv) > 1 else "memory://")
