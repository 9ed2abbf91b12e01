"""The backend kit: what a backend implements, and the pieces every backend needs.

A backend is a :class:`BackendFactory` registered under the entry-point group
:data:`ENTRY_POINT_GROUP` (named by its URL scheme), whose :class:`Backend` /
:class:`AsyncBackend` sends one command at a time, scans and closes (see
:mod:`chat_state.backend.interface` for the commands and how replies are
normalised). chat-state's own backends (``chat_state_redis``,
``chat_state_valkey``, ``chat_state_coredis``) are built from these names only,
so a third-party backend can do what they do:

* URLs: :func:`parse_redis_url` and :class:`RedisURL` (every Redis-family form,
  typed options, unknown ones refused), :func:`redact_url`.
* Errors: :func:`backend_error` (a client's exception as ours, secrets scrubbed),
  :func:`configuration_error`, :func:`scrub`, :class:`NoScriptError`.
* Commands: :func:`set_options` and :func:`script_call` read the words of the
  ``SET`` and ``EVALSHA``/``EVAL`` commands the operations send, for a backend
  that calls a typed method per command.
* Policy: :data:`RETRIES`, :func:`backoff` (from :data:`BACKOFF_BASE_S` to
  :data:`BACKOFF_CAP_S`) and :data:`SCAN_COUNT`, so that every backend retries and
  scans alike.
* Replies: :func:`normalised`, :func:`text`, :func:`glob_escape` (text as a
  literal in a SCAN pattern), :func:`scan_pattern` (every key with a prefix),
  :func:`anext_or_none`.
* Async-only clients: :class:`PortalBackend` runs an :class:`AsyncBackend` for
  State, through one anyio portal per process; :func:`spawn_detached` gives a client
  a task of its own; :func:`on_asyncio` tells which loop runs.
* Client libraries shaped like redis-py: :class:`~chat_state.backend.redis_family.RedisFamily`
  (``chat_state_redis`` and ``chat_state_valkey`` are one each), with chat-state's own
  connections as the default and the library's pooled clients as the alternative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chat_state.core.commands import script_call, set_options

from .errors import backend_error, configuration_error, scrub
from .interface import (
    Arg,
    Args,
    AsyncBackend,
    Backend,
    BackendFactory,
    NodeReply,
    NoScriptError,
)
from .loops import on_asyncio, spawn_detached
from .policy import BACKOFF_BASE_S, BACKOFF_CAP_S, RETRIES, SCAN_COUNT, backoff
from .registry import ENTRY_POINT_GROUP
from .replies import anext_or_none, glob_escape, normalised, scan_pattern, text
from .urls import SCHEMES, RedisURL, parse_redis_url, redact_url

if TYPE_CHECKING:
    from .portal import PortalBackend

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "ENTRY_POINT_GROUP",
    "RETRIES",
    "SCAN_COUNT",
    "SCHEMES",
    "Arg",
    "Args",
    "AsyncBackend",
    "Backend",
    "BackendFactory",
    "NoScriptError",
    "NodeReply",
    "PortalBackend",
    "RedisURL",
    "anext_or_none",
    "backend_error",
    "backoff",
    "configuration_error",
    "glob_escape",
    "normalised",
    "on_asyncio",
    "parse_redis_url",
    "redact_url",
    "scan_pattern",
    "script_call",
    "scrub",
    "set_options",
    "spawn_detached",
    "text",
]


def __getattr__(name: str) -> object:
    # The portal registers exit and fork hooks when imported: only for who uses it.
    if name == "PortalBackend":
        from .portal import PortalBackend  # noqa: PLC0415

        return PortalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
