"""The in-process backend: the embedded default (``memory://``).

A :class:`MemoryStore` keeps strings, sets and lists with millisecond TTLs and
behaves like Redis for every command chat-state uses (lists and cache values are
separate keys, a command on a key of the wrong type fails with WRONGTYPE, an
expired key is gone). Scripts run as their pure-Python twins, so the memory
backend executes the very same operations as a server.

``memory://`` gives each adapter a private store; ``memory://NAME`` selects a
store shared by every adapter in this process that names it. State kept here is
not shared between processes.

Time: every TTL, lock expiry and queue TTL of a store is measured on its clock, a
callable returning whole milliseconds. ``MemoryStore(clock=...)`` gives a store its
own; a store without one (every store a ``memory://`` URL opens, private or shared)
reads the *default clock* at each use: :func:`monotonic_ms` unless
:func:`set_default_clock` replaced it. Tests move time that way (the pytest plugin's
``state_clock`` fixture does)::

    now = [monotonic_ms()]          # continue from the clock it replaces
    previous = set_default_clock(lambda: now[0])
    try:
        ...  # state.set("k", 1, ttl_ms=30_000); now[0] += 30_000: "k" has expired
    finally:
        set_default_clock(previous)
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from .backend.interface import Arg, Args, AsyncBackend, Backend, NoScriptError
from .core.commands import script_call, set_options
from .core.scripts import SCRIPTS, Script, sha1_of
from .errors import BackendError, ConfigurationError

__all__ = ["Clock", "MemoryStore", "get_default_clock", "monotonic_ms", "set_default_clock"]

_Members = set[str]
_Value = str | _Members | deque[str]
_WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
_HEAP_SLACK = 1024


Clock = Callable[[], int]
"""A memory store's clock: a callable returning the time in whole milliseconds.

