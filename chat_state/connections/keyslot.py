"""Which of a Redis Cluster's 16384 slots a key lives in."""

from __future__ import annotations

import binascii

__all__ = ["SLOTS", "key_slot"]

#: Slots of a Redis Cluster.
SLOTS = 16384


def key_slot(key: bytes) -> int:
    """The slot of ``key``: CRC16 (XMODEM) of the key, or of its ``{hash tag}``."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end > start + 1:  # an empty tag "{}" does not count
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS
