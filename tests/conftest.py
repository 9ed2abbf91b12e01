"""Fixtures: real servers, and one state adapter per backend x facade.

The conformance tests are written once as async tests; the blocking :class:`State`
is driven through :class:`AsAsync`, which calls it directly (no thread hop), so
every test runs on memory and redis-server, through ``State`` and ``AsyncState``.
"""

from __future__ import annotations

import builtins
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from chat_state import AsyncState, MemoryStore, State
from chat_state.memory import store_for_url

from .servers import ServerUnavailable, redis_server_url

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A redis-server started for this session (or CHAT_STATE_TEST_REDIS_URL)."""
    try:
        server = redis_server_url()
        url = server.__enter__()
    except ServerUnavailable as exc:
        if IN_CI:
            pytest.fail(f"no Redis server for the tests, and in CI that is a failure: {exc}")
        pytest.skip(f"no Redis server: {exc}")
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Raw:
    """Look at what a backend stored, bypassing chat-state (redis-py or the store)."""

    def __init__(self, *, store: MemoryStore | None = None, client: Any = None) -> None:
        self.store = store
        self.client = client

    def _target(self) -> Any:
        return self.store if self.store is not None else self.client

    def get(self, key: str) -> str | None:
        return self._target().get(key)  # type: ignore[no-any-return]

    def set(self, key: str, value: str) -> None:
        self._target().set(key, value)

    def rpush(self, key: str, value: str) -> None:
        self._target().rpush(key, value)

    def lrange(self, key: str) -> list[str]:
        return list(self._target().lrange(key, 0, -1))

    def smembers(self, key: str) -> builtins.set[str]:
        return set(self._target().smembers(key))

    def pttl(self, key: str) -> int:
        return int(self._target().pttl(key))

    def keys(self, prefix: str) -> list[str]:
        if self.store is not None:
            return sorted(k for k in self.store.live_keys() if k.startswith(prefix))
        return sorted(self.client.scan_iter(match=f"{prefix}*", count=1000))


@dataclass
class Target:
    """Where a test's state lives: a URL for the adapter, and a raw view of it."""

    kind: str
    url: str
    raw: Raw
    prefix: str

    def key(self, kind: str, name: str = "") -> str:
        return f"{self.prefix}:{kind}:{name}" if name else f"{self.prefix}:{kind}"


@pytest.fixture(params=["memory", "redis"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "memory":
        url = f"memory://{prefix}"
        yield Target("memory", url, Raw(store=store_for_url(url)), prefix)
        store_for_url(url).flush()
        return
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield Target("redis", url, Raw(client=client), prefix)
    finally:
        client.close()


class AsAsync:
    """Drive a blocking :class:`State` with ``await``, calling it directly."""

    def __init__(self, state: State) -> None:
        self.sync = state

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.sync, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            return attribute(*args, **kwargs)

        return call


@pytest.fixture(params=["sync", "async"])
def facade(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_state(target: Target, facade: str) -> Callable[..., Any]:
    """Build (unconnected) adapters on the test's target through the test's facade."""

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("key_prefix", target.prefix)
        if facade == "sync":
            return AsAsync(State.from_url(target.url, **kwargs))
        return AsyncState.from_url(target.url, **kwargs)

    return make


@pytest.fixture
async def state(make_state: Callable[..., Any]) -> AsyncIterator[Any]:
    """A connected adapter (State through AsAsync, or AsyncState)."""
    adapter = make_state()
    await adapter.connect()
    try:
        yield adapter
    finally:
        await adapter.disconnect()
