"""Deprecated since 0.2: the backend interface is :mod:`chat_state.backend`.

``BackendFactory`` and ``NoScriptError`` are re-exported from there. The per-command
protocols ``RedisLike`` and ``AsyncRedisLike`` are gone: a backend now implements
``call(key, args)``, ``scan(prefix)`` and ``close()`` / ``aclose()``
(:class:`chat_state.backend.Backend`, :class:`chat_state.backend.AsyncBackend`).
"""

from __future__ import annotations

import warnings

from chat_state.backend import BackendFactory, NoScriptError

__all__ = ["BackendFactory", "NoScriptError"]

_MOVED = (
    "a backend now implements call(key, args), scan(prefix) and close() / aclose(): "
    "see chat_state.backend.Backend and chat_state.backend.AsyncBackend"
)

warnings.warn(
    "chat_state.protocols is deprecated: import BackendFactory and NoScriptError from "
    f"chat_state.backend ({_MOVED})",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> object:
    if name in ("RedisLike", "AsyncRedisLike"):
        raise AttributeError(f"chat_state.protocols.{name} was removed in 0.2: {_MOVED}")
    raise AttributeError(f"module 'chat_state.protocols' has no attribute {name!r}")
