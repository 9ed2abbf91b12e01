"""The operators' view of a state, for both facades: subscriptions, locks, queues, counts,
and the removal of every key under a prefix.

Everything here walks the key space with SCAN (SSCAN for the subscriptions) on every
primary, never KEYS, and holds at most one page of keys and a few counters at a time,
so it runs in constant memory over millions of keys. As with SCAN, a key written or
removed while a walk runs may or may not be seen. Each lock and queue is read with one
script, so its fields come from one instant.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from .core import operations as ops
from .core.inspection import server_stats
from .core.layout import DEFAULT_PREFIX, Layout
from .core.operations import Prepared
from .errors import BackendError, ConfigurationError
from .models import LockInfo, QueueInfo, StateStats

if TYPE_CHECKING:
    from .backend.interface import NodeReply
    from .facades import AsyncState, State

__all__ = [
    "DEEPEST",
    "UNLINK_BATCH",
    "clear",
    "clear_async",
    "iter_locks",
    "iter_locks_async",
    "iter_queues",
    "iter_queues_async",
    "iter_subscriptions",
    "iter_subscriptions_async",
    "stats",
    "stats_async",
]

T = TypeVar("T")

#: How many of the deepest queues :meth:`stats` reports.
DEEPEST = 10
#: Keys one UNLINK removes at most (on a Cluster, one key per UNLINK).
UNLINK_BATCH = 500


def _refuse_default(layout: Layout, allow_default_prefix: bool) -> None:
    if layout.prefix == DEFAULT_PREFIX and not allow_default_prefix:
        raise ConfigurationError(
            f"clear() would remove every key under the default prefix {DEFAULT_PREFIX!r}, "
            "which every bot that did not choose a prefix shares: pass "
            "allow_default_prefix=True if that is what you want"
        )


def _named(key: str, start: str) -> str | None:
    """The name in ``key`` after ``start`` (``None`` for the bare ``start``)."""
    return key[len(start) :] or None


class _Tally:
    """What :func:`stats` counts as the keys go by: constant memory."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.kinds: Counter[str] = Counter()
        self.queued = 0
        self._deepest: list[tuple[int, str, int, QueueInfo]] = []  # min-heap of the DEEPEST
        self._seen = itertools.count()

    def key(self, kind: str, info: QueueInfo | None = None) -> None:
        """A key of ``kind``; a queue with what :func:`ops.queue_info_at` read of it
        (``None``: not a list, which no adapter writes there: counted as other)."""
        if kind == "queue" and info is None:
            kind = "other"
        self.kinds[kind] += 1
        if info is None:
            return
        self.queued += info.depth
        entry = (info.depth, info.thread_id, next(self._seen), info)  # (no tie reaches info)
        if len(self._deepest) < DEEPEST:
            heapq.heappush(self._deepest, entry)
        elif entry > self._deepest[0]:
            heapq.heapreplace(self._deepest, entry)

    def deepest(self) -> list[QueueInfo]:
        return [info for *_, info in sorted(self._deepest, reverse=True)]

    def result(self, subscriptions: int, servers: list[NodeReply]) -> StateStats:
        kinds = self.kinds
        return StateStats(
            prefix=self.layout.prefix,
            subscriptions=subscriptions,
            locks=kinds["lock"],
            cache_keys=kinds["cache"],
            lists=kinds["list"],
            queues=kinds["queue"],
            queued_entries=self.queued,
            other_keys=kinds["other"],
            deepest_queues=tuple(self.deepest()),
            servers=tuple(s for node in servers for s in server_stats(node.address, node.reply)),
        )


# -- State ------------------------------------------------------------------------------


def iter_subscriptions(state: State) -> Iterator[str]:
    cursor = "0"
    while True:
        where, command, finish = ops.subscriptions_page(state._layout, cursor)
        cursor, members = finish(state._call(where, command))
        yield from members
        if cursor == "0":
            return


def _walk(
    state: State, kind: str, info_at: Callable[[str, str], Prepared[T | None]]
) -> Iterator[T]:
    """What ``info_at`` reads of each key of ``kind`` (``"lock"``, ``"queue"``) a SCAN
    finds, but those gone since."""
    start = state._layout.kinds()[kind]
    for key in state._connected().scan(start):
        thread_id = _named(key, start)
        if thread_id is not None:
            where, command, finish = info_at(key, thread_id)
            info = finish(state._script(where, command))
            if info is not None:
                yield info


