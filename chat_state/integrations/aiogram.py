"""chat-state as aiogram 3's FSM storage and event isolation:
``pip install "chat-state[aiogram]"``.

:class:`ChatStateStorage` is an ``aiogram.fsm.storage.base.BaseStorage``: the FSM's
state and data of each chat and user live in an :class:`~chat_state.AsyncState`
(memory, Redis, Valkey, Cluster, Sentinel), shared by every instance of the bot.
:class:`ChatStateEventIsolation` is a ``BaseEventIsolation``: the updates of one
chat and user are handled one at a time across all those instances (in the order
they came, within one), under a chat-state lock renewed while the handler runs::

    from aiogram import Dispatcher
    from chat_state.integrations.aiogram import ChatStateStorage

    storage = ChatStateStorage.from_url(os.environ["REDIS_URL"], key_prefix="my-bot")
    dp = Dispatcher(storage=storage, events_isolation=storage.create_isolation())

Keys. aiogram's key builder (``DefaultKeyBuilder()`` by default, prefix ``"fsm"``,
as for aiogram's ``RedisStorage``) names each record; chat-state stores it in its
cache namespace, and the isolation's lock in its lock namespace::

    {key_prefix}:cache:fsm:{chat_id}:{user_id}:state   the state, a JSON string ("Form:age")
    {key_prefix}:cache:fsm:{chat_id}:{user_id}:data    the data, a JSON object
    {key_prefix}:lock:fsm:{chat_id}:{user_id}:lock     held while an update is handled

(with ``with_bot_id``, ``with_business_connection_id``, ``with_destiny``... the key
builder adds its parts, and a topic its thread id, as in aiogram). An operator reads
them with the ``chat-state`` command: ``chat-state get fsm:42:42:data --prefix
my-bot``, ``chat-state locks --prefix my-bot --match 'fsm:*'``.

Coming from aiogram's ``RedisStorage``. Its records are not read here: they have other
keys (``fsm:42:42:state``, with no ``{key_prefix}:cache:`` before it) and its state is
a bare string where chat-state's is JSON (``"Form:age"``, quoted), so one cannot simply
switch a running bot over: its conversations in progress would start over. To keep
them, copy them with the bot stopped: for each key ``k`` that ``RedisStorage`` wrote
(``SCAN`` for ``fsm:*``), ``await state.set(k, value)`` for a ``...:state`` (its text),
``await state.set(k, json.loads(value))`` for a ``...:data``, with the ``PTTL`` it had
left as ``ttl_ms`` (0 where it had none), and the same key builder on both sides.

Connections. A storage (or isolation) made by ``from_url()`` owns its
:class:`~chat_state.AsyncState`: it connects on first use, in the event loop that uses
it, and ``close()`` (which aiogram's shutdown calls) disconnects it; used again, it
connects again (aiogram's shutdown does not wait for handlers still running, and
those go on working). One given a ``state`` never connects or disconnects it: the
application owns it, and connects it before the dispatcher handles updates.

aiogram is asyncio-only, and so are these classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import anyio

from chat_state.core.layout import DEFAULT_PREFIX
from chat_state.core.validate import MAX_TTL_MS, check_ttl, check_wait
from chat_state.errors import LockUnavailableError, SerializationError
from chat_state.facades import DEFAULT_LOCK_TTL_MS, AsyncState

try:
    from aiogram.exceptions import DataNotDictLikeError
    from aiogram.fsm.state import State as FSMState
    from aiogram.fsm.storage.base import (
        BaseEventIsolation,
        BaseStorage,
        DefaultKeyBuilder,
        KeyBuilder,
        StateType,
        StorageKey,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        'chat_state.integrations.aiogram needs aiogram: pip install "chat-state[aiogram]"'
    ) from exc

__all__ = ["ChatStateEventIsolation", "ChatStateStorage"]

#: How long the isolation waits for a lock by default (ms): for good, as aiogram's own
#: isolations do (``SimpleEventIsolation``'s ``asyncio.Lock``, and
#: ``RedisEventIsolation``, whose ``timeout=60`` is its lock's TTL, not a wait).
DEFAULT_WAIT_MS = MAX_TTL_MS

_Made = TypeVar("_Made", bound="_OnState")
_Storage = TypeVar("_Storage", bound="ChatStateStorage")
_Isolation = TypeVar("_Isolation", bound="ChatStateEventIsolation")

_SECOND_MS = 1000


def _record_ttl(name: str, ttl: object) -> int | None:
    """A record's TTL as aiogram's RedisStorage takes it (an int of seconds, or a
    timedelta), in milliseconds; ``None``: the record never expires."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        if ttl <= timedelta(0):
            raise ValueError(f"{name} must be positive (or None: no expiry), got {ttl!r}")
        return check_ttl(name, ttl)  # to the millisecond, rounded up
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        kind = type(ttl).__name__
        raise TypeError(f"{name} must be an int (seconds), a timedelta or None, not {kind}")
    if not 0 < ttl <= MAX_TTL_MS // _SECOND_MS:
        raise ValueError(
            f"{name} is in seconds and must be from 1 to {MAX_TTL_MS // _SECOND_MS} "
            f"(or None: no expiry), got {ttl}"
        )
    return ttl * _SECOND_MS


