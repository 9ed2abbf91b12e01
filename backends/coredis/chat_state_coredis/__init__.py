"""The coredis backend of chat-state: coredis 6, on asyncio and trio.

Chosen with ``driver="coredis"`` and any Redis-family URL (``redis://``,
``redis+cluster://``, ``redis+sentinel://``, their TLS and ``valkey`` forms), or
by passing ``AsyncState`` a ``coredis.Redis`` / ``coredis.RedisCluster`` / a client
from ``coredis.Sentinel(...).primary_for(...)``. ``State`` over coredis runs through
an anyio blocking portal (coredis has no blocking client).

coredis clients must be entered (``async with``) and exited in one task: a client
chat-state creates is entered by ``connect()`` and exited by ``disconnect()``, so
call both from the same task (``async with AsyncState.from_url(...)`` does). A
client you pass in is yours to enter before ``connect()`` and to exit after
``disconnect()``.

Install it with ``pip install "chat-state[coredis]"``.
"""

from __future__ import annotations

from ._backend import BACKEND, AsyncCoredisBackend, CoredisFactory

__all__ = ["BACKEND", "AsyncCoredisBackend", "CoredisFactory"]