def iter_locks(state: State) -> Iterator[LockInfo]:
    return _walk(state, "lock", ops.lock_info_at)


def iter_queues(state: State) -> Iterator[QueueInfo]:
    return _walk(state, "queue", ops.queue_info_at)


def stats(state: State) -> StateStats:
    layout, tally = state._layout, _Tally(state._layout)
    for key in state._connected().scan(layout.all):
        kind, name = layout.parse(key)
        info = None
        if kind == "queue":
            where, command, finish = ops.queue_info_at(key, name)
            info = finish(state._script(where, command))
        tally.key(kind, info)
    where, command, count = ops.subscription_count(layout)
    return tally.result(count(state._call(where, command)), state._each_primary(ops.INFO))


def _unlink(state: State, keys: list[str], together: bool) -> tuple[int, bool]:
    """UNLINK ``keys`` in one command while ``together``; → (removed, still together).
    A Cluster refuses keys of several slots: then (and from then on) one by one
    (UNLINK again is harmless: a key already gone counts 0)."""
    if together:
        where, command, finish = ops.unlink(keys)
        try:
            return finish(state._call(where, command)), True
        except BackendError:
            if len(keys) == 1:
                raise
    removed = 0
    for key in keys:
        where, command, finish = ops.unlink([key])
        removed += finish(state._call(where, command))
    return removed, False


def clear(state: State, allow_default_prefix: bool) -> int:
    layout = state._layout
    _refuse_default(layout, allow_default_prefix)
    removed, together, batch = 0, True, []
    for key in state._connected().scan(layout.all):
        batch.append(key)
        if len(batch) == UNLINK_BATCH:
            done, together = _unlink(state, batch, together)
            removed, batch = removed + done, []
    if batch:
        removed += _unlink(state, batch, together)[0]
    return removed


# -- AsyncState (the same walks, awaited) ------------------------------------------------


async def iter_subscriptions_async(state: AsyncState) -> AsyncIterator[str]:
    cursor = "0"
    while True:
        where, command, finish = ops.subscriptions_page(state._layout, cursor)
        cursor, members = finish(await state._call(where, command))
        for member in members:
            yield member
        if cursor == "0":
            return


async def _walk_async(
    state: AsyncState, kind: str, info_at: Callable[[str, str], Prepared[T | None]]
) -> AsyncIterator[T]:
    start = state._layout.kinds()[kind]
    async for key in state._connected().scan(start):
        thread_id = _named(key, start)
        if thread_id is not None:
            where, command, finish = info_at(key, thread_id)
            info = finish(await state._script(where, command))
            if info is not None:
                yield info


def iter_locks_async(state: AsyncState) -> AsyncIterator[LockInfo]:
    return _walk_async(state, "lock", ops.lock_info_at)


def iter_queues_async(state: AsyncState) -> AsyncIterator[QueueInfo]:
    return _walk_async(state, "queue", ops.queue_info_at)


async def stats_async(state: AsyncState) -> StateStats:
    layout, tally = state._layout, _Tally(state._layout)
    async for key in state._connected().scan(layout.all):
        kind, name = layout.parse(key)
        info = None
        if kind == "queue":
            where, command, finish = ops.queue_info_at(key, name)
            info = finish(await state._script(where, command))
        tally.key(kind, info)
    where, command, count = ops.subscription_count(layout)
    servers = await state._each_primary(ops.INFO)
    return tally.result(count(await state._call(where, command)), servers)


async def _unlink_async(state: AsyncState, keys: list[str], together: bool) -> tuple[int, bool]:
    if together:
        where, command, finish = ops.unlink(keys)
        try:
            return finish(await state._call(where, command)), True
        except BackendError:
            if len(keys) == 1:
                raise
    removed = 0
    for key in keys:
        where, command, finish = ops.unlink([key])
        removed += finish(await state._call(where, command))
    return removed, False


async def clear_async(state: AsyncState, allow_default_prefix: bool) -> int:
    layout = state._layout
    _refuse_default(layout, allow_default_prefix)
    removed, together, batch = 0, True, []
    async for key in state._connected().scan(layout.all):
        batch.append(key)
        if len(batch) == UNLINK_BATCH:
            done, together = await _unlink_async(state, batch, together)
            removed, batch = removed + done, []
    if batch:
        removed += (await _unlink_async(state, batch, together))[0]
    return removed
