"""The valkey-py backend of chat-state.

Serves ``valkey://``, ``valkeys://``, ``valkey+cluster://``,
``valkey+sentinel://`` and their TLS forms (and the ``redis…`` schemes when
redis-py is not installed, or with ``driver="valkey"``), and recognises
``valkey.Valkey``, ``valkey.cluster.ValkeyCluster``, clients from
``valkey.sentinel.Sentinel.master_for`` and their asyncio twins.

It shares the redis-py-family implementation (valkey-py is a fork of redis-py)
and depends on valkey-py only. Install it with ``pip install "chat-state[valkey]"``.
"""

from __future__ import annotations

from chat_state.backend.redis_family import RedisFamily

__all__ = ["BACKEND"]

#: The :class:`~chat_state.backend.BackendFactory` for valkey-py clients.
BACKEND = RedisFamily(
    "valkey",
    client_class="Valkey",
    cluster_class="ValkeyCluster",
    base_error="ValkeyError",
    cluster_error="ValkeyClusterException",
)
