"""RESP, as chat-state's own connections speak it: hiredis packs the commands and
parses the replies."""

from __future__ import annotations

import hiredis

from chat_state.core.commands import Args

from .failures import ServerError

__all__ = ["new_reader", "pack"]


def pack(args: Args) -> bytes:
    """One command in RESP (the operations have checked that every text has a UTF-8 form)."""
    # hiredis's stub types the argument as a one-element tuple; it takes any length.
    packed: bytes = hiredis.pack_command(args)  # type: ignore[arg-type]
    return packed


def new_reader() -> hiredis.Reader:
    """A reply parser: text as ``str`` (U+FFFD for bytes that are not UTF-8, as in
    TypeScript), error replies as :class:`ServerError` values."""
    return hiredis.Reader(encoding="utf-8", errors="replace", replyError=ServerError)