class _OnState:
    """What the storage and the isolation share: an :class:`~chat_state.AsyncState`, a
    key builder, and whether they connect the state before use and disconnect it on
    close (they do when :meth:`_owning` made them, for ``from_url()``)."""

    def __init__(self, state: AsyncState, key_builder: KeyBuilder | None) -> None:
        if not isinstance(state, AsyncState):
            raise TypeError(f"state must be an AsyncState, not {type(state).__name__}")
        #: The chat-state adapter the records (or locks) live in.
        self.state = state
        #: How the records (or locks) are named.
        self.key_builder: KeyBuilder = (
            key_builder if key_builder is not None else DefaultKeyBuilder()
        )
        self._connects = self._disconnects = False

    @classmethod
    def _owning(
        cls: type[_Made], url: str, key_prefix: str, state_kwargs: dict[str, Any], **kwargs: Any
    ) -> _Made:
        """``cls(state, **kwargs)`` with a state of its own for ``url``, which it connects
        on first use and disconnects on close."""
        made = cls(AsyncState.from_url(url, key_prefix=key_prefix, **state_kwargs), **kwargs)
        made._connects = made._disconnects = True
        return made

    async def _ready(self) -> AsyncState:
        """The state, connected first if this object owns it."""
        if self._connects:
            await self.state.connect()  # a no-op once connected in this event loop
        return self.state

    async def close(self) -> None:
        """Disconnect the state if this object owns it (``from_url()``); otherwise
        nothing (the application disconnects its own state).

        Used again after that (a handler still running: aiogram's shutdown does not wait
        for them), an owned state connects again, and the next ``close()`` disconnects
        it again."""
        if self._disconnects:
            await self.state.disconnect()


