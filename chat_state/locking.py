"""Locks a handler can hold: waiting, renewal, loss, and the hand-off that strands nothing.

``state.lock(thread_id, ttl_ms, wait_ms=..., renew=...)`` returns one of the context
managers here (:class:`AsyncLockContext` for AsyncState, :class:`LockContext` for
State). Entering it takes the thread's lock, waiting up to ``wait_ms`` if asked; while
the block runs the lock is extended every ``ttl_ms / 3``; leaving it stops the renewal
and releases the lock. The lock itself is the contract's (one key, ``SET NX PX``, the
TypeScript layout): nothing here writes anything the TypeScript adapters would not.

Waiting: a failed try is followed by another after a delay drawn uniformly from 0 to
``min(WAIT_CAP_S, WAIT_BASE_S * 2**n)`` (exponential backoff with full jitter), never
past the deadline, where one last try is made. A release by any adapter of this
process wakes that process's waiters at once; a release elsewhere is seen at the next
try.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from .backend.events import emit
from .backend.loops import current_loop, spawn_detached
from .backend.policy import backoff
from .core import operations as ops
from .core.operations import now_ms
from .errors import BackendError, ChatStateError, LockLostError, LockUnavailableError
from .models import HeldLock, Lock

if TYPE_CHECKING:
    from .facades import AsyncState, State

__all__ = [
    "RENEWALS_PER_TTL",
    "SHORT_LOCK_TTL_MS",
    "WAIT_BASE_S",
    "WAIT_CAP_S",
    "AsyncLockContext",
    "LockContext",
]

#: The first backoff step of a waiting acquire, and the largest one (seconds).
WAIT_BASE_S = 0.005
WAIT_CAP_S = 0.1
#: A held lock is extended every ``ttl_ms / RENEWALS_PER_TTL``.
RENEWALS_PER_TTL = 3
#: A lock TTL below this is nearly always seconds passed as milliseconds: each adapter
#: logs a warning the first time it sees one.
SHORT_LOCK_TTL_MS = 1000

# -- waking waiters -----------------------------------------------------------------------


class _Waiters:
    """The waiting acquires of this process: lock key -> the functions that wake them."""

    def __init__(self) -> None:
        self.by_key: dict[str, set[Callable[[], None]]] = {}
        self.guard = threading.Lock()

    def forget(self) -> None:
        """In a forked child: none of the parent's waiters, and a guard that no thread of
        the parent can be holding."""
        self.by_key.clear()
        self.guard = threading.Lock()


_WAITERS = _Waiters()
#: The waiting acquires of this process, by lock key: a release through any adapter here
#: wakes them (from any thread). Empty when nobody waits (the facades' one check).
WAITING = _WAITERS.by_key

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WAITERS.forget)


def wake(key: str | None) -> None:
    """Wake every waiter of this process for the lock ``key`` (it was just released)."""
    with _WAITERS.guard:
        wakes = list(WAITING.get(key, ())) if key is not None else []
    for wake_one in wakes:
        wake_one()


@contextlib.contextmanager
def _waiting(key: str, wake_one: Callable[[], None]) -> Iterator[None]:
    with _WAITERS.guard:
        WAITING.setdefault(key, set()).add(wake_one)
    try:
        yield
    finally:
        with _WAITERS.guard:
            wakes = WAITING.get(key)
            if wakes is not None:
                wakes.discard(wake_one)
                if not wakes:
                    del WAITING[key]


class _Patience:
    """When a waiting acquire tries again: exponential backoff with full jitter, capped,
    and never past the deadline (where it makes one last try)."""

    def __init__(self, wait_ms: int, now: float) -> None:
        self._deadline = now + wait_ms / 1000
        self._tries = 0

    def delay(self, now: float) -> float | None:
        """Seconds until the next try, or ``None`` when the deadline has passed."""
        remaining = self._deadline - now
        if remaining <= 0:
            return None
        step = min(WAIT_CAP_S, WAIT_BASE_S * 2 ** min(self._tries, 32))
        self._tries += 1
        return min(remaining, random.uniform(0.0, step))


def acquire_waiting(state: State, thread_id: str, ttl_ms: Any, wait_ms: int) -> Lock | None:
    """State's ``acquire_lock(..., wait_ms=)``: try until the lock is taken or time is up."""
    patience = _Patience(wait_ms, time.monotonic())
    woken = threading.Event()
    with _waiting(state._layout.lock(thread_id), woken.set):
        while True:
            woken.clear()  # before the try: a release after it wakes the wait below
            where, command, finish = ops.acquire_lock(state._layout, thread_id, ttl_ms)
            lock = finish(state._call(where, command))  # (one try: not an operation)
            if lock is not None:
                return lock
            delay = patience.delay(time.monotonic())
            if delay is None:
                return None
            woken.wait(delay)


