"""Which event loop runs the caller, and tasks that outlive the caller's scope.

anyio runs on asyncio and on trio. redis-py's and valkey-py's asyncio clients
need asyncio; coredis runs on both, but its clients must be entered and exited
in one task, so chat-state gives each client a task of its own that lives from
``connect()`` to ``disconnect()`` (asyncio: a plain task; trio: a system task).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["on_asyncio", "spawn_detached"]

_tasks: set[asyncio.Task[None]] = set()  # strong references until each task ends


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def spawn_detached(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Start ``fn()`` as a task of the running loop that no caller's scope contains.

    ``fn`` must handle its own exceptions. When the loop ends (``asyncio.run``
    returns, trio's main task exits) the task is cancelled.
    """
    if on_asyncio():
        task = asyncio.get_running_loop().create_task(fn())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
        return
    import trio  # noqa: PLC0415  (anyio's only other loop; imported only under it)

    trio.lowlevel.spawn_system_task(fn)
