"""Replies as the operations read them, and SCAN patterns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

__all__ = ["anext_or_none", "glob_escape", "normalised", "scan_pattern", "text"]

T = TypeVar("T")


def text(reply: Any) -> Any:
    """``bytes`` decoded as UTF-8 (U+FFFD for what is not, as in TypeScript); else as is."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def normalised(reply: Any) -> Any:
    """A client library's reply as the operations read it: text as ``str`` (also in a
    list), the rest as it is (see :mod:`chat_state.backend.interface`)."""
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    if isinstance(reply, list):
        return [normalised(item) for item in reply]
    return reply


def glob_escape(literal: str) -> str:
    """``literal`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in literal)


def scan_pattern(prefix: str) -> str:
    """The SCAN MATCH pattern of every key that starts with ``prefix``."""
    return glob_escape(prefix) + "*"


async def anext_or_none(iterator: AsyncIterator[T]) -> T | None:
    """The next item, or ``None`` at the end (``anext`` with a default, on Python 3.10)."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