class _AsyncWaiter:
    """An event that a release in any thread of this process can set."""

    def __init__(self) -> None:
        self._loop: Any = current_loop()  # asyncio's loop, or trio's token
        self.event = anyio.Event()

    def rearm(self) -> None:
        self.event = anyio.Event()

    def wake(self) -> None:
        event, loop = self.event, self._loop
        with contextlib.suppress(RuntimeError):  # its loop has finished (trio's error too)
            if isinstance(loop, asyncio.AbstractEventLoop):
                loop.call_soon_threadsafe(event.set)
            else:
                loop.run_sync_soon(event.set)


async def _try_once(state: AsyncState, thread_id: str, ttl_ms: Any) -> Lock | None:
    """One try, cancellable. If it fails or is cancelled after the command may have run,
    the token it may have been granted is released again, so nothing is left held."""
    where, command, finish = ops.acquire_lock(state._layout, thread_id, ttl_ms)
    try:
        reply = await state._call(where, command)
    except BaseException:
        candidate = finish("OK")  # the lock this try asked for, granted or not
        if candidate is not None:
            await _release_surely(state, candidate, quiet=True)
        raise
    lock: Lock | None = finish(reply)
    return lock


async def acquire_waiting_async(
    state: AsyncState, thread_id: str, ttl_ms: Any, wait_ms: int
) -> Lock | None:
    """AsyncState's ``acquire_lock(..., wait_ms=)``; cancellable, and a waiter cancelled
    meanwhile holds nothing."""
    patience = _Patience(wait_ms, anyio.current_time())
    waiter = _AsyncWaiter()
    with _waiting(state._layout.lock(thread_id), waiter.wake):
        while True:
            waiter.rearm()  # before the try: a release after it wakes the wait below
            lock = await _try_once(state, thread_id, ttl_ms)
            if lock is not None:
                return lock
            delay = patience.delay(anyio.current_time())
            if delay is None:
                return None
            with anyio.move_on_after(delay):
                await waiter.event.wait()


# -- releasing ----------------------------------------------------------------------------


def _release_failed(state: State | AsyncState, lock: Lock | HeldLock, exc: Exception) -> None:
    state._logger.warning(
        "chat-state could not release the lock on thread %r (it expires by itself by its TTL): %s",
        lock.thread_id,
        exc,
    )


async def _release_async(
    state: AsyncState, lock: Lock | HeldLock, *, quiet: bool = False
) -> bool | None:
    """Release; → whether it was still held (``None``: the server could not be asked, or
    the adapter was disconnected meanwhile; logged unless ``quiet``)."""
    try:
        return await state._release_owned(lock)
    except ChatStateError as exc:
        if not quiet:
            _release_failed(state, lock, exc)
        return None


async def _release_detached(state: AsyncState, lock: Lock | HeldLock) -> None:
    await _release_async(state, lock, quiet=True)


async def _release_surely(
    state: AsyncState, lock: Lock | HeldLock, *, quiet: bool = False
) -> bool | None:
    """Release, shielded from anyio's cancellation. asyncio's own (``task.cancel()``,
    ``asyncio.timeout``) reaches through anyio's shields: then the release goes on in a
    task of its own while the cancellation propagates."""
    released = None
    try:
        with anyio.CancelScope(shield=True):
            released = await _release_async(state, lock, quiet=quiet)
    except BaseException:
        spawn_detached(functools.partial(_release_detached, state, lock))
        raise
    return released


def _release_sync(state: State, lock: Lock | HeldLock) -> bool | None:
    try:
        return state._release_owned(lock)
    except ChatStateError as exc:
        _release_failed(state, lock, exc)
        return None


# -- renewal ------------------------------------------------------------------------------

REFUSED = "a renewal found it released or taken by another holder"


