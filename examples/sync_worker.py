"""State in blocking code (a script, a Flask view, a worker thread).

Run it: ``uv run python examples/sync_worker.py [URL]`` (default ``memory://``).
"""

from __future__ import annotations

import sys
import threading

from chat_state import State


def work(
    state: State, name: str, thread_id: str, done: list[str], tried: threading.Barrier
) -> None:
    """Take the thread's lock if free, and keep it alive while working."""
    lock = state.acquire_lock(thread_id, ttl_ms=5_000)
    tried.wait()  # every worker has tried once while the winner still holds the lock
    if lock is None:
        return
    try:
        if not state.extend_lock(lock, ttl_ms=5_000):  # check: a lost lock must stop the work
            raise RuntimeError("lost the lock")
        done.append(name)
    finally:
        state.release_lock(lock)


def main(url: str) -> None:
    with State.from_url(url) as state:  # one State is safe to share between threads
        state.set("bot:config", {"greeting": "hi", "languages": ["en", "fr"]}, ttl_ms=60_000)
        print("config:", state.get("bot:config"))
        done: list[str] = []
        start, tried = threading.Barrier(4), threading.Barrier(4)

        def run(name: str) -> None:
            start.wait()
            work(state, name, "teams:19:abc", done, tried)

        workers = [threading.Thread(target=run, args=(f"worker-{n}",)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        print(f"{len(done)} of 4 workers got the thread's lock: {done}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "memory://")
