"""What the inspection operations read, without I/O: whose a lock is, from its token,
and what a server's ``INFO`` says.

A lock's token is its holder's secret (whoever knows it can release the lock), so an
inspection never returns it: :func:`holder_of` tells where it comes from, when it was
taken if the token says, and a fingerprint that cannot be turned back into it.
"""

from __future__ import annotations

import re
from typing import Any

from chat_state.models import LockHolder, ServerStats

from .commands import reply_text

__all__ = ["holder_of", "server_stats"]

#: Token formats → their writer: chat-state's ``cs_`` + 32 hex digits; the TypeScript
#: adapters' ``ioredis_<ms>_<base36>`` and ``redis_<ms>_<random>``; chat_sdk's Python
#: adapters' ``<prefix>_<ms>_<32 hex digits>``.
_ORIGINS = [
    ("chat-state", re.compile(r"cs_[0-9a-f]{32}")),
    ("state-ioredis", re.compile(r"ioredis_(?P<ms>[0-9]{1,16})_[0-9a-z]+")),
    ("state-redis", re.compile(r"redis_(?P<ms>[0-9]{1,16})_\S+")),
    ("chat_sdk", re.compile(r".+_(?P<ms>[0-9]{1,16})_[0-9a-f]{32}")),
]


def holder_of(token: str) -> LockHolder:
    """Whose the lock under ``token`` is, without the token."""
    fingerprint = LockHolder.fingerprint_of(token)
    for origin, pattern in _ORIGINS:
        found = pattern.fullmatch(token)
        if found is not None:
            ms = found.groupdict().get("ms")
            return LockHolder(origin, fingerprint, None if ms is None else int(ms))
    return LockHolder("unknown", fingerprint)


def _fields(reply: Any) -> dict[str, Any]:
    """``INFO``'s reply as fields: the server's text, or a client library's dict of it."""
    if isinstance(reply, dict):
        return {reply_text(k): v for k, v in reply.items()}
    fields: dict[str, Any] = {}
    for line in reply_text(reply).splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value.strip()
    return fields


def _number(fields: dict[str, Any], name: str) -> int | None:
    try:
        return int(fields[name])
    except (KeyError, TypeError, ValueError):
        return None


def server_stats(address: str, reply: Any) -> list[ServerStats]:
    """``INFO``'s reply from ``address`` → a :class:`ServerStats` per server it covers
    (a client library's Cluster client answers with a dict per node)."""
    if isinstance(reply, BaseException):
        return [ServerStats(address, None, None, None, error=str(reply))]
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        return [
            stats for node, info in reply.items() for stats in server_stats(reply_text(node), info)
        ]
    fields = _fields(reply)
    return [
        ServerStats(
            address,
            used_memory_bytes=_number(fields, "used_memory"),
            ops_per_sec=_number(fields, "instantaneous_ops_per_sec"),
            connected_clients=_number(fields, "connected_clients"),
        )
    ]