class _Renewal:
    """What a renewal loop does next, whichever facade runs it (no I/O here)."""

    def __init__(self, state: State | AsyncState, held: HeldLock, ttl_ms: int) -> None:
        self.state, self.held, self.ttl_ms = state, held, ttl_ms
        self.interval = ttl_ms / RENEWALS_PER_TTL / 1000
        self._failures = 0

    def remaining(self) -> float:
        """Seconds until the lock expires at the latest, as of its last renewal."""
        return (self.held.expires_at - now_ms()) / 1000

    def first(self) -> float:
        """Seconds to the first renewal: an interval after the lock was taken."""
        return max(0.0, self.remaining() - (RENEWALS_PER_TTL - 1) * self.interval)

    def extended(self, sent_at: int) -> float:
        """An extend succeeded (sent at ``sent_at``, Unix ms): → seconds to the next."""
        self.held._renewed(sent_at + self.ttl_ms)
        self._failures = 0
        return self.interval

    def failed(self, exc: BaseException) -> float | None:
        """An extend could not reach the server: → seconds to the retry, or ``None``
        once the lock would have expired (it is then lost)."""
        remaining = self.remaining()
        if remaining <= 0:
            self.lose(f"no renewal reached the server before it expired ({exc})")
            return None
        self.state._logger.debug(
            "chat-state could not renew the lock on thread %r (retrying): %s",
            self.held.thread_id,
            exc,
        )
        delay = min(backoff(self._failures), remaining)
        self._failures += 1
        return delay

    def lose(self, why: str) -> None:
        # INFO: the block hears of it as LockLostError (at once, or when it ends).
        self.held._lose(why)
        if why != REFUSED:  # (a refused extend_lock counts itself)
            emit("lock_lost")
        self.state._logger.info(
            "chat-state lost the lock on thread %r: %s", self.held.thread_id, why
        )


def _lost_error(held: HeldLock) -> LockLostError:
    return LockLostError(
        f"the lock on thread {held.thread_id!r} was lost before the block ended: "
        f"{held._why}; another worker may have held it meanwhile",
        thread_id=held.thread_id,
    )


def _outcome(held: HeldLock, released: bool | None, raised: bool) -> None:
    """At the end of a block: mark the lock lost if the release found it gone, and raise
    LockLostError if it was lost, unless the block raised an exception of its own."""
    if released is False and not held.lost:
        held._lose("it was no longer held under its token when the block ended")
        emit("lock_lost")
    if held.lost and not raised:
        raise _lost_error(held) from None


async def _renew_async(renewal: _Renewal) -> None:
    """Extend every interval until the lock is lost (returns) or the task is stopped."""
    state: AsyncState = renewal.state  # type: ignore[assignment]
    delay: float | None = renewal.first()
    while delay is not None:
        await anyio.sleep(delay)
        sent_at = now_ms()
        try:
            # No extend may outlast the lock it is for.
            with anyio.fail_after(max(renewal.remaining(), 0.001)):
                extended = await state.extend_lock(renewal.held, renewal.ttl_ms)
            if not extended:
                renewal.lose(REFUSED)
                return
            delay = renewal.extended(sent_at)
        except (BackendError, TimeoutError) as exc:
            delay = renewal.failed(exc)
        except Exception as exc:  # not connected any more, ...: the lock is not kept
            renewal.lose(f"a renewal failed: {exc!r}")
            return


class AsyncLockContext:
    """What :meth:`AsyncState.lock` returns: ``async with state.lock(...) as held:``.

    Each call of ``lock()`` gives one; it can be entered once, and left in the task
    that entered it (it holds a task group: it cannot span a ``yield`` of an async
    generator).
    """

    def __init__(
        self, state: AsyncState, thread_id: str, ttl_ms: int, wait_ms: int, renew: bool
    ) -> None:
        self._state, self._thread_id, self._ttl_ms = state, thread_id, ttl_ms
        self._wait_ms, self._renew = wait_ms, renew
        self._held: HeldLock | None = None
        self._group: anyio.abc.TaskGroup | None = None
        self._body: anyio.CancelScope | None = None
        self._stop: anyio.CancelScope | None = None
        self._released: list[bool | None] = []
        self._pid = 0
        self._entered = False

    async def __aenter__(self) -> HeldLock:
        if self._entered:
            raise RuntimeError("a lock() context can be entered once: call lock() again")
        self._entered = True
        state = self._state
        lock = await state._acquire_for_block(self._thread_id, self._ttl_ms, self._wait_ms)
        if lock is None:
            raise _unavailable(self._thread_id, self._wait_ms)
        held = self._held = HeldLock(lock)
        self._pid = os.getpid()
        group = anyio.create_task_group()
        try:
            await group.__aenter__()
        except BaseException:
            await _release_surely(state, held)
            raise
        body = anyio.CancelScope()
        body.__enter__()
        stop = anyio.CancelScope(shield=True)
        self._group, self._body, self._stop = group, body, stop
        renewal = _Renewal(state, held, self._ttl_ms) if self._renew else None
        group.start_soon(self._hold, held, renewal, body, stop)
        return held

    async def _hold(
        self,
        held: HeldLock,
        renewal: _Renewal | None,
        body: anyio.CancelScope,
        stop: anyio.CancelScope,
    ) -> None:
        """The task that holds the lock while the block runs: it renews the lock until
        told to stop (cancelling the block if the lock is lost), then releases it. Its
        scope and the release are shielded: no cancellation of the block's task, anyio's
        or asyncio's own, cuts the renewal short while the block runs, or the release."""
        try:
            with stop:
                if renewal is not None:
                    await _renew_async(renewal)
                    body.cancel()  # lost
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                self._released.append(await _release_async(self._state, held))

    async def _leave(self) -> bool | None:
        """Stop the holding task and leave its task group, which waits for the release
        whatever cancellation arrives meanwhile; → what the release found."""
        stop, group = self._stop, self._group
        self._stop = self._group = None
        try:
            if stop is not None:
                stop.cancel()
        finally:
            if group is not None:
                await group.__aexit__(None, None, None)
        return self._released[0] if self._released else None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        held = self._held
        if held is None:
            return False
        self._held = None
        if os.getpid() != self._pid:  # a forked child: the lock is the parent's
            return False
        body, self._body = self._body, None
        swallowed = False
        try:
            if body is not None:
                # True when the body was cancelled by us, because the lock was lost.
                swallowed = bool(body.__exit__(exc_type, exc, tb))
        finally:
            released = await self._leave()
        _outcome(held, released, raised=exc is not None and not swallowed)
        if exc is None:
            # Leaving is a checkpoint (trio's rule): a cancellation that arrived while the
            # block ran shielded is delivered here.
            await anyio.lowlevel.checkpoint_if_cancelled()
        return swallowed


