"""A Flask webhook app on State: de-duplicate retried deliveries, queue each message on
its thread and drain the queue under the thread's lock, keep history.

Run it: ``uv run python examples/flask_app.py [URL] [--port N]`` (default
``memory://``, port 8000), then::

    curl -X POST localhost:8000/webhook -H 'Content-Type: application/json' \\
         -d '{"event_id": "e1", "thread_id": "slack:C1:1700000000.1", "text": "hello"}'
    curl localhost:8000/threads/slack:C1:1700000000.1/history
    curl localhost:8000/healthz

One ``State`` serves the whole process: it is safe to share between threads (each
command borrows an idle connection, or opens one), so Flask's threaded dev server,
gunicorn's ``--threads`` and a forked worker (``--preload``: the child opens its own
connections) all work. ``memory://`` lives in one process: run several workers on a
Redis or Valkey URL.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import time
from typing import Any

from flask import Flask, request

from chat_state import ChatStateError, LockLostError, LockUnavailableError, QueueEntry, State

#: Platforms retry a delivery for a few minutes: remember its id for ten.
DEDUPE_TTL_MS = 10 * 60_000
#: How long a queued message may wait for the thread's lock before it is dropped.
QUEUE_ENTRY_TTL_MS = 90_000
QUEUE_MAX_SIZE = 100
HISTORY_LENGTH = 100
HISTORY_TTL_MS = 24 * 60 * 60_000
FIELDS = ("event_id", "thread_id", "text")


def is_text(value: object) -> bool:
    """A non-empty string UTF-8 can encode: JSON can carry a lone surrogate ("\\ud800"),
    which it cannot (chat_state refuses one in a key or thread id)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def handle(state: State, thread_id: str, message: dict[str, Any]) -> None:
    """The bot's work for one message (here: keep it in the thread's history)."""
    state.append_to_list(
        f"history:{thread_id}", message, max_length=HISTORY_LENGTH, ttl_ms=HISTORY_TTL_MS
    )


def drain(state: State, thread_id: str) -> int:
    """Handle the thread's queued messages under its lock; → how many this request handled.

    The hand-off of examples/async_bot.py: every message is queued first; whoever gets
    the lock drains the queue and looks at it again after releasing, so a message
    queued just as the holder releases is never left behind.
    """
    handled = 0
    while True:
        try:
            # Renewed every 10 s by a daemon thread; were it lost, LockLostError at the end.
            with state.lock(thread_id, ttl_ms=30_000):
                while (entry := state.dequeue(thread_id)) is not None:
                    if entry.expires_at >= time.time_ns() // 1_000_000:
                        handle(state, thread_id, entry.message)
                        handled += 1
        except LockUnavailableError:
            return handled  # its holder looks at the queue again after releasing
        except LockLostError:
            pass  # look at the queue again, as after a release
        if not state.queue_depth(thread_id):
            return handled


def create_app(url: str = "memory://") -> Flask:
    """The app, with one State connected for the life of the process (or until
    :func:`close_app`)."""
    app = Flask(__name__)
    # Flask has no startup/shutdown hooks (teardown_appcontext runs after every
    # request): connect here, once, and disconnect when the interpreter exits (or in
    # close_app).
    state = State.from_url(url)
    state.connect()
    atexit.register(state.disconnect)
    app.extensions["chat_state"] = state  # for other modules (and tests) to find it

    @app.post("/webhook")
    def webhook() -> tuple[dict[str, Any], int]:
        event = request.get_json(silent=True)
        if not isinstance(event, dict):
            return {"error": "expected a JSON object with event_id, thread_id and text"}, 400
        for field in FIELDS:  # all checked before anything is written
            if not is_text(event.get(field)):
                return {"error": f"{field}: expected a non-empty string UTF-8 can encode"}, 400
        event_id, thread_id, text = (event[f] for f in FIELDS)
        # The platform's retry of a delivery we already took: acknowledge, do nothing.
        if not state.set_if_not_exists(f"dedupe:{event_id}", True, ttl_ms=DEDUPE_TTL_MS):
            return {"status": "duplicate"}, 200
        now = time.time_ns() // 1_000_000
        message = {"event_id": event_id, "text": text}
        entry = QueueEntry(now, now + QUEUE_ENTRY_TTL_MS, message)
        try:
            state.enqueue(thread_id, entry, max_size=QUEUE_MAX_SIZE)
        except Exception:
            # Not queued (the server is down...): forget the delivery, so that the
            # platform's retry is handled, not dropped as a duplicate. Best effort: if
            # this fails too, the error above still propagates (a 500); and after a
            # timeout the entry may have been queued, so the retry may handle it twice.
            with contextlib.suppress(ChatStateError):
                state.delete(f"dedupe:{event_id}")
            raise
        handled = drain(state, thread_id)
        if handled:
            return {"status": "handled", "handled": handled}, 200
        return {"status": "queued"}, 202  # the worker holding the thread's lock takes it

    @app.get("/threads/<path:thread_id>/history")  # path:, as some thread ids hold a "/"
    def history(thread_id: str) -> dict[str, Any]:
        return {"thread_id": thread_id, "messages": state.get_list(f"history:{thread_id}")}

    @app.get("/healthz")
    def healthz() -> tuple[dict[str, Any], int]:
        health = state.health()  # never raises: ok is False when a server is down
        # It names the servers (host:port, never a password): keep /healthz internal.
        return health.as_dict(), 200 if health.ok else 503

    return app


def close_app(app: Flask) -> None:
    """Disconnect the app's State now rather than at exit (tests create many apps)."""
    state: State = app.extensions.pop("chat_state")
    atexit.unregister(state.disconnect)
    state.disconnect()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The Flask webhook example's dev server.")
    parser.add_argument("url", nargs="?", default="memory://")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    # The dev server: threaded (a thread per request) by default. In production:
    # gunicorn 'flask_app:create_app("redis://...")'
    create_app(args.url).run(host="127.0.0.1", port=args.port)
