"""State in blocking code (a script, a Flask view, a worker thread).

Run it: ``uv run python examples/sync_worker.py [URL]`` (default ``memory://``).
"""

from __future__ import annotations

import sys
import threading

from chat_state import LockUnavailableError, State


def work(
    state: State, name: str, thread_id: str, done: list[str], tried: threading.Barrier
) -> None:
    """Hold the thread's lock if it is free: renewed while the work runs, released after."""
    try:
        # One try (wait_ms=0). Were the lock lost meanwhile, LockLostError at the end.
        with state.lock(thread_id, ttl_ms=5_000):
            tried.wait()  # every worker has tried once while the winner holds the lock
            done.append(name)
    except LockUnavailableError:
        tried.wait()


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