class _Renewer(threading.Thread):
    """State's renewal: a daemon thread per held lock, stopped and joined at the end."""

    def __init__(self, renewal: _Renewal) -> None:
        super().__init__(name=f"chat-state lock renewal ({renewal.held.thread_id})", daemon=True)
        self._renewal = renewal
        self._stopped = threading.Event()

    def run(self) -> None:
        renewal = self._renewal
        state: State = renewal.state  # type: ignore[assignment]
        delay: float | None = renewal.first()
        while delay is not None and not self._stopped.wait(delay):
            sent_at = now_ms()
            try:
                if not state.extend_lock(renewal.held, renewal.ttl_ms):
                    renewal.lose(REFUSED)
                    return
                delay = renewal.extended(sent_at)
            except BackendError as exc:
                delay = renewal.failed(exc)
            except Exception as exc:
                renewal.lose(f"a renewal failed: {exc!r}")
                return

    def stop(self) -> None:
        self._stopped.set()
        self.join()


class LockContext:
    """What :meth:`State.lock` returns: ``with state.lock(...) as held:``.

    Each call of ``lock()`` gives one; it can be entered once.
    """

    def __init__(
        self, state: State, thread_id: str, ttl_ms: int, wait_ms: int, renew: bool
    ) -> None:
        self._state, self._thread_id, self._ttl_ms = state, thread_id, ttl_ms
        self._wait_ms, self._renew = wait_ms, renew
        self._held: HeldLock | None = None
        self._renewer: _Renewer | None = None
        self._pid = 0
        self._entered = False

    def __enter__(self) -> HeldLock:
        if self._entered:
            raise RuntimeError("a lock() context can be entered once: call lock() again")
        self._entered = True
        state = self._state
        lock = state.acquire_lock(self._thread_id, self._ttl_ms, wait_ms=self._wait_ms)
        if lock is None:
            raise _unavailable(self._thread_id, self._wait_ms)
        held = self._held = HeldLock(lock)
        self._pid = os.getpid()
        if self._renew:
            try:
                renewer = _Renewer(_Renewal(state, held, self._ttl_ms))
                renewer.start()
            except BaseException:
                _release_sync(state, held)
                raise
            self._renewer = renewer
        return held

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held = self._held
        if held is None:
            return
        self._held = None
        if os.getpid() != self._pid:  # a forked child: the lock (and its thread) are the parent's
            return
        renewer, self._renewer = self._renewer, None
        try:
            if renewer is not None:
                renewer.stop()
        finally:
            released = _release_sync(self._state, held)
        _outcome(held, released, raised=exc is not None)


def _unavailable(thread_id: str, wait_ms: int) -> LockUnavailableError:
    waited = f"within {wait_ms} ms" if wait_ms else "in one try (wait_ms=0)"
    return LockUnavailableError(
        f"the lock on thread {thread_id!r} is held (locks are not re-entrant); it was not "
        f"acquired {waited}",
        thread_id=thread_id,
    )
