"""JSON text exactly as the TypeScript adapters write it (``JSON.stringify``).

Compact separators, non-ASCII characters written as themselves, lone surrogates
escaped (``\\ud800``), small floats in JavaScript's form (``0.00001``, ``1.5e-7``),
NaN and infinities refused. An object with a ``to_json()`` method is written as
what it returns, at any depth (``JSON.stringify`` does the same with ``toJSON``).

Object keys must be ``str``. JSON's are strings, so ``{1: "a"}`` would come back as
``{"1": "a"}``, and ``{1: "a", "1": "b"}`` as ``{"1": "b"}``: a value is refused
rather than changed.

Two differences remain, both deliberate: an integral float keeps Python's form
(``1.0``, ``1e+16``), so that Python reads back the float it wrote; and integer-like
object keys keep their insertion order (JavaScript moves them first).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from json.encoder import encode_basestring
from typing import Any, NoReturn

from chat_state.errors import SerializationError
from chat_state.models import QueueEntry

__all__ = ["decode", "decode_queue_entry", "encode", "encode_queue_entry"]

_CHAT_SDK_MESSAGE = "chat:Message"


#: Types the encoder writes as they are, that hold no dict (the walk below skips them).
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _refuse_other_keys(value: object) -> None:
    """Raise :class:`TypeError` if a dict in ``value`` has a key that is not a str.

    The encoder would write ``1``, ``1.5``, ``True`` and ``None`` keys as strings, so the
    value would come back changed (and ``1`` and ``"1"`` would collide). ``value`` has no
    cycles (the encoder has accepted it, or is about to report them).
    """
    if isinstance(value, dict):
        for key, child in value.items():
            if type(key) is not str and not isinstance(key, str):
                raise TypeError(
                    f"a dict key is {key!r} "
                    f"({type(key).__name__}), not a str; JSON object keys are strings, so it "
                    "would come back as a str (and could collide with one): convert the keys "
                    "with str() first"
                )
            if type(child) not in _SCALARS:
                _refuse_other_keys(child)
    elif isinstance(value, (list, tuple)):
        for child in value:
            if type(child) not in _SCALARS:
                _refuse_other_keys(child)


def _to_json_hook(value: object) -> Any:
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        result = to_json()
        try:
            _refuse_other_keys(result)
        except RecursionError:
            raise ValueError("a to_json() value nests too deeply, or contains itself") from None
        return result
    raise TypeError(f"an object of type {type(value).__name__} is not plain JSON")


def _one_shot_encoder() -> Callable[[object], str]:
    """``JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"),
    default=_to_json_hook).encode``, without its Python layers: the C encoder itself
    where there is one, made for each value with a fresh memo of the containers it is
    in (so that a value that contains itself is reported as such, and threads share
    nothing)."""
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_to_json_hook
        ).encode
    options = (_to_json_hook, encode_basestring, None, ":", ",", False, False, False)

    def encode(value: object) -> str:
        return "".join(c_make_encoder({}, *options)(value, 0))

    return encode


_encode = _one_shot_encoder()


def _refuse_constant(name: str) -> NoReturn:
    # JSON.parse rejects NaN and Infinity; so do we, so both languages read the same.
    raise ValueError(name)


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)
#: The decoder's own scanner (``JSONDecoder.decode`` is it, between two regex matches
#: for whitespace, which stored JSON text does not have: it is tried first).
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]


#: Python pads a negative exponent to two digits; JSON.stringify does not, and writes
#: 1e-5 and 1e-6 without one. Only such floats differ (the check is cheap).
_PADDED_EXPONENT = re.compile(r"\de-0\d")
_STRING_OR_SMALL_FLOAT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?)(\d)(?:\.(\d+))?e-(\d+)')
_SURROGATE = re.compile("[\ud800-\udfff]")


def _javascript_float(match: re.Match[str]) -> str:
    sign, digit, fraction, exponent = match.groups()
    if digit is None:  # a string: left as it is
        return match.group(0)
    power = int(exponent)
    if power <= 6:
        return f"{sign}0.{'0' * (power - 1)}{digit}{fraction or ''}"
    return f"{sign}{digit}{'.' + fraction if fraction else ''}e-{power}"


def encode(value: object) -> str:
    """Encode ``value`` as compact JSON text, or raise :class:`SerializationError`."""
    if value is True:  # what de-duplication stores on every webhook: skip the encoder
        return "true"
    try:
        text = _encode(value)
        _refuse_other_keys(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value cannot be stored as JSON: {exc}") from None
    if "e-0" in text and _PADDED_EXPONENT.search(text):
        text = _STRING_OR_SMALL_FLOAT.sub(_javascript_float, text)
    if not text.isascii() and _SURROGATE.search(text):
        # A lone surrogate has no UTF-8 form; JSON.stringify escapes it.
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def decode(text: str) -> Any:
    """Parse stored JSON text; text that is not JSON is returned as it is."""
    try:
        try:
            value, end = _scan(text, 0)
            if end == len(text):
                return value
        except (StopIteration, ValueError):
            pass  # not JSON, or with whitespace around it: the whole decoder decides
        return _decoder.decode(text)
    except ValueError:
        return text
    except RecursionError:
        raise SerializationError(
            "stored JSON nests deeper than Python's parser can read "
            f"(sys.getrecursionlimit() is {sys.getrecursionlimit()})"
        ) from None


def encode_queue_entry(
    fields: tuple[str, str], enqueued_at: int, expires_at: int, message: object
) -> str:
    """Encode a queue entry, its two times named by ``fields`` (camelCase or snake_case)."""
    enqueued_field, expires_field = fields
    return encode({enqueued_field: enqueued_at, expires_field: expires_at, "message": message})


def _revive_message(message: Any) -> Any:
    # chat_sdk's own adapter turns stored messages back into Message objects; do the
    # same when the application uses chat_sdk (never import it ourselves).
    if type(message) is dict and message.get("_type") == _CHAT_SDK_MESSAGE:
        types_module = sys.modules.get("chat_sdk.types")
        if types_module is not None:
            return types_module.Message.from_json(message)
    return message


def decode_queue_entry(text: str) -> QueueEntry:
    """Parse a stored queue entry, camelCase (TypeScript) or snake_case (``chat_sdk``)."""
    data = decode(text)
    if type(data) is dict and "message" in data:
        enqueued_at, expires_at = data.get("enqueuedAt"), data.get("expiresAt")
        if type(enqueued_at) is int and type(expires_at) is int:  # as chat-state writes it
            return QueueEntry(enqueued_at, expires_at, _revive_message(data["message"]))
    if isinstance(data, dict) and "message" in data:
        enqueued_at = _milliseconds(data.get("enqueuedAt", data.get("enqueued_at")))
        expires_at = _milliseconds(data.get("expiresAt", data.get("expires_at")))
        if enqueued_at is not None and expires_at is not None:
            return QueueEntry(enqueued_at, expires_at, _revive_message(data["message"]))
    raise SerializationError(f"stored queue entry is not a queue entry: {text[:200]!r}")


def _milliseconds(value: object) -> int | None:
    """A stored time: an integer, or a number with a fraction (TypeScript allows one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # (1e400 reads as infinity: no time)
    return int(value)
