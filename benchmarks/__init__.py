"""chat-state's speed measurement: ``uv run python -m benchmarks.run --help``.

The same five workloads (lock cycle, de-duplication, cache, subscription check,
queue) on chat-state's :class:`~chat_state.AsyncState` and
:class:`~chat_state.State` (memory, standalone Redis, Redis Cluster), raw
redis-py, the TypeScript adapters ``@chat-adapter/state-ioredis`` and
``@chat-adapter/state-redis`` (through Node, ``benchmarks/bench.mjs``) and the
Python ``chat_sdk`` package's ``RedisStateAdapter``, side by side in one run on
servers the runner starts itself. See ``benchmarks/README.md``.
"""