class ChatStateStorage(_OnState, BaseStorage):
    """aiogram's FSM storage, over an :class:`~chat_state.AsyncState`.

    Each state is a JSON string under ``key_builder.build(key, "state")``, each data a
    JSON object under ``key_builder.build(key, "data")``, in the state's cache (keys
    ``{key_prefix}:cache:{built key}``). ``set_state(None)`` and ``set_data({})``
    delete their record, as aiogram's RedisStorage does.

    Data is written as JSON by chat-state, not by ``json.dumps``: there is no
    ``json_dumps``/``json_loads`` to give, as there is for aiogram's RedisStorage,
    since the records are chat-state's (byte for byte what its TypeScript adapters
    write and read). Tuples come back as lists (as with ``json.dumps``); what is not
    JSON (a ``datetime``, a ``set``, ``bytes``) or would come back as something else
    (keys that are not strings, which ``json.dumps`` would turn into strings; NaN)
    raises :class:`~chat_state.SerializationError` (a ``ValueError``) and writes
    nothing. Records written by aiogram's RedisStorage are not read (see the module's
    docstring to copy them).

    Args:
        state: Where the records live. The application owns it: connect it before the
            dispatcher handles updates; this storage never connects nor disconnects
            it (:meth:`from_url` makes a storage that does).
        key_builder: How records are named; ``DefaultKeyBuilder()`` (prefix ``"fsm"``)
            by default, as for aiogram's RedisStorage.
        state_ttl: How long a state record lives after it was last set, as aiogram's
            RedisStorage takes it: an ``int`` of **seconds**, or a ``timedelta`` (kept
            to the millisecond, rounded up, where redis-py truncates it to whole
            seconds); ``None``: it never expires. 0, negative values and floats are
            refused (``ValueError``, ``TypeError``) here.
        data_ttl: The same for data records (``update_data`` sets it again).
    """

    def __init__(
        self,
        state: AsyncState,
        key_builder: KeyBuilder | None = None,
        state_ttl: int | timedelta | None = None,
        data_ttl: int | timedelta | None = None,
    ) -> None:
        super().__init__(state, key_builder)
        #: The TTLs as given (seconds, a timedelta, or None), as on aiogram's RedisStorage.
        self.state_ttl = state_ttl
        self.data_ttl = data_ttl
        self._state_ttl_ms = _record_ttl("state_ttl", state_ttl)
        self._data_ttl_ms = _record_ttl("data_ttl", data_ttl)

    @classmethod
    def from_url(
        cls: type[_Storage],
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        key_builder: KeyBuilder | None = None,
        state_ttl: int | timedelta | None = None,
        data_ttl: int | timedelta | None = None,
        **state_kwargs: Any,
    ) -> _Storage:
        """A storage with an :class:`~chat_state.AsyncState` of its own, for ``url``.

        It connects on first use (tasks starting at once share one connection
        attempt), and :meth:`close` disconnects it; used again after that, it
        connects again. ``key_prefix`` and ``state_kwargs`` (``logger=``,
        ``driver=``...) go to :meth:`chat_state.AsyncState.from_url`; the rest is as
        for the constructor. Pass a ``key_prefix`` of the bot's own (``"my-bot"``):
        the default is chat-state's (``"chat-sdk"``), which every application that
        does not choose one shares on that server.
        """
        return cls._owning(
            url,
            key_prefix,
            state_kwargs,
            key_builder=key_builder,
            state_ttl=state_ttl,
            data_ttl=data_ttl,
        )

    def create_isolation(
        self,
        *,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        wait_ms: int | timedelta = DEFAULT_WAIT_MS,
    ) -> ChatStateEventIsolation:
        """An event isolation over this storage's state and key builder (as aiogram's
        ``RedisStorage.create_isolation()`` makes one): one set of connections for both.

        When this storage owns its state (:meth:`from_url`), the isolation connects it
        on first use too, and leaves disconnecting it to this storage's :meth:`close`.
        """
        isolation = ChatStateEventIsolation(
            self.state, self.key_builder, ttl_ms=ttl_ms, wait_ms=wait_ms
        )
        isolation._connects = self._connects
        return isolation

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.state!r})"

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the state of ``key`` (a ``State`` is stored as its ``.state`` string, a
        ``str`` subclass such as a ``StrEnum`` member as its text); ``None`` (or the
        default ``State()``) deletes the record."""
        value = state.state if isinstance(state, FSMState) else state
        adapter = await self._ready()
        record = self.key_builder.build(key, "state")
        if value is None:
            await adapter.delete(record)
        else:
            text = str.__str__(value) if isinstance(value, str) else str(value)
            await adapter.set(record, text, self._state_ttl_ms)

    async def get_state(self, key: StorageKey) -> str | None:
        """The state of ``key``, or ``None``.

        Raises :class:`~chat_state.SerializationError` if what is stored there is not a
        JSON string (written by something else than this storage).
        """
        adapter = await self._ready()
        record = self.key_builder.build(key, "state")
        value = await adapter.get(record)
        if value is None or isinstance(value, str):
            return value
        raise SerializationError(
            f"the state stored at {record!r} is a {type(value).__name__}, not a str "
            "(it was not written by ChatStateStorage)"
        )

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the data of ``key`` (a dict, or ``DataNotDictLikeError``); an empty
        dict deletes the record."""
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        adapter = await self._ready()
        record = self.key_builder.build(key, "data")
        if not data:
            await adapter.delete(record)
        else:
            await adapter.set(record, data, self._data_ttl_ms)

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """A fresh dict of the data of ``key`` (``{}`` when there is none).

        Raises ``DataNotDictLikeError`` if what is stored there is not a JSON object
        (written by something else than this storage).
        """
        adapter = await self._ready()
        record = self.key_builder.build(key, "data")
        value = await adapter.get(record)
        if value is None:
            return {}
        if not isinstance(value, dict):
            msg = f"the data stored at {record!r} is a {type(value).__name__}, not a dict"
            raise DataNotDictLikeError(msg)
        return value


