"""A FastAPI webhook app on AsyncState: de-duplicate retried deliveries, queue each
message on its thread and drain the queue under the thread's lock, keep history.

Run it: ``uv run python examples/fastapi_app.py [URL] [--port N]`` (default
``memory://``, port 8000), then::

    curl -X POST localhost:8000/webhook -H 'Content-Type: application/json' \\
         -d '{"event_id": "e1", "thread_id": "slack:C1:1700000000.1", "text": "hello"}'
    curl localhost:8000/threads/slack:C1:1700000000.1/history
    curl localhost:8000/healthz

The AsyncState is connected in the app's lifespan, in the event loop that serves the
requests (an AsyncState belongs to the loop that connected it), and disconnected when
the server shuts down. Each uvicorn worker process has its own; ``memory://`` lives
in one process: run several workers on a Redis or Valkey URL.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from chat_state import (
    AsyncState,
    ChatStateError,
    LockLostError,
    LockUnavailableError,
    QueueEntry,
)

#: Platforms retry a delivery for a few minutes: remember its id for ten.
DEDUPE_TTL_MS = 10 * 60_000
#: How long a queued message may wait for the thread's lock before it is dropped.
QUEUE_ENTRY_TTL_MS = 90_000
QUEUE_MAX_SIZE = 100
HISTORY_LENGTH = 100
HISTORY_TTL_MS = 24 * 60 * 60_000


class Event(BaseModel):
    """One delivery from the platform (anything else gets a 422). A ``str`` field
    refuses a lone surrogate ("\\ud800", legal in JSON), which UTF-8 cannot encode."""

    event_id: str = Field(min_length=1)
    thread_id: str = Field(min_length=1)
    text: str = Field(min_length=1)


def get_state(request: Request) -> AsyncState:
    """The AsyncState the lifespan connected (a dependency: ``Depends(get_state)``)."""
    state: AsyncState = request.app.state.chat_state
    return state


StateDep = Annotated[AsyncState, Depends(get_state)]
router = APIRouter()


async def handle(state: AsyncState, thread_id: str, message: dict[str, Any]) -> None:
    """The bot's work for one message (here: keep it in the thread's history)."""
    await state.append_to_list(
        f"history:{thread_id}", message, max_length=HISTORY_LENGTH, ttl_ms=HISTORY_TTL_MS
    )


async def drain(state: AsyncState, thread_id: str) -> int:
    """Handle the thread's queued messages under its lock; → how many this request handled.

    The hand-off of examples/async_bot.py: every message is queued first; whoever gets
    the lock drains the queue and looks at it again after releasing, so a message
    queued just as the holder releases is never left behind.
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


@router.post("/webhook")
async def webhook(event: Event, state: StateDep, response: Response) -> dict[str, Any]:
    # The platform's retry of a delivery we already took: acknowledge, do nothing.
    if not await state.set_if_not_exists(f"dedupe:{event.event_id}", True, ttl_ms=DEDUPE_TTL_MS):
        return {"status": "duplicate"}
    now = time.time_ns() // 1_000_000
    message = {"event_id": event.event_id, "text": event.text}
    entry = QueueEntry(now, now + QUEUE_ENTRY_TTL_MS, message)
    try:
        await state.enqueue(event.thread_id, entry, max_size=QUEUE_MAX_SIZE)
    except Exception:
        # Not queued (the server is down...): forget the delivery, so that the
        # platform's retry is handled, not dropped as a duplicate. Best effort: if this
        # fails too, the error above still propagates (a 500); and after a timeout the
        # entry may have been queued, so the retry may handle it twice.
        with suppress(ChatStateError):
            await state.delete(f"dedupe:{event.event_id}")
        raise
    handled = await drain(state, event.thread_id)
    if handled:
        return {"status": "handled", "handled": handled}
    response.status_code = 202  # the request holding the thread's lock takes it
    return {"status": "queued"}


@router.get("/threads/{thread_id:path}/history")  # :path, as some thread ids hold a "/"
async def history(thread_id: str, state: StateDep) -> dict[str, Any]:
    return {"thread_id": thread_id, "messages": await state.get_list(f"history:{thread_id}")}


@router.get("/healthz")
async def healthz(state: StateDep, response: Response) -> dict[str, Any]:
    health = await state.health()  # never raises: ok is False when a server is down
    # It names the servers (host:port, never a password): keep /healthz internal.
    if not health.ok:
        response.status_code = 503
    return health.as_dict()


async def refuse(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, without the input it echoes: a lone surrogate in it cannot be
    written as UTF-8, which would turn the 422 into a 500."""
    errors = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(url: str = "memory://") -> FastAPI:
    """The app; its AsyncState is connected while the server runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncState.from_url(url) as state:  # connects; disconnects at the end
            app.state.chat_state = state
            yield

    app = FastAPI(lifespan=lifespan, exception_handlers={RequestValidationError: refuse})
    app.include_router(router)
    return app


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description="The FastAPI webhook example's server.")
    parser.add_argument("url", nargs="?", default="memory://")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # In production, a module of yours with app = create_app(os.environ["REDIS_URL"]),
    # served by: uvicorn yourmodule:app --workers 4
    uvicorn.run(create_app(args.url), host="127.0.0.1", port=args.port)
