"""The redis-py backend of chat-state: ``redis://``, ``rediss://`` and ``unix://``.

Importing this module imports redis-py; chat-state loads it only when a URL of
one of these schemes, or a redis-py client, is used. Install it with
``pip install "chat-state[redis]"``.
"""

from __future__ import annotations

import redis
import redis.asyncio

from chat_state._redis_family import RedisFamily

__all__ = ["BACKEND"]

#: The :class:`~chat_state.protocols.BackendFactory` for redis-py clients.
BACKEND = RedisFamily(redis, client_class="Redis", base_error="RedisError")
