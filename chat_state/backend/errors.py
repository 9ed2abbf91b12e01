"""Errors a backend raises, with every secret scrubbed from their messages."""

from __future__ import annotations

from collections.abc import Sequence

from chat_state.errors import BackendError, ConfigurationError

__all__ = ["backend_error", "configuration_error", "scrub"]


def scrub(message: str, secrets: Sequence[str]) -> str:
    """``message`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def backend_error(library: str, exc: BaseException, secrets: Sequence[str]) -> BackendError:
    """Our error for a client library's ``exc``, with every secret scrubbed (raise it
    ``from exc``, so that the library's exception is chained)."""
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
