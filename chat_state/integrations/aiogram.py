"""chat-state as aiogram 3's FSM storage and event isolation:
``pip install "chat-state[aiogram]"``.

:class:`ChatStateStorage` is an ``aiogram.fsm.storage.base.BaseStorage``: the FSM's
state and data of each chat and user live in an :class:`~chat_state.AsyncState`
(memory, Redis, Valkey, Cluster, Sentinel), shared by every instance of the bot.
:class:`ChatStateEventIsolation` is a ``BaseEventIsolation``: the updates of one
chat and user are handled one at a time across all those instances, under a
chat-state lock renewed while the handler runs::

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

(with ``with_bot_id``, ``with_destiny``... the key builder adds its parts, and a topic
its thread id, as in aiogram). An operator reads them with the ``chat-state`` command:
``chat-state get fsm:42:42:data --prefix my-bot``, ``chat-state locks --prefix my-bot
--match 'fsm:*'``.

Connections. A storage (or isolation) made by ``from_url()`` owns its
:class:`~chat_state.AsyncState`: it connects on first use, in the event loop that uses
it, and ``close()`` (which aiogram's shutdown calls) disconnects it; used again, it
connects again. One given a ``state`` never connects or disconnects it: the
application owns it, and connects it before the dispatcher handles updates.

aiogram is asyncio-only, and so are these classes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from chat_state.core.layout import DEFAULT_PREFIX
from chat_state.core.validate import MAX_TTL_MS, check_ttl, check_wait
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

#: How long the isolation waits for a lock by default (ms): aiogram's RedisEventIsolation
#: holds its lock for 60 s.
DEFAULT_WAIT_MS = 60_000

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
    return int(ttl) * _SECOND_MS


class _Owned:
    """Whether an object connects its state before use, and disconnects it on close."""

    __slots__ = ("connects", "disconnects")

    def __init__(self) -> None:
        self.connects = False
        self.disconnects = False


class ChatStateStorage(BaseStorage):
    """aiogram's FSM storage, over an :class:`~chat_state.AsyncState`.

    Each state is a JSON string under ``key_builder.build(key, "state")``, each data a
    JSON object under ``key_builder.build(key, "data")``, in the state's cache (keys
    ``{key_prefix}:cache:{built key}``). ``set_state(None)`` and ``set_data({})``
    delete their record, as aiogram's RedisStorage does. Data is written as JSON by
    chat-state, which raises :class:`~chat_state.SerializationError` (a
    ``ValueError``) for what is not JSON (a ``datetime``) or would come back changed
    (keys that are not strings, which ``json.dumps`` would turn into strings; NaN),
    rather than altering it.

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
        if not isinstance(state, AsyncState):
            raise TypeError(f"state must be an AsyncState, not {type(state).__name__}")
        #: The chat-state adapter the records live in.
        self.state = state
        #: How the records are named.
        self.key_builder: KeyBuilder = (
            key_builder if key_builder is not None else DefaultKeyBuilder()
        )
        #: The TTLs as given (seconds, a timedelta, or None), as on aiogram's RedisStorage.
        self.state_ttl = state_ttl
        self.data_ttl = data_ttl
        self._state_ttl_ms = _record_ttl("state_ttl", state_ttl)
        self._data_ttl_ms = _record_ttl("data_ttl", data_ttl)
        self._owned = _Owned()

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
        attempt), and :meth:`close` disconnects it. ``key_prefix`` and
        ``state_kwargs`` (``logger=``, ``driver=``...) go to
        :meth:`chat_state.AsyncState.from_url`; the rest is as for the constructor.
        """
        storage = cls(
            AsyncState.from_url(url, key_prefix=key_prefix, **state_kwargs),
            key_builder,
            state_ttl,
            data_ttl,
        )
        storage._owned.connects = storage._owned.disconnects = True
        return storage

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
        isolation._owned.connects = self._owned.connects
        return isolation

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.state!r})"

    async def _ready(self) -> AsyncState:
        """The state, connected first if this storage owns it."""
        if self._owned.connects:
            await self.state.connect()  # a no-op once connected in this event loop
        return self.state

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the state of ``key`` (a ``State`` is stored as its ``.state`` string);
        ``None`` (or the default ``State()``) deletes the record."""
        value = state.state if isinstance(state, FSMState) else state
        adapter = await self._ready()
        record = self.key_builder.build(key, "state")
        if value is None:
            await adapter.delete(record)
        else:
            await adapter.set(record, str(value), self._state_ttl_ms)

    async def get_state(self, key: StorageKey) -> str | None:
        """The state of ``key``, or ``None``."""
        adapter = await self._ready()
        value = await adapter.get(self.key_builder.build(key, "state"))
        return None if value is None else str(value)

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

    async def close(self) -> None:
        """Disconnect the state if this storage owns it (:meth:`from_url`); otherwise
        nothing (the application disconnects its own state)."""
        if self._owned.disconnects:
            await self.state.disconnect()


