"""Argument checks, run before anything is sent to a server.

Every number an operation takes has one range, the same on every backend, chosen so
that nothing a server or a script receives can fail there once it has started to
write (see :data:`MAX_TTL_MS`, :data:`MAX_SIZE`, :data:`MAX_TIME_MS`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

__all__ = [
    "MAX_SIZE",
    "MAX_TIME_MS",
    "MAX_TTL_MS",
    "check_list_ttl",
    "check_lock",
    "check_name",
    "check_queue_entry",
    "check_size",
    "check_text",
    "check_ttl",
    "check_wait",
]

#: The longest TTL, in milliseconds: 2**53 - 1 (about 285,000 years), the largest
#: integer JavaScript's numbers hold exactly, and far below what would overflow a
#: server's clock arithmetic (now + TTL in signed 64 bits).
MAX_TTL_MS = 2**53 - 1
#: The largest ``max_length`` / ``max_size``: 2**63 - 1, a signed 64-bit integer, what
#: Redis's LTRIM takes (``sys.maxsize`` on 64-bit Python).
MAX_SIZE = 2**63 - 1
#: The latest queue-entry time (``enqueued_at``, ``expires_at``), in Unix ms: 2**63 - 1,
#: so that ``sys.maxsize`` can mean "never expires".
MAX_TIME_MS = 2**63 - 1


def check_text(name: str, value: str) -> str:
    """``value`` if it can be written as UTF-8, else :class:`ValueError`.

    A lone surrogate (``"\\ud800"``) has no UTF-8 form: servers would store it as "?"
    and it would collide with a real "?" (values escape it; names cannot).
    """
    if not value.isascii():  # O(1) for str: the common case costs nothing
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            surrogate = f"U+{ord(value[exc.start]):04X}"
            raise ValueError(
                f"{name} contains a lone surrogate ({surrogate} at index {exc.start}), which "
                "cannot be stored as UTF-8; pass text that is valid Unicode"
            ) from None
    return value


def check_name(name: str, value: object) -> str:
    """A thread id or cache key: a non-empty ``str`` that UTF-8 can encode."""
    if type(value) is str and value and value.isascii():
        return value  # the common case, in one test (isascii is O(1))
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    value = str.__str__(value)  # a str subclass (an Enum's...): its text, as sent
    if not value:
        raise ValueError(f"{name} must not be empty")
    return check_text(name, value)


def _check_int(name: str, value: object, low: int, high: int, what: str) -> int:
    """``value`` as a plain int from ``low`` to ``high``, or the error that says why not."""
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        value = int(value)  # an int subclass (IntEnum...): its plain value, as it is sent
    if not low <= value <= high:
        raise ValueError(f"{name} must be {what} from {low} to {high}, got {value}")
    return value


_MILLISECOND = timedelta(milliseconds=1)


def _check_ms(name: str, value: object, low: int) -> int:
    """A duration in milliseconds (an int, or a timedelta) from ``low`` to MAX_TTL_MS."""
    if isinstance(value, timedelta):
        if value < timedelta(0):  # refused even when it would round up to 0
            raise ValueError(f"{name} must not be negative, got {value!r}")
        value = -(-value // _MILLISECOND)  # whole milliseconds, rounded up: never 0 if > 0
    elif isinstance(value, bool) or not isinstance(value, int):
        kind = type(value).__name__
        raise TypeError(f"{name} must be an int (milliseconds) or a timedelta, not {kind}")
    return _check_int(name, value, low, MAX_TTL_MS, "a number of milliseconds")


def check_ttl(name: str, value: object, *, optional: bool = False) -> int:
    """A TTL in milliseconds, 1 to :data:`MAX_TTL_MS`; a :class:`~datetime.timedelta`
    is taken as its milliseconds, rounded up.

    ``optional`` (a cache value's TTL): ``None``, 0 and ``timedelta(0)`` are taken too,
    as 0, "no expiry" (what chat_sdk's ``dedupe_ttl_ms=0`` and the TypeScript adapters
    mean by 0). A lock's TTL is never optional: a lock that never expires would
    outlive a crashed holder.
    """
    if type(value) is int and 0 < value <= MAX_TTL_MS:
        return value  # the common case, in one test
    if optional:
        return 0 if value is None else _check_ms(name, value, 0)
    return _check_ms(name, value, 1)


def check_wait(name: str, value: object) -> int:
    """How long to wait, in milliseconds (an int or a timedelta): 0 (try once) to
    :data:`MAX_TTL_MS`."""
    if type(value) is int and 0 <= value <= MAX_TTL_MS:
        return value
    return _check_ms(name, value, 0)


def check_size(name: str, value: object) -> int:
    """A maximum length: ``None`` or 0 (unbounded) to :data:`MAX_SIZE`."""
    if value is None:
        return 0
    return _check_int(name, value, 0, MAX_SIZE, "an int")


def check_list_ttl(name: str, value: object) -> int:
    """A list's TTL in milliseconds: ``None`` or 0 (keep the list's TTL) to :data:`MAX_TTL_MS`."""
    if value is None:
        return 0
    return _check_ms(name, value, 0)


def check_lock(lock: Any) -> tuple[str, str]:
    """A lock value: anything with a ``thread_id`` and a ``token`` (ours or chat_sdk's)."""
    thread_id = getattr(lock, "thread_id", None)
    token = getattr(lock, "token", None)
    if thread_id is None or token is None:
        raise TypeError(f"lock must be a Lock, not {type(lock).__name__}")
    return check_name("lock.thread_id", thread_id), check_name("lock.token", token)


def check_queue_entry(entry: Any) -> tuple[int, int, Any]:
    """A queue entry: ours, chat_sdk's, or anything with the same three attributes."""
    try:
        enqueued_at, expires_at, message = entry.enqueued_at, entry.expires_at, entry.message
    except AttributeError:
        raise TypeError(f"entry must be a QueueEntry, not {type(entry).__name__}") from None
    if not (
        type(enqueued_at) is int
        and type(expires_at) is int
        and 0 <= enqueued_at <= MAX_TIME_MS
        and 0 <= expires_at <= MAX_TIME_MS
    ):
        what = "a Unix time in milliseconds"
        enqueued_at = _check_int("entry.enqueued_at", enqueued_at, 0, MAX_TIME_MS, what)
        expires_at = _check_int("entry.expires_at", expires_at, 0, MAX_TIME_MS, what)
    return enqueued_at, expires_at, message
