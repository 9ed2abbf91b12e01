"""The facades: :class:`State` (blocking) and :class:`AsyncState` (async, anyio).

Both have the same methods with the same parameters; each method prepares one
operation of :mod:`chat_state.core.operations`, sends its one command to the
backend and finishes it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from . import inspection
from .backend.interface import (
    Args,
    AsyncBackend,
    Backend,
    BackendFactory,
    NodeReply,
    NoScriptError,
)
from .backend.loops import LoopEnd, abandon, after_fork, current_loop, loop_running, on_asyncio
from .backend.registry import factory_for_client, factory_for_url, with_interface
from .backend.urls import parse_redis_url, redact_url
from .core import operations as ops
from .core.health import HELLO, identity
from .core.layout import DEFAULT_PREFIX, Layout, QueueFormat
from .core.validate import check_name, check_ttl, check_wait
from .errors import (
    BackendError,
    ConfigurationError,
    NotConnectedError,
    WrongLoopError,
    not_connected,
)
from .locking import (
    SHORT_LOCK_TTL_MS,
    WAITING,
    AsyncLockContext,
    LockContext,
    acquire_waiting,
    acquire_waiting_async,
    wake,
)
from .models import (
    Health,
    Lock,
    LockInfo,
    LockLike,
    NodeHealth,
    QueueEntry,
    QueueEntryLike,
    QueueInfo,
    StateStats,
)

__all__ = ["AsyncState", "State"]

B = TypeVar("B", Backend, AsyncBackend)
S = TypeVar("S", bound="_Facade[Any]")
E = TypeVar("E", threading.Event, anyio.Event)

#: How long a lock is held by default (``lock()``), in milliseconds: the Chat SDK's.
DEFAULT_LOCK_TTL_MS = 30_000
_URL_VARIABLES = ("CHAT_STATE_URL", "REDIS_URL")
_MEMORY_WARNING = (
    "no URL given and neither CHAT_STATE_URL nor REDIS_URL is set: using in-process "
    "memory state, which is not shared between processes"
)


@dataclass
class _Attempt(Generic[E]):
    """One connection attempt that concurrent callers of ``connect()`` share."""

    done: E
    error: BaseException | None = None
    loop: object = None  # AsyncState's: the event loop the attempt runs in


#: How long a disconnect() from another thread waits for the loop that owns the
#: connections to close them (seconds); after that they are let go.
CLOSE_ELSEWHERE_S = 10.0


async def _close_in(token: anyio.lowlevel.EventLoopToken, backend: AsyncBackend) -> None:
    """Close ``backend`` in the event loop of ``token``, running in another thread."""
    close = functools.partial(anyio.from_thread.run, backend.aclose, token=token)
    with anyio.move_on_after(CLOSE_ELSEWHERE_S):
        await anyio.to_thread.run_sync(close, abandon_on_cancel=True)


def _system_of(hint: str) -> str:
    """The server a URL's scheme and backend, or a client's module, suggest."""
    if hint.startswith(("memory", "chat_state.memory")):
        return "memory"
    return "valkey" if "valkey" in hint else "redis"


class _Facade(Generic[B]):
    """What both facades share: configuration, key layout, repr, connection slot."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: object = None,
        key_prefix: str = DEFAULT_PREFIX,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        driver: str | None = None,
        queue_format: QueueFormat = "typescript",
    ) -> None:
        if not isinstance(key_prefix, str):
            raise ConfigurationError(f"key_prefix must be a str, not {type(key_prefix).__name__}")
        self._logger = logger if logger is not None else logging.getLogger("chat_state")
        self._layout = Layout(key_prefix, queue_format)
        self._backend: B | None = None
        self._guard = threading.Lock()  # State's connection slot, shared between threads
        self._url: str | None = None
        self._adopted: B | None = None  # the backend over the client passed in, if one was
        if client is not None:
            if url is not None or driver is not None:
                raise ConfigurationError("pass either a client or a url (and driver), not both")
            adopted = self._adopted = factory_for_client(client, self._adopt)
            self._opener: Callable[[], B] = lambda: adopted
            self._system = _system_of(type(client).__module__)
            return
        if url is None:
            url = next((os.environ[v] for v in _URL_VARIABLES if os.environ.get(v)), None)
            if url is None:
                url = "memory://"
                self._logger.warning(_MEMORY_WARNING)
        factory = factory_for_url(url, driver)
        factory.validate_url(url)
        self._url = url
        self._system = _system_of(f"{url.partition('://')[0]} {getattr(factory, 'name', '')}")
        self._opener = functools.partial(self._open, factory, url)

    @classmethod
    def from_url(
        cls: type[S],
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        driver: str | None = None,
        queue_format: QueueFormat = "typescript",
    ) -> S:
        """Create a state adapter for ``url`` (``memory://``, ``redis://``, ...).

        Nothing is connected until :meth:`connect` (or entering the context manager).

        Args:
            url: Where the state lives; the scheme chooses the backend.
            key_prefix: The prefix of every key (an empty one means ``"chat-sdk"``).
            logger: Where to log; the ``chat_state`` logger by default.
            driver: ``"redis"``, ``"valkey"`` or ``"coredis"``, to choose the client
                library for a Redis-family URL.
            queue_format: ``"typescript"`` (camelCase queue entries, the default) or
                ``"chat_sdk"`` (snake_case, readable by ``chat_sdk.state.redis``
                while a fleet moves from it). Both are always read.
        """
        return cls(
            url, key_prefix=key_prefix, logger=logger, driver=driver, queue_format=queue_format
        )

    @staticmethod
    def _adopt(factory: BackendFactory, client: object) -> B | None:
        """Wrap an application's client (``None`` if the factory does not know it)."""
        raise NotImplementedError

    @staticmethod
    def _open(factory: BackendFactory, url: str) -> B:
        """Create a backend (and the client it owns) for ``url``."""
        raise NotImplementedError

    @property
    def key_prefix(self) -> str:
        """The prefix of every key this adapter writes."""
        return self._layout.prefix

    @property
    def is_connected(self) -> bool:
        """Whether :meth:`connect` has succeeded and :meth:`disconnect` not been called
        since (for an AsyncState: and its event loop has not finished, and this is the
        process that connected it).

        It says whether operations may be sent, not whether they would succeed: it
        does not ask the server, and stays ``True`` while the server is down (the
        connections are opened again as commands need them). For that, use
        :meth:`ping` or :meth:`health`.
        """
        return self._backend is not None

    def __repr__(self) -> str:
        where = f"url={redact_url(self._url)!r}" if self._url else "client=<given>"
        state = "connected" if self._backend is not None else "not connected"
        return f"{type(self).__name__}({where}, key_prefix={self.key_prefix!r}) [{state}]"

    #: The server's name (``redis``, ``valkey``, ``memory``), as guessed from the URL
    #: and client library, then as the server says (HELLO): telemetry's db.system.name.
    _system = "redis"
    _identified = False  # whether the server said it

    def _identify(self, reply: Any) -> None:
        """Learn the server's name from its HELLO ``reply``."""
        server = identity(reply)[0]
        if server:
            self._system, self._identified = server.lower(), True

    def _new_backend(self) -> B:
        """A new backend, told this adapter's logger (its optional ``use_logger``)."""
        backend = self._opener()
        use_logger = getattr(backend, "use_logger", None)
        if use_logger is not None:
            use_logger(self._logger)
        return backend

    def _connected(self) -> B:
        backend = self._backend
        if backend is None:
            name = type(self).__name__
            message = f"{name} is not connected. Call connect() first."
            raise not_connected(NotConnectedError, message, name)
        return backend

    def _describe(self) -> str:
        return redact_url(self._url) if self._url else "the given client"

    _short_ttl_seen = False

    def _note_lock_ttl(self, ttl_ms: object) -> None:
        """Warn, once per adapter, of a lock TTL under a second (nearly always seconds
        passed as milliseconds); a bad TTL is left for the operation to refuse."""
        try:
            ttl = check_ttl("ttl_ms", ttl_ms)
        except (TypeError, ValueError):
            return
        if ttl < SHORT_LOCK_TTL_MS and not self._short_ttl_seen:
            self._short_ttl_seen = True
            self._logger.warning(
                "chat-state was asked for a lock TTL of %d ms: TTLs are in milliseconds "
                "(30 s is ttl_ms=30_000, or a timedelta); this adapter logs this once",
                ttl,
            )

    def _lock_args(
        self, thread_id: str, ttl_ms: int | timedelta, wait_ms: int | timedelta, renew: bool
    ) -> tuple[str, int, int]:
        """``lock()``'s arguments, checked before anything is sent."""
        if not isinstance(renew, bool):
            raise TypeError(f"renew must be a bool, not {type(renew).__name__}")
        self._note_lock_ttl(ttl_ms)
        return (
            check_name("thread_id", thread_id),
            check_ttl("ttl_ms", ttl_ms),
            check_wait("wait_ms", wait_ms),
        )

    def _connect_failed(self, exc: BaseException) -> None:
        if isinstance(exc, Exception):
            # Raised to the caller, who reports it: logged here only for debugging (our
            # errors never carry a password; the URL is redacted).
            self._logger.debug("chat-state could not connect to %s: %s", self._describe(), exc)

    def _noscript(self, args: Args) -> Args:
        """The EVAL to send after NOSCRIPT (the server lost its script cache)."""
        self._logger.debug(
            "chat-state sends a script's source again: %s lost its script cache",
            self._describe(),
        )
        return ops.evaluated(args)

    def _topology(self) -> str:
        """How the servers are laid out, for :meth:`health`."""
        if self._url is None:
            return "client"
        scheme = self._url.partition("://")[0].lower()
        if scheme == "memory":
            return "memory"
        try:
            return parse_redis_url(self._url).topology
        except ConfigurationError:  # a third-party backend's scheme
            return scheme

    def _one_node(self, started: float, reply: Any) -> list[NodeReply]:
        """A backend without ``each_primary``: its one answer, as a node's."""
        return [NodeReply(self._describe(), reply, time.monotonic() - started)]

    @staticmethod
    def _round_trip(pings: list[NodeReply]) -> float:
        """The slowest primary's round trip (ms), or the BackendError of those that failed."""
        failed = [p for p in pings if isinstance(p.reply, BaseException)]
        if failed:
            raise BackendError(
                "PING failed: " + "; ".join(f"{p.address}: {p.reply}" for p in failed)
            ) from failed[0].reply
        return max(p.seconds for p in pings) * 1000

    def _health(self, pings: list[NodeReply], hellos: list[NodeReply]) -> Health:
        """:meth:`health`'s value from each primary's PING and HELLO."""
        said = {h.address: identity(h.reply) for h in hellos if not isinstance(h.reply, Exception)}
        for hello in hellos[:1]:
            self._identify(hello.reply)
        nodes = tuple(
            NodeHealth(p.address, False, None, error=str(p.reply))
            if isinstance(p.reply, BaseException)
            else NodeHealth(p.address, True, p.seconds * 1000, said.get(p.address, (None,) * 3)[2])
            for p in pings
        )
        known = [s for s in said.values() if s[0] is not None]
        server, version, _ = known[0] if known else (None, None, None)
        answered = [n.latency_ms for n in nodes if n.latency_ms is not None]
        return Health(
            ok=bool(nodes) and all(n.ok for n in nodes),
            latency_ms=max(answered) if answered else None,
            topology=self._topology(),
            nodes=nodes,
            server=server,
            version=version,
        )