class ChatStateEventIsolation(BaseEventIsolation):
    """aiogram's event isolation, over an :class:`~chat_state.AsyncState`: one update
    of a chat and user at a time, across every bot instance that shares the state.

    aiogram's FSM middleware takes ``lock(key)`` around each update, before it reads
    the state. Here that is ``state.lock(key_builder.build(key, "lock"), ttl_ms,
    wait_ms=wait_ms, renew=True)`` (key ``{key_prefix}:lock:fsm:{chat}:{user}:lock``):

    - **Waiting.** An update whose chat and user is being handled waits for the lock
      up to ``wait_ms``. A release in the same process wakes it at once; one in
      another process is seen at its next try (exponential backoff with jitter,
      capped at 100 ms). The updates of other chats and users do not wait.
    - **Renewing.** While the handler runs, the lock is extended every ``ttl_ms / 3``,
      so a handler may run for as long as it needs: ``ttl_ms`` is only how long a
      crashed instance keeps the chat and user blocked.
    - **Not within wait_ms.** :class:`~chat_state.LockUnavailableError` is raised from
      the FSM middleware, before the handler runs: aiogram hands it to the
      ``@dp.errors()`` handlers (``ErrorEvent.exception``), and if none handles it
      ``feed_update`` raises it (with polling, aiogram logs it and the update is not
      handled again).
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
        wait_ms: How long an update waits for the lock, in milliseconds (or a
            ``timedelta``, rounded up to the millisecond): 60 s by default; from 0
            (one try: an update of a busy chat and user fails at once) to
            ``chat_state.MAX_TTL_MS`` (2**53 - 1 ms, which is waiting for good).
            Floats and negative values are refused (``TypeError``, ``ValueError``)
            here, before any update.
    """

    def __init__(
        self,
        state: AsyncState,
        key_builder: KeyBuilder | None = None,
        *,
        ttl_ms: int | timedelta = DEFAULT_LOCK_TTL_MS,
        wait_ms: int | timedelta = DEFAULT_WAIT_MS,
    ) -> None:
        if not isinstance(state, AsyncState):
            raise TypeError(f"state must be an AsyncState, not {type(state).__name__}")
        #: The chat-state adapter the locks live in.
        self.state = state
        #: How the locks are named.
        self.key_builder: KeyBuilder = (
            key_builder if key_builder is not None else DefaultKeyBuilder()
        )
        #: The lock's TTL and how long an update waits for it, in milliseconds.
        self.ttl_ms = check_ttl("ttl_ms", ttl_ms)
        self.wait_ms = check_wait("wait_ms", wait_ms)
        self._owned = _Owned()

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
        connected on first use and disconnected by :meth:`close` (as
        :meth:`ChatStateStorage.from_url`). With a storage on the same URL,
        :meth:`ChatStateStorage.create_isolation` shares its connections instead."""
        isolation = cls(
            AsyncState.from_url(url, key_prefix=key_prefix, **state_kwargs),
            key_builder,
            ttl_ms=ttl_ms,
            wait_ms=wait_ms,
        )
        isolation._owned.connects = isolation._owned.disconnects = True
        return isolation

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.state!r}, ttl_ms={self.ttl_ms}, wait_ms={self.wait_ms})"
        )

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        """Hold the lock of ``key``'s chat and user while the block runs (see the
        class): waiting up to ``wait_ms`` for it, renewed until the block ends, then
        released. Raises :class:`~chat_state.LockUnavailableError` or
        :class:`~chat_state.LockLostError`."""
        state = self.state
        if self._owned.connects:
            await state.connect()
        thread_id = self.key_builder.build(key, "lock")
        async with state.lock(thread_id, self.ttl_ms, wait_ms=self.wait_ms, renew=True):
            yield None

    async def close(self) -> None:
        """Disconnect the state if this isolation owns it (:meth:`from_url`); otherwise
        nothing."""
        if self._owned.disconnects:
            await self.state.disconnect()
