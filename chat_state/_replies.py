"""Small pieces every server backend shares: reply text, secret scrubbing, SCAN patterns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from .errors import BackendError, ConfigurationError

__all__ = [
    "anext_or_none",
    "backend_error",
    "configuration_error",
    "glob_escape",
    "scrub",
    "text",
]

T = TypeVar("T")


def text(reply: Any) -> Any:
    """``bytes`` decoded as UTF-8 (U+FFFD for what is not, as in TypeScript); else as is."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def scrub(message: str, secrets: Sequence[str]) -> str:
    """``message`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def backend_error(library: str, exc: BaseException, secrets: Sequence[str]) -> BackendError:
    """Our error for a client library's ``exc``, with every secret scrubbed."""
    detail = scrub(f"{type(exc).__name__}: {exc}", secrets)
    return BackendError(f"{library} command failed: {detail}")


def configuration_error(
    what: str, exc: BaseException, secrets: Sequence[str]
) -> ConfigurationError:
    """Our error for a library that refused its configuration (``exc``), secrets scrubbed.

    Raise it *outside* the ``except`` block: ``exc`` is neither its cause nor its context,
    since its message may quote what was scrubbed here.
    """
    return ConfigurationError(f"{what}: {scrub(str(exc), secrets)}")


def glob_escape(literal: str) -> str:
    """``literal`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in literal)


async def anext_or_none(iterator: AsyncIterator[T]) -> T | None:
    """The next item, or ``None`` at the end (``anext`` with a default, on Python 3.10)."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