class State(_Facade[Backend]):
    """Chat-bot state for blocking code (scripts, Flask, Django, worker threads).

    Safe to share between threads. Use :meth:`from_url` or pass ``client=`` an
    existing blocking client (never closed by :meth:`disconnect`); with neither,
    the URL comes from ``CHAT_STATE_URL``, then ``REDIS_URL``, then ``memory://``.

    ``with State.from_url(url) as state:`` connects on entry and disconnects on exit.
    """

    @staticmethod
    def _adopt(factory: BackendFactory, client: object) -> Backend | None:
        return with_interface(factory, factory.adopt_sync(client))

    @staticmethod
    def _open(factory: BackendFactory, url: str) -> Backend:
        return with_interface(factory, factory.open_sync(url))

    _attempt: _Attempt[threading.Event] | None = None

    def _call(self, key: str | None, args: Args) -> Any:
        """Send one command; → its normalised reply."""
        backend = self._backend
        if backend is None:
            backend = self._connected()
        return backend.call(key, args)

    def _script(self, key: str | None, args: Args) -> Any:
        """Send an EVALSHA; on NOSCRIPT (the server lost its script cache) the EVAL."""
        try:
            return self._call(key, args)
        except NoScriptError:
            return self._call(key, self._noscript(args))

    # -- lifecycle ----------------------------------------------------------------

    def connect(self) -> None:
        """Connect (and check the server answers). Idempotent and thread-safe.

        Threads calling at once share one attempt; after a failure the next call
        tries again.
        """
        while True:
            with self._guard:
                if self._backend is not None:
                    return
                attempt = self._attempt
                leading = attempt is None
                if attempt is None:
                    attempt = self._attempt = _Attempt(threading.Event())
            if not leading:
                attempt.done.wait()
                if isinstance(attempt.error, Exception):
                    raise attempt.error
                continue
            try:
                backend = self._new_backend()
                try:
                    backend.call(None, ops.PING)
                except BaseException:
                    backend.close()
                    raise
                self._backend = backend
                self._logger.debug("chat-state connected to %s", self._describe())
            except BaseException as exc:
                attempt.error = exc
                self._connect_failed(exc)
                raise
            finally:
                with self._guard:
                    self._attempt = None
                attempt.done.set()

    def disconnect(self) -> None:
        """Disconnect; closes the client only if this adapter created it."""
        with self._guard:
            backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()
            self._logger.debug("chat-state disconnected from %s", self._describe())

    def __enter__(self) -> State:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def get_client(self) -> Any:
        """The client library's client (redis-py, valkey-py, coredis) or the :class:`MemoryStore`.

        For raw commands of your own. A client you passed in (``client=``) is itself,
        connected or not, as chat_sdk's adapters give theirs. With a URL it needs a
        connection (:class:`~chat_state.NotConnectedError` before :meth:`connect`);
        with chat-state's own connections (the default for redis-py and valkey-py) it
        is a client for the same server(s), made on first use. :meth:`disconnect`
        closes every connection of a client the adapter made (the client libraries
        open one again if such a client is used after: ask again after the next
        :meth:`connect`).
        """
        adopted = self._adopted
        if adopted is not None:
            return adopted.client
        return self._connected().client

    def _each_primary(self, args: Args) -> list[NodeReply]:
        """``args`` on every primary in use (one call where the backend cannot tell)."""
        backend = self._connected()
        each = getattr(backend, "each_primary", None)
        if each is not None:
            replies: list[NodeReply] = each(args)
            return replies
        started = time.monotonic()
        try:
            reply = backend.call(None, args)
        except BackendError as exc:
            reply = exc
        return self._one_node(started, reply)

    def ping(self) -> float:
        """PING every primary in use, over the connections operations use; → the
        slowest round trip, in milliseconds.

        Raises :class:`~chat_state.BackendError` if any does not answer within the
        URL's ``socket_timeout`` (10 s by default) or cannot be reached.
        """
        return self._round_trip(self._each_primary(ops.PING))

    def health(self) -> Health:
        """How the servers in use are: a :class:`~chat_state.Health` with each
        primary's address, role, round trip and error, and the server's name and
        version. Never raises for a server that is down: ``ok`` is then ``False``."""
        pings = self._each_primary(ops.PING)
        live = [p for p in pings if not isinstance(p.reply, BaseException)]
        return self._health(pings, self._each_primary(HELLO) if live else [])

    def iter_keys(self) -> Iterator[str]:
        """Every key of this state (``{prefix}:…``), found with SCAN on every primary.

        Never KEYS, which blocks the server. As with SCAN, keys written or deleted
        while it runs may or may not be seen.
        """
        return self._connected().scan(self._layout.all)

    # -- subscriptions ------------------------------------------------------------

    def subscribe(self, thread_id: str) -> None:
        """Add ``thread_id`` to the subscribed threads."""
        where, command, finish = ops.subscribe(self._layout, thread_id)
        return finish(self._call(where, command))

    def unsubscribe(self, thread_id: str) -> None:
        """Remove ``thread_id`` from the subscribed threads."""
        where, command, finish = ops.unsubscribe(self._layout, thread_id)
        return finish(self._call(where, command))

    def is_subscribed(self, thread_id: str) -> bool:
        """Whether ``thread_id`` is subscribed."""
        where, command, finish = ops.is_subscribed(self._layout, thread_id)
        return finish(self._call(where, command))

    # -- locks --------------------------------------------------------------------

    def lock(
        self,
        thread_id: str,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        *,
        wait_ms: int | timedelta = 0,
        renew: bool = True,
    ) -> LockContext:
        """Hold the thread's lock for a ``with`` block: ``with state.lock(t) as held:``.

        Entering takes the lock, waiting up to ``wait_ms`` (0: one try) and raising
        :class:`~chat_state.LockUnavailableError` if another holder keeps it. While the
        block runs, a daemon thread extends it every ``ttl_ms / 3`` (``renew=True``),
        retrying through connection errors until it would expire. Leaving the block
        (however it ends) stops the renewal and releases the lock.

        A thread cannot be interrupted: when the lock is lost (a renewal finds it
        gone or taken), the :class:`~chat_state.HeldLock` says ``lost`` at once and
        :class:`~chat_state.LockLostError` is raised when the block ends, unless the
        block raised an exception of its own, which always propagates unchanged.
        """
        thread_id, ttl, wait = self._lock_args(thread_id, ttl_ms, wait_ms, renew)
        return LockContext(self, thread_id, ttl, wait, renew)

    def acquire_lock(
        self, thread_id: str, ttl_ms: int | timedelta, *, wait_ms: int | timedelta = 0
    ) -> Lock | None:
        """Take the thread's lock for ``ttl_ms`` ms, or return ``None`` if it is held.

        With ``wait_ms``, try again (backoff with jitter, and at once when a release in
        this process frees it) until the lock is taken or ``wait_ms`` has passed.
        """
        if type(ttl_ms) is not int or ttl_ms < SHORT_LOCK_TTL_MS:
            self._note_lock_ttl(ttl_ms)
        if type(wait_ms) is not int or wait_ms:
            wait = check_wait("wait_ms", wait_ms)
            if wait:
                return acquire_waiting(self, check_name("thread_id", thread_id), ttl_ms, wait)
        where, command, finish = ops.acquire_lock(self._layout, thread_id, ttl_ms)
        return finish(self._call(where, command))

    def release_lock(self, lock: LockLike) -> None:
        """Release ``lock`` if it is still held under its token; otherwise do nothing."""
        where, command, finish = ops.release_lock(self._layout, lock)
        finish(self._script(where, command))
        if WAITING:
            wake(where)

    def _release_owned(self, lock: LockLike) -> bool:
        """``release_lock``, telling whether the lock was still held under its token."""
        where, command, finish = ops.release_owned(self._layout, lock)
        released = finish(self._script(where, command))
        if WAITING:
            wake(where)
        return released

    def extend_lock(self, lock: LockLike, ttl_ms: int | timedelta) -> bool:
        """Give ``lock`` a fresh TTL of ``ttl_ms`` from now, if still held; → success."""
        if type(ttl_ms) is not int or ttl_ms < SHORT_LOCK_TTL_MS:
            self._note_lock_ttl(ttl_ms)
        where, command, finish = ops.extend_lock(self._layout, lock, ttl_ms)
        return finish(self._script(where, command))

    def force_release_lock(self, thread_id: str) -> None:
        """Delete the thread's lock whoever holds it."""
        where, command, finish = ops.force_release_lock(self._layout, thread_id)
        finish(self._call(where, command))
        if WAITING:
            wake(where)

    def release_and_recheck(self, lock: LockLike, ttl_ms: int | timedelta) -> Lock | None:
        """The holder's half of the hand-off: release ``lock``, then look at the thread's
        queue; if entries wait, try to take the lock again.

        → a new lock: drain the queue again, then call this again; ``None``: nothing
        waits, or another holder took the lock and drains it. With
        :meth:`enqueue_and_recheck` on the other side, no entry is left in a queue
        that nobody drains (see the README, "Holding a lock").
        """
        ttl = check_ttl("ttl_ms", ttl_ms)
        self.release_lock(lock)
        if not self.queue_depth(lock.thread_id):
            return None
        return self.acquire_lock(lock.thread_id, ttl)

    def enqueue_and_recheck(
        self, thread_id: str, entry: QueueEntryLike, max_size: int, ttl_ms: int | timedelta
    ) -> Lock | None:
        """The newcomer's half of the hand-off: queue ``entry``, then try the lock again.

        → a lock: the holder released meanwhile, so drain the queue yourself (then
        :meth:`release_and_recheck`); ``None``: a holder has the lock and will see the
        entry when it releases with :meth:`release_and_recheck`.
        """
        ttl = check_ttl("ttl_ms", ttl_ms)
        self.enqueue(thread_id, entry, max_size)
        return self.acquire_lock(thread_id, ttl)

    # -- cache --------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The JSON value at ``key``, or ``None``; raw text if the stored text is not JSON."""
        where, command, finish = ops.get(self._layout, key)
        return finish(self._call(where, command))

    def set(self, key: str, value: Any, ttl_ms: int | timedelta | None = None) -> None:
        """Store ``value`` as JSON, expiring after ``ttl_ms`` ms (``None`` or 0: never)."""
        where, command, finish = ops.set(self._layout, key, value, ttl_ms)
        return finish(self._call(where, command))

    def set_if_not_exists(
        self, key: str, value: Any, ttl_ms: int | timedelta | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is absent (atomic); → whether it was written.

        It expires after ``ttl_ms`` ms (``None`` or 0: never, as chat_sdk's
        ``dedupe_ttl_ms=0`` means)."""
        where, command, finish = ops.set_if_not_exists(self._layout, key, value, ttl_ms)
        return finish(self._call(where, command))

    def delete(self, key: str) -> None:
        """Remove the value at ``key``."""
        where, command, finish = ops.delete(self._layout, key)
        return finish(self._call(where, command))

    # -- lists --------------------------------------------------------------------

    def append_to_list(
        self,
        key: str,
        value: Any,
        *,
        max_length: int | None = None,
        ttl_ms: int | timedelta | None = None,
    ) -> None:
        """Append ``value``; keep the newest ``max_length``; refresh the TTL (atomic)."""
        where, command, finish = ops.append_to_list(self._layout, key, value, max_length, ttl_ms)
        return finish(self._script(where, command))

    def get_list(self, key: str) -> list[Any]:
        """Every value of the list, oldest first; ``[]`` when absent."""
        where, command, finish = ops.get_list(self._layout, key)
        return finish(self._call(where, command))

    # -- queues -------------------------------------------------------------------

    def enqueue(self, thread_id: str, entry: QueueEntryLike, max_size: int) -> int:
        """Queue ``entry`` for the thread, keeping the newest ``max_size``; → depth."""
        where, command, finish = ops.enqueue(self._layout, thread_id, entry, max_size)
        return finish(self._script(where, command))

    def dequeue(self, thread_id: str) -> QueueEntry | None:
        """Take the oldest entry of the thread's queue, or ``None``."""
        where, command, finish = ops.dequeue(self._layout, thread_id)
        return finish(self._call(where, command))

    def queue_depth(self, thread_id: str) -> int:
        """How many entries the thread's queue holds (expired ones included)."""
        where, command, finish = ops.queue_depth(self._layout, thread_id)
        return finish(self._call(where, command))

    # -- inspection (for operators; see "Operating a bot's state" in the README) ---

    def iter_subscriptions(self) -> Iterator[str]:
        """Every subscribed thread id, found with SSCAN (constant memory)."""
        self._connected()
        return inspection.iter_subscriptions(self)

    def subscription_count(self) -> int:
        """How many threads are subscribed."""
        where, command, finish = ops.subscription_count(self._layout)
        return finish(self._call(where, command))

    def inspect_lock(self, thread_id: str) -> LockInfo | None:
        """The thread's lock: its remaining TTL and whose it is (never its token), or
        ``None`` if nobody holds it."""
        where, command, finish = ops.lock_info(self._layout, thread_id)
        return finish(self._script(where, command))

    def iter_locks(self) -> Iterator[LockInfo]:
        """Every lock held under this prefix, found with SCAN on every primary."""
        self._connected()
        return inspection.iter_locks(self)

    def iter_queues(self) -> Iterator[QueueInfo]:
        """Every thread queue under this prefix (depth, oldest entry's time), found with
        SCAN on every primary."""
        self._connected()
        return inspection.iter_queues(self)

    def peek_queue(self, thread_id: str, limit: int = 10) -> list[QueueEntry]:
        """The ``limit`` oldest entries of the thread's queue, left in it."""
        where, command, finish = ops.peek_queue(self._layout, thread_id, limit)
        return finish(self._call(where, command))

    def stats(self) -> StateStats:
        """Counts of this prefix's subscriptions, locks, cache keys, lists, queues and
        queued entries (one SCAN of its keys), the deepest queues, and each primary's
        memory, rate and clients (``INFO``)."""
        return inspection.stats(self)

    def clear(self, *, allow_default_prefix: bool = False) -> int:
        """Remove every key under this prefix (SCAN and UNLINK, on every primary); →
        how many. Refuses the default prefix, which other bots may share, unless
        ``allow_default_prefix=True``."""
        return inspection.clear(self, allow_default_prefix)


class AsyncState(_Facade[AsyncBackend]):
    """Chat-bot state for async code (asyncio; trio with memory and coredis).

    Use :meth:`from_url` or pass ``client=`` an existing async client (never closed
    by :meth:`disconnect`); with neither, the URL comes from ``CHAT_STATE_URL``,
    then ``REDIS_URL``, then ``memory://``. It satisfies the ``StateAdapter``
    protocol of the Python ``chat_sdk`` package: pass it as ``Chat(state=...)``.

    ``async with AsyncState.from_url(url) as state:`` connects and disconnects.

    It belongs to the event loop and the process that connected it: anywhere else
    every operation raises :class:`~chat_state.WrongLoopError` before anything is
    sent (see :meth:`connect` for moving it). When that loop shuts down, the
    connections it owns are closed with it.
    """

    @staticmethod
    def _adopt(factory: BackendFactory, client: object) -> AsyncBackend | None:
        return with_interface(factory, factory.adopt_async(client))

    @staticmethod
    def _open(factory: BackendFactory, url: str) -> AsyncBackend:
        return with_interface(factory, factory.open_async(url))

    _attempt: _Attempt[anyio.Event] | None = None
    _loop: object = None  # the event loop that connected it (asyncio's loop, trio's token)
    _token: anyio.lowlevel.EventLoopToken | None = None  # the same loop, for other threads
    _loop_end: LoopEnd | None = None  # closes the backend when that loop shuts down
    _ended: str | None = None  # why it is bound to no loop although connect() succeeded
    _parked: AsyncBackend | None = None  # a backend with no connections, kept for connect()

    def _call(self, key: str | None, args: Args) -> Awaitable[Any]:
        """Send one command; → the backend's awaitable of its normalised reply.

        Not a coroutine itself: the facade's method is the only frame between the
        caller and the connection. The loop check is one C call and an identity test;
        off asyncio (trio) :meth:`_connected` decides.
        """
        backend = self._backend
        if backend is None or self._loop is not asyncio._get_running_loop():
            backend = self._connected()
        return backend.call(key, args)

    async def _script(self, key: str | None, args: Args) -> Any:
        """Send an EVALSHA; on NOSCRIPT (the server lost its script cache) the EVAL."""
        try:
            return await self._call(key, args)
        except NoScriptError:
            return await self._call(key, self._noscript(args))

    def _connected(self) -> AsyncBackend:
        """The backend, if this adapter is connected in the running event loop."""
        backend = self._backend
        here = current_loop()
        if backend is not None and self._loop is here:
            return backend
        if backend is None and self._ended is None:
            return super()._connected()  # NotConnectedError
        raise self._elsewhere()

    def _elsewhere(self) -> WrongLoopError:
        """Why this adapter cannot be used in the running loop, and what to do."""
        if self._ended is not None:
            why = self._ended
        elif loop_running(self._loop):
            message = (
                f"{self!r} was connected in another event loop, which is still running "
                "(in another thread); its connections belong to that loop, and nothing was "
                "sent. Use one AsyncState per event loop (or State from synchronous code)."
            )
            return not_connected(WrongLoopError, message, type(self).__name__)
        else:
            why = "was connected in an event loop that is no longer running"
        message = (
            f"{self!r} {why}; its connections belong there, and nothing was sent. "
            "Call `await state.connect()` in this event loop first (it connects here), "
            "or use State from synchronous code."
        )
        return not_connected(WrongLoopError, message, type(self).__name__)

    # -- lifecycle ----------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (and check the server answers) in the running event loop. Idempotent.

        Tasks calling at once share one attempt; after a failure the next call tries
        again. The connections belong to this event loop and this process: when the
        loop that connected it no longer runs, or in a forked child, ``connect()``
        lets go of the old connections (never touching a parent's) and connects here;
        while that loop still runs in another thread it raises
        :class:`~chat_state.WrongLoopError`.
        """
        here = current_loop()
        if here is None:  # also in a forked child, on the loop it inherited
            raise WrongLoopError(f"{self!r} needs a running asyncio or trio event loop")
        after_fork(self)
        while True:
            if self._backend is not None:
                if self._loop is here:
                    return
                if loop_running(self._loop):
                    raise self._elsewhere()
                self._let_go("the event loop it was connected in is no longer running")
                continue
            attempt = self._attempt
            if attempt is None:
                await self._lead(here)
            elif attempt.loop is not here:
                if loop_running(attempt.loop):
                    raise WrongLoopError(f"{self!r} is being connected in another event loop")
                self._attempt = None  # its loop stopped under it: it will never end
            else:
                await attempt.done.wait()
                if isinstance(attempt.error, Exception):
                    raise attempt.error
                # succeeded, or the leader was cancelled: look again

    async def _lead(self, here: object) -> None:
        """The connection attempt that concurrent callers of connect() wait for."""
        attempt = self._attempt = _Attempt(anyio.Event(), loop=here)
        try:
            backend, self._parked = self._parked or self._new_backend(), None
            try:
                await backend.call(None, ops.PING)
                loop_end = LoopEnd(functools.partial(self._at_loop_end, backend))
                await loop_end.start()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await backend.aclose()
                raise
            self._backend, self._loop, self._loop_end = backend, here, loop_end
            self._token, self._ended = anyio.lowlevel.current_token(), None
            self._logger.debug("chat-state connected to %s", self._describe())
        except BaseException as exc:
            attempt.error = exc
            self._connect_failed(exc)
            raise
        finally:
            if self._attempt is attempt:
                self._attempt = None
            attempt.done.set()

    def _unbind(self, ended: str | None, *, keep: bool) -> tuple[AsyncBackend | None, object]:
        """Forget the connection: → (backend, its loop). ``ended``: why, when it was not
        :meth:`disconnect`; ``keep``: keep a backend without connections (memory) for the
        next ``connect()``, so that its data lives from connect() to disconnect() in any
        event loop."""
        backend, loop = self._backend, self._loop
        self._backend = self._loop = self._loop_end = self._token = None
        self._ended = ended
        if keep and getattr(backend, "loop_free", False):
            self._parked = backend
        return backend, loop

    def _let_go(self, why: str) -> None:
        """Forget connections whose loop no longer runs; that loop still closes them if it
        ever shuts down (their LoopEnd is kept armed)."""
        if self._loop_end is not None:
            self._loop_end.keep()
        self._unbind(None, keep=True)
        self._logger.debug("chat-state let go of its connections to %s: %s", self._describe(), why)

    async def _at_loop_end(self, backend: AsyncBackend, loop_end: LoopEnd) -> None:
        """The event loop of ``backend`` (watched by ``loop_end``) is shutting down."""
        if self._loop_end is loop_end:  # still this adapter's connection
            self._unbind("was connected in an event loop that has since finished", keep=True)
        if on_asyncio():  # trio forbids awaiting at this point (and ends its tasks itself)
            try:
                await backend.aclose()
            except Exception as exc:  # the loop is ending: report, do not raise
                self._logger.debug("chat-state could not close its connections: %s", exc)

    def _after_fork(self) -> None:
        """In a forked child: the connections are the parent's; never touch them."""
        self._attempt = None  # the parent's, if one was under way: it never ends here
        loop_end = self._loop_end
        if self._backend is None or loop_end is None:
            return
        loop_end.disarm()
        backend, _ = self._unbind(
            f"was connected in the parent process (pid {os.getppid()}); a forked child "
            "never uses its parent's connections",
            keep=True,
        )
        abandon(backend, loop_end)

    async def disconnect(self) -> None:
        """Disconnect; closes the client only if this adapter created it.

        From any event loop or process: in a forked child it forgets the parent's
        connections without touching them; from another thread it closes them in the
        loop they belong to while that loop runs; after that loop stopped it lets go
        of them (the loop closes them if it ever shuts down). Cancellation does not
        interrupt the closing.
        """
        token, loop_end = self._token, self._loop_end
        backend, loop = self._unbind(None, keep=False)
        self._parked = None
        if backend is None or loop_end is None or token is None:
            return
        with anyio.CancelScope(shield=True):
            if loop is current_loop():
                await loop_end.stop()
                await backend.aclose()
            elif loop_running(loop):
                loop_end.disarm()
                await _close_in(token, backend)
            else:
                loop_end.keep()
        self._logger.debug("chat-state disconnected from %s", self._describe())

    async def __aenter__(self) -> AsyncState:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    def get_client(self) -> Any:
        """The client library's asyncio client (redis-py, valkey-py, coredis) or the
        :class:`MemoryStore`.

        For raw commands of your own. A client you passed in (``client=``) is itself,
        connected or not, as chat_sdk's adapters give theirs. With a URL it needs a
        connection in the running event loop (:class:`~chat_state.NotConnectedError`
        before :meth:`connect`); with chat-state's own connections (the default for
        redis-py and valkey-py) it is a client for the same server(s), made on first
        use. :meth:`disconnect` closes every connection of a client the adapter made
        (the client libraries open one again if such a client is used after: ask
        again after the next :meth:`connect`).
        """
        adopted = self._adopted
        if adopted is not None:
            return adopted.client
        return self._connected().client

    async def _each_primary(self, args: Args) -> list[NodeReply]:
        """``args`` on every primary in use (one call where the backend cannot tell)."""
        backend = self._connected()
        each = getattr(backend, "each_primary", None)
        if each is not None:
            replies: list[NodeReply] = await each(args)
            return replies
        started = time.monotonic()
        try:
            reply = await backend.call(None, args)
        except BackendError as exc:
            reply = exc
        return self._one_node(started, reply)

    async def ping(self) -> float:
        """PING every primary in use, over the connections operations use; → the
        slowest round trip, in milliseconds.

        Raises :class:`~chat_state.BackendError` if any does not answer within the
        URL's ``socket_timeout`` (10 s by default) or cannot be reached.
        """
        return self._round_trip(await self._each_primary(ops.PING))

    async def health(self) -> Health:
        """How the servers in use are: a :class:`~chat_state.Health` with each
        primary's address, role, round trip and error, and the server's name and
        version. Never raises for a server that is down: ``ok`` is then ``False``."""
        pings = await self._each_primary(ops.PING)
        live = [p for p in pings if not isinstance(p.reply, BaseException)]
        return self._health(pings, await self._each_primary(HELLO) if live else [])

    def iter_keys(self) -> AsyncIterator[str]:
        """Every key of this state (``{prefix}:…``), found with SCAN on every primary.

        Use ``async for key in state.iter_keys()``. Never KEYS, which blocks the
        server. As with SCAN, keys written or deleted while it runs may or may not
        be seen.
        """
        return self._connected().scan(self._layout.all)

    # -- subscriptions ------------------------------------------------------------

    async def subscribe(self, thread_id: str) -> None:
        """Add ``thread_id`` to the subscribed threads."""
        where, command, finish = ops.subscribe(self._layout, thread_id)
        return finish(await self._call(where, command))

    async def unsubscribe(self, thread_id: str) -> None:
        """Remove ``thread_id`` from the subscribed threads."""
        where, command, finish = ops.unsubscribe(self._layout, thread_id)
        return finish(await self._call(where, command))

    async def is_subscribed(self, thread_id: str) -> bool:
        """Whether ``thread_id`` is subscribed."""
        where, command, finish = ops.is_subscribed(self._layout, thread_id)
        return finish(await self._call(where, command))

    # -- locks --------------------------------------------------------------------

    def lock(
        self,
        thread_id: str,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        *,
        wait_ms: int | timedelta = 0,
        renew: bool = True,
    ) -> AsyncLockContext:
        """Hold the thread's lock for an ``async with`` block:
        ``async with state.lock(t) as held:``.

        Entering takes the lock, waiting up to ``wait_ms`` (0: one try) and raising
        :class:`~chat_state.LockUnavailableError` if another holder keeps it. While the
        block runs, a task extends it every ``ttl_ms / 3`` (``renew=True``), retrying
        through connection errors until it would expire. When the lock is lost (a
        renewal finds it gone or taken), the block is cancelled and
        :class:`~chat_state.LockLostError` is raised from the ``async with``. Leaving
        the block (however it ends, cancellation included) stops the renewal and
        releases the lock, shielded from cancellation; an exception of the block's own
        propagates unchanged.
        """
        thread_id, ttl, wait = self._lock_args(thread_id, ttl_ms, wait_ms, renew)
        return AsyncLockContext(self, thread_id, ttl, wait, renew)

    async def acquire_lock(
        self, thread_id: str, ttl_ms: int | timedelta, *, wait_ms: int | timedelta = 0
    ) -> Lock | None:
        """Take the thread's lock for ``ttl_ms`` ms, or return ``None`` if it is held.

        With ``wait_ms``, try again (backoff with jitter, and at once when a release in
        this process frees it) until the lock is taken or ``wait_ms`` has passed; a
        waiter cancelled meanwhile holds nothing.
        """
        if type(ttl_ms) is not int or ttl_ms < SHORT_LOCK_TTL_MS:
            self._note_lock_ttl(ttl_ms)
        if type(wait_ms) is not int or wait_ms:
            wait = check_wait("wait_ms", wait_ms)
            if wait:
                thread_id = check_name("thread_id", thread_id)
                return await acquire_waiting_async(self, thread_id, ttl_ms, wait)
        where, command, finish = ops.acquire_lock(self._layout, thread_id, ttl_ms)
        return finish(await self._call(where, command))

    async def _acquire_for_block(self, thread_id: str, ttl_ms: Any, wait_ms: Any) -> Lock | None:
        """``lock()``'s acquire (its arguments checked): each try cancel-safe, even with
        no wait (a grant that a cancellation cut off is released), unlike a plain
        ``acquire_lock``, whose caller gets the Lock or nothing."""
        return await acquire_waiting_async(self, thread_id, ttl_ms, wait_ms)

    async def release_lock(self, lock: LockLike) -> None:
        """Release ``lock`` if it is still held under its token; otherwise do nothing."""
        where, command, finish = ops.release_lock(self._layout, lock)
        finish(await self._script(where, command))
        if WAITING:
            wake(where)

    async def _release_owned(self, lock: LockLike) -> bool:
        """``release_lock``, telling whether the lock was still held under its token."""
        where, command, finish = ops.release_owned(self._layout, lock)
        released = finish(await self._script(where, command))
        if WAITING:
            wake(where)
        return released

    async def extend_lock(self, lock: LockLike, ttl_ms: int | timedelta) -> bool:
        """Give ``lock`` a fresh TTL of ``ttl_ms`` from now, if still held; → success."""
        if type(ttl_ms) is not int or ttl_ms < SHORT_LOCK_TTL_MS:
            self._note_lock_ttl(ttl_ms)
        where, command, finish = ops.extend_lock(self._layout, lock, ttl_ms)
        return finish(await self._script(where, command))

    async def force_release_lock(self, thread_id: str) -> None:
        """Delete the thread's lock whoever holds it."""
        where, command, finish = ops.force_release_lock(self._layout, thread_id)
        finish(await self._call(where, command))
        if WAITING:
            wake(where)

    async def release_and_recheck(self, lock: LockLike, ttl_ms: int | timedelta) -> Lock | None:
        """The holder's half of the hand-off: release ``lock``, then look at the thread's
        queue; if entries wait, try to take the lock again.

        → a new lock: drain the queue again, then call this again; ``None``: nothing
        waits, or another holder took the lock and drains it. With
        :meth:`enqueue_and_recheck` on the other side, no entry is left in a queue
        that nobody drains (see the README, "Holding a lock").
        """
        ttl = check_ttl("ttl_ms", ttl_ms)
        await self.release_lock(lock)
        if not await self.queue_depth(lock.thread_id):
            return None
        return await self.acquire_lock(lock.thread_id, ttl)

    async def enqueue_and_recheck(
        self, thread_id: str, entry: QueueEntryLike, max_size: int, ttl_ms: int | timedelta
    ) -> Lock | None:
        """The newcomer's half of the hand-off: queue ``entry``, then try the lock again.

        → a lock: the holder released meanwhile, so drain the queue yourself (then
        :meth:`release_and_recheck`); ``None``: a holder has the lock and will see the
        entry when it releases with :meth:`release_and_recheck`.
        """
        ttl = check_ttl("ttl_ms", ttl_ms)
        await self.enqueue(thread_id, entry, max_size)
        return await self.acquire_lock(thread_id, ttl)

    # -- cache --------------------------------------------------------------------

    async def get(self, key: str) -> Any:
        """The JSON value at ``key``, or ``None``; raw text if the stored text is not JSON."""
        where, command, finish = ops.get(self._layout, key)
        return finish(await self._call(where, command))

    async def set(self, key: str, value: Any, ttl_ms: int | timedelta | None = None) -> None:
        """Store ``value`` as JSON, expiring after ``ttl_ms`` ms (``None`` or 0: never)."""
        where, command, finish = ops.set(self._layout, key, value, ttl_ms)
        return finish(await self._call(where, command))

    async def set_if_not_exists(
        self, key: str, value: Any, ttl_ms: int | timedelta | None = None
    ) -> bool:
        """Store ``value`` only if ``key`` is absent (atomic); → whether it was written.

        It expires after ``ttl_ms`` ms (``None`` or 0: never, as chat_sdk's
        ``dedupe_ttl_ms=0`` means)."""
        where, command, finish = ops.set_if_not_exists(self._layout, key, value, ttl_ms)
        return finish(await self._call(where, command))

    async def delete(self, key: str) -> None:
        """Remove the value at ``key``."""
        where, command, finish = ops.delete(self._layout, key)
        return finish(await self._call(where, command))

    # -- lists --------------------------------------------------------------------

    async def append_to_list(
        self,
        key: str,
        value: Any,
        *,
        max_length: int | None = None,
        ttl_ms: int | timedelta | None = None,
    ) -> None:
        """Append ``value``; keep the newest ``max_length``; refresh the TTL (atomic)."""
        where, command, finish = ops.append_to_list(self._layout, key, value, max_length, ttl_ms)
        return finish(await self._script(where, command))

    async def get_list(self, key: str) -> list[Any]:
        """Every value of the list, oldest first; ``[]`` when absent."""
        where, command, finish = ops.get_list(self._layout, key)
        return finish(await self._call(where, command))

    # -- queues -------------------------------------------------------------------

    async def enqueue(self, thread_id: str, entry: QueueEntryLike, max_size: int) -> int:
        """Queue ``entry`` for the thread, keeping the newest ``max_size``; → depth."""
        where, command, finish = ops.enqueue(self._layout, thread_id, entry, max_size)
        return finish(await self._script(where, command))

    async def dequeue(self, thread_id: str) -> QueueEntry | None:
        """Take the oldest entry of the thread's queue, or ``None``."""
        where, command, finish = ops.dequeue(self._layout, thread_id)
        return finish(await self._call(where, command))

    async def queue_depth(self, thread_id: str) -> int:
        """How many entries the thread's queue holds (expired ones included)."""
        where, command, finish = ops.queue_depth(self._layout, thread_id)
        return finish(await self._call(where, command))

    # -- inspection (for operators; see "Operating a bot's state" in the README) ---

    def iter_subscriptions(self) -> AsyncIterator[str]:
        """Every subscribed thread id, found with SSCAN (constant memory):
        ``async for thread_id in state.iter_subscriptions()``."""
        self._connected()
        return inspection.iter_subscriptions_async(self)

    async def subscription_count(self) -> int:
        """How many threads are subscribed."""
        where, command, finish = ops.subscription_count(self._layout)
        return finish(await self._call(where, command))

    async def inspect_lock(self, thread_id: str) -> LockInfo | None:
        """The thread's lock: its remaining TTL and whose it is (never its token), or
        ``None`` if nobody holds it."""
        where, command, finish = ops.lock_info(self._layout, thread_id)
        return finish(await self._script(where, command))

    def iter_locks(self) -> AsyncIterator[LockInfo]:
        """Every lock held under this prefix, found with SCAN on every primary."""
        self._connected()
        return inspection.iter_locks_async(self)

    def iter_queues(self) -> AsyncIterator[QueueInfo]:
        """Every thread queue under this prefix (depth, oldest entry's time), found with
        SCAN on every primary."""
        self._connected()
        return inspection.iter_queues_async(self)

    async def peek_queue(self, thread_id: str, limit: int = 10) -> list[QueueEntry]:
        """The ``limit`` oldest entries of the thread's queue, left in it."""
        where, command, finish = ops.peek_queue(self._layout, thread_id, limit)
        return finish(await self._call(where, command))

    async def stats(self) -> StateStats:
        """Counts of this prefix's subscriptions, locks, cache keys, lists, queues and
        queued entries (one SCAN of its keys), the deepest queues, and each primary's
        memory, rate and clients (``INFO``)."""
        return await inspection.stats_async(self)

    async def clear(self, *, allow_default_prefix: bool = False) -> int:
        """Remove every key under this prefix (SCAN and UNLINK, on every primary); →
        how many. Refuses the default prefix, which other bots may share, unless
        ``allow_default_prefix=True``."""
        return await inspection.clear_async(self, allow_default_prefix)