Only differences between its readings matter (it need not be Unix time); it must
never go back.
"""


def monotonic_ms() -> int:
    """The default clock: :func:`time.monotonic` in whole milliseconds.

    Whole milliseconds, as a server counts them: TTL arithmetic stays exact at any size.
    """
    return time.monotonic_ns() // 1_000_000


#: The default clock, in a one-slot list (replaced by set_default_clock).
_default_clock: list[Clock] = [monotonic_ms]


def get_default_clock() -> Clock:
    """The clock that stores created without one read (:func:`monotonic_ms` unless
    :func:`set_default_clock` replaced it)."""
    return _default_clock[0]


def set_default_clock(clock: Clock | None) -> Clock:
    """Make every store without a clock of its own read ``clock`` from now on; → the
    previous default clock (to restore it). ``None`` restores :func:`monotonic_ms`.

    It applies at once to such stores that exist already (``memory://NAME`` shared
    stores, and the private store of every connected ``memory://`` adapter), as
    their deadlines are compared with the clock at each use: a replacement should
    continue from the reading of the clock it replaces (as the pytest plugin's
    ``state_clock`` does), or keys already set live longer or shorter than asked.
    Meant for tests; a store given ``clock=`` is not affected.
    """
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a callable returning milliseconds, not {clock!r}")
    previous = _default_clock[0]
    _default_clock[0] = clock if clock is not None else monotonic_ms
    return previous


class MemoryStore:
    """A thread-safe in-process key space with Redis semantics.

    Expired keys are dropped lazily on access and, through a heap of deadlines,
    on every write, so memory stays bounded by the live keys.

    Args:
        clock: What the store measures every TTL, lock expiry and queue TTL with: a
            callable returning whole milliseconds (only differences matter; it must
            never go back). ``None`` (the default): the default clock, read at each
            use, which is :func:`monotonic_ms` unless :func:`set_default_clock`
            replaced it.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a callable returning milliseconds, not {clock!r}")
        self._clock = clock
        self._data: dict[str, _Value] = {}
        self._deadlines: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self.lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<MemoryStore keys={len(self._data)}>"

    # -- key space (callers hold self.lock) -------------------------------------------

    def _now(self) -> int:
        clock = self._clock
        return clock() if clock is not None else _default_clock[0]()

    def _live(self, key: str) -> _Value | None:
        deadline = self._deadlines.get(key)
        if deadline is not None and deadline <= self._now():
            self._drop(key)
            return None
        return self._data.get(key)

    def _drop(self, key: str) -> None:
        self._data.pop(key, None)
        self._deadlines.pop(key, None)

    def _sweep(self) -> None:
        now = self._now()
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, key = heapq.heappop(heap)
            if self._deadlines.get(key) == deadline:
                self._drop(key)

    def _expire_at(self, key: str, ttl_ms: int) -> None:
        deadline = self._now() + ttl_ms
        self._deadlines[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        if len(self._heap) > 2 * len(self._deadlines) + _HEAP_SLACK:
            # Deleted and re-timed keys leave stale entries behind: rebuild from the live
            # deadlines, so memory follows the live keys, not ops/s x TTL (amortised O(1)).
            self._heap = [(when, name) for name, when in self._deadlines.items()]
            heapq.heapify(self._heap)

    def _typed(self, key: str, kind: type[Any]) -> Any:
        value = self._live(key)
        if value is not None and not isinstance(value, kind):
            raise BackendError(_WRONGTYPE)
        return value

    # -- commands ---------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        with self.lock:
            value: str | None = self._typed(key, str)
            return value

    def set(self, key: str, value: str, px: int | None = None, nx: bool = False) -> bool:
        with self.lock:
            self._sweep()
            if nx and self._live(key) is not None:
                return False
            self._drop(key)
            self._data[key] = value
            if px:
                self._expire_at(key, px)
            return True

    def delete(self, key: str) -> int:
        with self.lock:
            present = self._live(key) is not None
            self._drop(key)
            return int(present)

    def pexpire(self, key: str, ttl_ms: int) -> int:
        with self.lock:
            if self._live(key) is None:
                return 0
            if ttl_ms <= 0:
                self._drop(key)
            else:
                self._expire_at(key, ttl_ms)
            return 1

    def pttl(self, key: str) -> int:
        """Milliseconds left: -2 if the key is absent, -1 if it has no TTL."""
        with self.lock:
            if self._live(key) is None:
                return -2
            deadline = self._deadlines.get(key)
            return -1 if deadline is None else max(0, deadline - self._now())

    def sadd(self, key: str, member: str) -> int:
        with self.lock:
            self._sweep()
            members: set[str] | None = self._typed(key, set)
            if members is None:
                members = self._data[key] = set()
            before = len(members)
            members.add(member)
            return len(members) - before

    def srem(self, key: str, member: str) -> int:
        with self.lock:
            members: set[str] | None = self._typed(key, set)
            if members is None or member not in members:
                return 0
            members.discard(member)
            if not members:
                self._drop(key)
            return 1

    def sismember(self, key: str, member: str) -> bool:
        with self.lock:
            members: set[str] | None = self._typed(key, set)
            return members is not None and member in members

    def smembers(self, key: str) -> _Members:
        with self.lock:
            members: _Members | None = self._typed(key, set)
            return set(members or ())

    def rpush(self, key: str, value: str) -> int:
        with self.lock:
            self._sweep()
            items: deque[str] | None = self._typed(key, deque)
            if items is None:
                items = self._data[key] = deque()
            items.append(value)
            return len(items)

    def lpop(self, key: str) -> str | None:
        with self.lock:
            items: deque[str] | None = self._typed(key, deque)
            if not items:
                return None
            value = items.popleft()
            if not items:
                self._drop(key)
            return value

    def llen(self, key: str) -> int:
        with self.lock:
            items: deque[str] | None = self._typed(key, deque)
            return len(items) if items else 0

    def type_of(self, key: str) -> str:
        """What ``TYPE`` answers: ``none``, ``string``, ``set`` or ``list``."""
        with self.lock:
            value = self._live(key)
        if value is None:
            return "none"
        return "string" if isinstance(value, str) else "set" if isinstance(value, set) else "list"

    def lindex(self, key: str, index: int) -> str | None:
        with self.lock:
            items: deque[str] | None = self._typed(key, deque)
            if not items or not -len(items) <= index < len(items):
                return None
            return items[index]

    def lrange(self, key: str, start: int, stop: int) -> list[str]:
        with self.lock:
            items: deque[str] | None = self._typed(key, deque)
            if not items:
                return []
            n = len(items)
            first = max(start + n if start < 0 else start, 0)
            last = min(stop + n if stop < 0 else stop, n - 1)
            return [items[i] for i in range(first, last + 1)]

    def ltrim(self, key: str, start: int, stop: int) -> None:
        with self.lock:
            items: deque[str] | None = self._typed(key, deque)
            if not items:
                return
            kept = self.lrange(key, start, stop)
            if kept:
                self._data[key] = deque(kept)
            else:
                self._drop(key)

    def live_keys(self, prefix: str = "") -> list[str]:
        """Every live key (starting with ``prefix``)."""
        with self.lock:
            return [
                key
                for key in list(self._data)
                if key.startswith(prefix) and self._live(key) is not None
            ]

    def flush(self) -> None:
        """Remove every key."""
        with self.lock:
            self._data.clear()
            self._deadlines.clear()
            self._heap.clear()

    def run_script(self, sha: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run the Python twin of the script with this SHA (EVALSHA)."""
        script: Script | None = SCRIPTS.get(sha)
        if script is None:
            raise NoScriptError(f"NOSCRIPT No matching script: {sha}")
        with self.lock:
            # ARGV reach Lua as strings; give the twins the same.
            return script.twin(self, keys, [str(arg) for arg in args])

    def execute(self, args: Args) -> Any:
        """Run one command, as a server would: ``("SET", "k", "v", "PX", 1000)``.

        The commands chat-state sends (see :mod:`chat_state.backend.interface`);
        others raise :class:`~chat_state.errors.BackendError`, as a server's error does.
        """
        command = _COMMANDS.get(str(args[0]).upper())
        if command is None:
            raise BackendError(f"ERR unknown command '{args[0]}'")
        try:
            return command(self, args)
        except (IndexError, ValueError):
            raise BackendError(f"ERR wrong arguments for '{args[0]}'") from None


class MemoryBackend:
    """:class:`~chat_state.backend.Backend` over a :class:`MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @property
    def client(self) -> MemoryStore:
        return self.store

    def call(self, key: str | None, args: Args) -> Any:
        return self.store.execute(args)

    def scan(self, prefix: str) -> Iterator[str]:
        return iter(self.store.live_keys(prefix))

    def close(self) -> None:
        return None


class AsyncMemoryBackend:
    """:class:`~chat_state.backend.AsyncBackend` over a :class:`MemoryStore`.

    The store does no I/O, so each call completes without suspending; the store's
    lock is held only for the command itself.
    """

    #: It holds no connection, so an AsyncState keeps it across event loops.
    loop_free = True

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @property
    def client(self) -> MemoryStore:
        return self.store

    async def call(self, key: str | None, args: Args) -> Any:
        return self.store.execute(args)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        for key in self.store.live_keys(prefix):
            yield key

    async def aclose(self) -> None:
        return None


def _set(store: MemoryStore, args: Args) -> str | None:
    """SET key value [PX ms] [NX]."""
    try:
        px, nx = set_options(args)
    except ValueError as exc:
        raise BackendError(str(exc)) from None
    return "OK" if store.set(str(args[1]), str(args[2]), px, nx) else None


def _script(store: MemoryStore, sha: str, args: Args) -> Any:
    """EVALSHA / EVAL sha-or-source numkeys key... arg..."""
    _, keys, argv = script_call(args)
    return store.run_script(sha, keys, argv)


#: What the memory backend answers to HELLO as its version: chat-state's.
_VERSION = version("chat-state")

_COMMANDS: dict[str, Callable[[MemoryStore, Args], Any]] = {
    "PING": lambda store, args: "PONG",
    "HELLO": lambda store, args: ["server", "memory", "version", _VERSION, "role", "master"],
    "GET": lambda store, args: store.get(str(args[1])),
    "SET": _set,
    "DEL": lambda store, args: store.delete(str(args[1])),
    "SADD": lambda store, args: store.sadd(str(args[1]), str(args[2])),
    "SREM": lambda store, args: store.srem(str(args[1]), str(args[2])),
    "SISMEMBER": lambda store, args: int(store.sismember(str(args[1]), str(args[2]))),
    # No memory, rate or client figures to tell: stats() reports them as unknown.
    "INFO": lambda store, args: "# chat-state memory store\r\n",
    "UNLINK": lambda store, args: sum(store.delete(str(key)) for key in args[1:]),
    "SCARD": lambda store, args: len(store.smembers(str(args[1]))),
    # One page: the whole set (the store is in this process; a cursor would add nothing).
    "SSCAN": lambda store, args: ["0", sorted(store.smembers(str(args[1])))],
    "LPOP": lambda store, args: store.lpop(str(args[1])),
    "LLEN": lambda store, args: store.llen(str(args[1])),
    "LRANGE": lambda store, args: store.lrange(str(args[1]), int(args[2]), int(args[3])),
    "EVALSHA": lambda store, args: _script(store, str(args[1]), args),
    "EVAL": lambda store, args: _script(store, sha1_of(str(args[1])), args),
}

_named_stores: dict[str, MemoryStore] = {}
_named_lock = threading.Lock()


def _store_name(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigurationError("a memory URL is memory:// or memory://NAME")
    return parts.netloc


def store_for_url(url: str) -> MemoryStore:
    """``memory://`` → a new private store; ``memory://NAME`` → the shared store NAME.

    Both read the default clock (see :func:`set_default_clock`)."""
    name = _store_name(url)
    if not name:
        return MemoryStore()
    with _named_lock:
        store = _named_stores.get(name)
        if store is None:
            store = _named_stores[name] = MemoryStore()
        return store


class MemoryFactory:
    """The :class:`~chat_state.backend.BackendFactory` of ``memory://``."""

    def validate_url(self, url: str) -> None:
        _store_name(url)

    def open_sync(self, url: str) -> Backend:
        return MemoryBackend(store_for_url(url))

    def open_async(self, url: str) -> AsyncBackend:
        return AsyncMemoryBackend(store_for_url(url))

    def adopt_sync(self, client: object) -> Backend | None:
        return MemoryBackend(client) if isinstance(client, MemoryStore) else None

    def adopt_async(self, client: object) -> AsyncBackend | None:
        return AsyncMemoryBackend(client) if isinstance(client, MemoryStore) else None


BACKEND = MemoryFactory()
