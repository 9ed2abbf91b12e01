"""Fixtures for the interop suite: a real TypeScript adapter and chat-state on one Redis.

``ts`` runs once per TypeScript adapter (``@chat-adapter/state-ioredis`` and
``@chat-adapter/state-redis``), each in a Node.js process of its own that the session
shares, on a fresh adapter whose key prefix is unique to the test; ``py`` is chat-state
on the same server with the same prefix, so both sides read and write the same keys.
Without Node.js or ``node_modules`` (run ``npm ci`` in ``tests/interop``) the tests are
skipped, and fail in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from chat_state import AsyncState, State
from chat_state.testing import ServerUnavailable
from tests.conftest import AsAsync, _unavailable

from .bridge import ADAPTERS, TSBridge

#: The facades ``py`` can be: AsyncState, or State driven through ``await`` (AsAsync).
FACADES = ["async", "sync"]


class Bridges:
    """One Node.js process per TypeScript adapter for the session, started on first use
    and restarted if it dies or stops answering."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._running: dict[str, TSBridge] = {}

    def get(self, adapter: str, prefix: str) -> TSBridge:
        """The adapter's bridge, now on a fresh adapter with key prefix ``prefix``."""
        bridge = self._running.get(adapter)
        if bridge is not None and bridge.alive:
            bridge.reopen(prefix)
            return bridge
        if bridge is not None:
            bridge.close()
        bridge = self._running[adapter] = TSBridge(adapter, self.url, prefix).start()
        return bridge

    def stop(self) -> None:
        for bridge in self._running.values():
            bridge.close()
        self._running.clear()


@pytest.fixture(scope="session")
def bridges(redis_url: str) -> Iterator[Bridges]:
    pool = Bridges(redis_url)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(params=sorted(ADAPTERS))
def ts(request: pytest.FixtureRequest, bridges: Bridges, redis_url: str) -> Iterator[TSBridge]:
    """A started TypeScript adapter on the session's Redis, with a key prefix of its own
    (``ts.prefix``). Skipped without Node.js or ``node_modules``; a failure in CI.
    The test's keys are deleted afterwards."""
    prefix = f"interop-{uuid.uuid4().hex[:10]}"
    try:
        bridge = bridges.get(str(request.param), prefix)
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    yield bridge
    client = redis.Redis.from_url(redis_url)
    try:
        stale = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


@pytest.fixture
async def py(request: pytest.FixtureRequest, ts: TSBridge, redis_url: str) -> AsyncIterator[Any]:
    """chat-state on the same Redis and prefix as ``ts``: AsyncState (the default), or
    State through AsAsync when a test is parametrized with ``py="sync"`` (indirect)."""
    facade = getattr(request, "param", "async")
    adapter: Any
    if facade == "sync":
        adapter = AsAsync(State.from_url(redis_url, key_prefix=ts.prefix))
    else:
        adapter = AsyncState.from_url(redis_url, key_prefix=ts.prefix)
    await adapter.connect()
    try:
        yield adapter
    finally:
        await adapter.disconnect()


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """redis-py with decoded replies, for the bytes both sides stored."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
