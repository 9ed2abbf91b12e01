"""A worker process for the lock tests: increments a counter under ``state.lock()``.

``python -m tests.lock_worker URL PREFIX DRIVER FACADE THREAD COUNTER TIMES`` does
``TIMES`` read-modify-write increments of the cache value ``COUNTER`` inside
``lock(THREAD, wait_ms=...)``, through ``State`` (``FACADE=sync``) or ``AsyncState``
(``async``), and prints how many it made. ``DRIVER`` is ``-`` for none.
"""

from __future__ import annotations

import sys

import anyio

from chat_state import AsyncState, State

TTL_MS = 5_000
WAIT_MS = 60_000


def run_sync(url: str, prefix: str, driver: str | None, thread: str, key: str, times: int) -> int:
    with State.from_url(url, key_prefix=prefix, driver=driver) as state:
        for _ in range(times):
            with state.lock(thread, TTL_MS, wait_ms=WAIT_MS):
                state.set(key, (state.get(key) or 0) + 1)
    return times


async def run_async(
    url: str, prefix: str, driver: str | None, thread: str, key: str, times: int
) -> int:
    async with AsyncState.from_url(url, key_prefix=prefix, driver=driver) as state:
        for _ in range(times):
            async with state.lock(thread, TTL_MS, wait_ms=WAIT_MS):
                value = await state.get(key)
                await anyio.sleep(0)  # let the other processes' commands in between
                await state.set(key, (value or 0) + 1)
    return times


def main(argv: list[str]) -> None:
    url, prefix, driver_arg, facade, thread, key, times_arg = argv
    driver = None if driver_arg == "-" else driver_arg
    times = int(times_arg)
    if facade == "sync":
        done = run_sync(url, prefix, driver, thread, key, times)
    else:
        done = anyio.run(run_async, url, prefix, driver, thread, key, times)
    print(done)


if __name__ == "__main__":
    main(sys.argv[1:])
