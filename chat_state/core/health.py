"""What a health check sends and how it reads the replies, without I/O.

A health check sends ``PING`` to every primary in use (its round trip is the
latency) and :data:`HELLO` without arguments, which changes nothing on the
connection and tells the server's name, version and role (Redis 6 and later,
every Valkey); a server that refuses ``HELLO`` is reported without them.
"""

from __future__ import annotations

from typing import Any

from chat_state.core.commands import Args, reply_text

__all__ = ["HELLO", "identity"]

HELLO: Args = ("HELLO",)


def identity(reply: Any) -> tuple[str | None, str | None, str | None]:
    """``HELLO``'s reply (a map in RESP3, pairs in RESP2) → (server, version, role)."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if isinstance(reply, dict) and reply and all(isinstance(v, dict) for v in reply.values()):
        reply = next(iter(reply.values()))  # a cluster client's: a reply per node
    if not isinstance(reply, dict):
        return None, None, None
    fields = {reply_text(k): v for k, v in reply.items()}

    def text(name: str) -> str | None:
        value = fields.get(name)
        return None if value is None else reply_text(value)

    return text("server"), text("version"), text("role")
