"""Event loops and processes: which one runs the caller, and what outlives whom.

anyio runs on asyncio and on trio. redis-py's and valkey-py's asyncio clients
need asyncio; coredis runs on both, but its clients must be entered and exited
in one task, so chat-state gives each client a task of its own that lives from
``connect()`` to ``disconnect()`` (asyncio: a plain task; trio: a system task).

An AsyncState's connections belong to the event loop and the process that
connected it. This module tells which loop is running (:func:`current_loop`),
whether another one still runs (:func:`loop_running`), when a loop shuts down
(:class:`LoopEnd`), and what to forget in a forked child (:func:`after_fork`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, Protocol

__all__ = [
    "LoopEnd",
    "abandon",
    "after_fork",
    "current_loop",
    "loop_running",
    "on_asyncio",
    "spawn_detached",
]

_tasks: set[asyncio.Task[None]] = set()  # strong references until each task ends


def on_asyncio() -> bool:
    """Whether the running event loop is asyncio's."""
    return asyncio._get_running_loop() is not None


def current_loop() -> object | None:
    """The running event loop: asyncio's loop object, or trio's run (its token).

    ``None`` when neither runs in this thread. Two calls in one loop return the same
    object, so ``is`` tells loops apart.
    """
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            token: object = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return None
        return token
    return None


def _nothing() -> None:
    return None


def loop_running(loop: object) -> bool:
    """Whether ``loop`` (as :func:`current_loop` gave it) is running now, in any thread."""
    if isinstance(loop, asyncio.AbstractEventLoop):
        return loop.is_running()
    trio = sys.modules.get("trio")
    if trio is None or not isinstance(loop, trio.lowlevel.TrioToken):
        return False
    try:
        loop.run_sync_soon(_nothing)  # the one way to ask a trio run whether it has ended
    except trio.RunFinishedError:
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


class LoopEnd:
    """Runs ``on_end(this LoopEnd)`` in the running event loop when that loop shuts down.

    It rides on the loop's finalisation of asynchronous generators, which
    ``asyncio.run()``, ``asyncio.Runner``, ``uvloop.run()`` and ``trio.run()`` do
    before the loop closes (``loop.shutdown_asyncgens()``). trio allows no awaiting
    then: ``on_end`` must not suspend there (:func:`on_asyncio` tells). A loop that is
    closed without that step never calls it.
    """

    def __init__(self, on_end: Callable[[LoopEnd], Coroutine[Any, Any, None]]) -> None:
        self._on_end: Callable[[LoopEnd], Coroutine[Any, Any, None]] | None = on_end
        self._generator = self._watch()
        self.loop: object = None  # the loop it watches, once started

    async def _watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            _kept.discard(self)
            on_end, self._on_end = self._on_end, None
            if on_end is not None:
                await on_end(self)

    async def start(self) -> None:
        """Start watching the running loop (its first step registers it with the loop)."""
        self.loop = current_loop()
        await self._generator.asend(None)

    def disarm(self) -> None:
        """Never call ``on_end`` (from any thread; the loop finalises the rest)."""
        self._on_end = None
        _kept.discard(self)

    def keep(self) -> None:
        """Go on watching after its owner let go of it: until the loop shuts down.

        For a loop that merely stopped (it may run and shut down later); a closed loop,
        or a trio run that has ended, will never call it, so it is not kept then.
        """
        loop = self.loop
        if isinstance(loop, asyncio.AbstractEventLoop):
            will_shut_down = not loop.is_closed()
        else:  # a trio run shuts down only as it ends
            will_shut_down = loop_running(loop)
        if will_shut_down:
            _kept.add(self)

    async def stop(self) -> None:
        """Stop watching, in the loop being watched."""
        self._on_end = None
        await self._generator.aclose()


#: LoopEnds that their owners let go of, kept until their loops shut down.
_kept: set[LoopEnd] = set()


class _ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_in_parent: weakref.WeakSet[_ForkAware] = weakref.WeakSet()
_abandoned: list[object] = []


def after_fork(thing: _ForkAware) -> None:
    """Call ``thing._after_fork()`` in the child of every ``fork()`` while ``thing`` lives."""
    _in_parent.add(thing)


def abandon(*things: object) -> None:
    """Keep ``things`` (a parent's connections, in a forked child) and never touch them.

    Nothing of theirs is finalised in the child: closing them there could disturb the
    parent, which shares their sockets and its event loop's selector.
    """
    _abandoned.extend(things)


def _forget_in_child() -> None:
    for thing in list(_in_parent):
        thing._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
