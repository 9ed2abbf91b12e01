"""The redis-py backend of chat-state.

Serves ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``redis+sentinel://`` and their TLS forms (and the ``valkey…`` schemes when
valkey-py is not installed, or with ``driver="redis"``), and recognises
``redis.Redis``, ``redis.cluster.RedisCluster``, clients from
``redis.sentinel.Sentinel.master_for`` and their asyncio twins.

Importing this module imports redis-py; chat-state loads it only when needed.
Install it with ``pip install "chat-state[redis]"``.
"""

from __future__ import annotations

from chat_state.backend.redis_family import RedisFamily

__all__ = ["BACKEND"]

#: The :class:`~chat_state.backend.BackendFactory` for redis-py clients.
BACKEND = RedisFamily(
    "redis",
    client_class="Redis",
    cluster_class="RedisCluster",
    base_error="RedisError",
    cluster_error="RedisClusterException",
)
