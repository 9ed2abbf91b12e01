"""JSON text exactly as the TypeScript adapters write it (``JSON.stringify``).

Compact separators, non-ASCII characters written as themselves, NaN and infinities
refused. An object with a ``to_json()`` method is written as what it returns, at
any depth (``JSON.stringify`` does the same with ``toJSON``).
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from .errors import SerializationError
from .models import QueueEntry

__all__ = ["decode", "decode_queue_entry", "encode", "encode_queue_entry"]

_CHAT_SDK_MESSAGE = "chat:Message"


def _to_json_hook(value: object) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"an object of type {type(value).__name__} is not plain JSON")


_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_to_json_hook
)


def _refuse_constant(name: str) -> NoReturn:
    # JSON.parse rejects NaN and Infinity; so do we, so both languages read the same.
    raise ValueError(name)


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


def encode(value: object) -> str:
    """Encode ``value`` as compact JSON text, or raise :class:`SerializationError`."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value cannot be stored as JSON: {exc}") from None


def decode(text: str) -> Any:
    """Parse stored JSON text; text that is not JSON is returned as it is."""
    try:
        return _decoder.decode(text)
    except ValueError:
        return text


def encode_queue_entry(
    fields: tuple[str, str], enqueued_at: int, expires_at: int, message: object
) -> str:
    """Encode a queue entry, its two times named by ``fields`` (camelCase or snake_case)."""
    enqueued_field, expires_field = fields
    return encode({enqueued_field: enqueued_at, expires_field: expires_at, "message": message})


def _revive_message(message: Any) -> Any:
    # chat_sdk's own adapter turns stored messages back into Message objects; do the
    # same when the application uses chat_sdk (never import it ourselves).
    if isinstance(message, dict) and message.get("_type") == _CHAT_SDK_MESSAGE:
        types_module = sys.modules.get("chat_sdk.types")
        if types_module is not None:
            return types_module.Message.from_json(message)
    return message


def decode_queue_entry(text: str) -> QueueEntry:
    """Parse a stored queue entry, camelCase (TypeScript) or snake_case (``chat_sdk``)."""
    data = decode(text)
    if isinstance(data, dict) and "message" in data:
        enqueued_at = data.get("enqueuedAt", data.get("enqueued_at"))
        expires_at = data.get("expiresAt", data.get("expires_at"))
        if isinstance(enqueued_at, int) and isinstance(expires_at, int):
            return QueueEntry(enqueued_at, expires_at, _revive_message(data["message"]))
    raise SerializationError(f"stored queue entry is not a queue entry: {text[:200]!r}")