class _Gate:
    """One chat and user's queue in this process: an ``asyncio.Lock`` (FIFO) and how
    many updates hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class ChatStateEventIsolation(_OnState, BaseEventIsolation):
    """aiogram's event isolation, over an :class:`~chat_state.AsyncState`: one update
    of a chat and user at a time, across every bot instance that shares the state.

    aiogram's FSM middleware takes ``lock(key)`` around each update, before it reads
    the state. Here that is ``state.lock(key_builder.build(key, "lock"), ttl_ms,
    wait_ms=wait_ms, renew=True)`` (key ``{key_prefix}:lock:fsm:{chat}:{user}:lock``):

    - **Order.** In one process, the updates of a chat and user queue for that lock in
      the order they arrive, and are handled in that order, as with aiogram's
      ``SimpleEventIsolation`` (an ``asyncio.Lock`` per key, here taken before
      ``state.lock()`` and dropped when no update holds or waits for it). Across
      instances the order is not guaranteed (nor is it with aiogram's
      ``RedisEventIsolation``): whichever instance tries first once the lock is
      released takes it.
    - **Waiting.** An update whose chat and user is being handled waits for its turn
      and the lock up to ``wait_ms`` in all; by default for good, as aiogram's own
      isolations wait. A release in another process is seen at the next try
      (exponential backoff with jitter, capped at 100 ms). The updates of other chats
      and users do not wait.
    - **Renewing.** While the handler runs, the lock is extended every ``ttl_ms / 3``,
      so a handler may run for as long as it needs: ``ttl_ms`` is only how long a
      crashed instance keeps the chat and user blocked.
    - **Not within wait_ms.** :class:`~chat_state.LockUnavailableError` is raised from
      the FSM middleware, before the handler runs: aiogram hands it to the
      ``@dp.errors()`` handlers (``ErrorEvent.exception``; ``event.update.message``
      can still be answered), and if none handles it ``feed_update`` raises it (with
      polling, aiogram logs it and the update is not handled again).
    - **Lost.** If a renewal finds the lock gone or taken by another holder (it
      expired while the server could not be reached, or was force-released), the
      handler is cancelled at its next ``await`` and
      :class:`~chat_state.LockLostError` is raised the same way: another instance may
      have handled an update of the same chat and user meanwhile.

    Args:
        state: Where the locks live; as for :class:`ChatStateStorage`, the
            application owns it and connects it (:meth:`from_url` makes an isolation
            that does).
        key_builder: How locks are named; ``DefaultKeyBuilder()`` by default. Use the
            storage's (:meth:`ChatStateStorage.create_isolation` does).
        ttl_ms: The lock's TTL in **milliseconds** (or a ``timedelta``): 30 s by
            default. A TTL under a second is logged as a likely mistake (seconds
            passed as milliseconds).
        wait_ms: How long an update waits for its turn and the lock, in milliseconds
            (or a ``timedelta``, rounded up to the millisecond): for good by default
            (``chat_state.MAX_TTL_MS``, 2**53 - 1 ms); 0 is one try (an update of a
            busy chat and user fails at once). Floats and negative values are refused
            (``TypeError``, ``ValueError``) here, before any update.
    """

    def __init__(
        self,
        state: AsyncState,
        key_builder: KeyBuilder | None = None,
        *,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        wait_ms: int | timedelta = DEFAULT_WAIT_MS,
    ) -> None:
        super().__init__(state, key_builder)
        #: The lock's TTL and how long an update waits for it, in milliseconds.
        self.ttl_ms = check_ttl("ttl_ms", ttl_ms)
        self.wait_ms = check_wait("wait_ms", wait_ms)
        #: Built lock key → its queue in this process, while an update holds or waits.
        self._gates: dict[str, _Gate] = {}

    @classmethod
    def from_url(
        cls: type[_Isolation],
        url: str,
        *,
        key_prefix: str = DEFAULT_PREFIX,
        key_builder: KeyBuilder | None = None,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        wait_ms: int | timedelta = DEFAULT_WAIT_MS,
        **state_kwargs: Any,
    ) -> _Isolation:
        """An isolation with an :class:`~chat_state.AsyncState` of its own, for ``url``,
        connected on first use and disconnected by :meth:`close` (again on use after
        that), as :meth:`ChatStateStorage.from_url`, whose advice on ``key_prefix``
        holds here too. With a storage on the same URL,
        :meth:`ChatStateStorage.create_isolation` shares its connections instead."""
        return cls._owning(
            url, key_prefix, state_kwargs, key_builder=key_builder, ttl_ms=ttl_ms, wait_ms=wait_ms
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.state!r}, ttl_ms={self.ttl_ms}, wait_ms={self.wait_ms})"
        )

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        """Hold the lock of ``key``'s chat and user while the block runs (see the
        class): after the updates of that chat and user that came before in this
        process, waiting up to ``wait_ms`` in all, renewed until the block ends, then
        released. Raises :class:`~chat_state.LockUnavailableError` or
        :class:`~chat_state.LockLostError`."""
        thread_id = self.key_builder.build(key, "lock")
        gates = self._gates
        gate = gates.get(thread_id)
        if gate is None:
            gate = gates[thread_id] = _Gate()
        gate.users += 1  # before any await: the queue keeps the order updates came in
        try:
            wait_ms, started = self.wait_ms, anyio.current_time()
            forever = wait_ms >= MAX_TTL_MS
            turn = False
            with anyio.move_on_after(None if forever else wait_ms / _SECOND_MS):
                turn = await gate.lock.acquire()
            if not turn:
                waited = f"within {wait_ms} ms" if wait_ms else "at once (wait_ms=0)"
                raise LockUnavailableError(
                    f"the lock on thread {thread_id!r} was not acquired {waited}: earlier "
                    "updates of the same chat and user were still being handled in this process",
                    thread_id=thread_id,
                )
            try:
                if not forever:  # what is left of wait_ms, for the chat-state lock
                    spent = int((anyio.current_time() - started) * _SECOND_MS)
                    wait_ms = max(0, wait_ms - spent)
                state = await self._ready()
                async with state.lock(thread_id, self.ttl_ms, wait_ms=wait_ms, renew=True):
                    yield None
            finally:
                gate.lock.release()
        finally:
            gate.users -= 1
            if not gate.users:
                del gates[thread_id]
