"""The retry and scan policy every backend follows, so that they fail and scan alike."""

from __future__ import annotations

from chat_state.core.commands import SCAN_COUNT

__all__ = ["BACKOFF_BASE_S", "BACKOFF_CAP_S", "RETRIES", "SCAN_COUNT", "backoff"]

#: Times a command is tried again when no connection could be opened for it (a command
#: that may have run is never sent again).
RETRIES = 3
#: The backoff between tries: exponential from BACKOFF_BASE_S, capped at BACKOFF_CAP_S.
BACKOFF_BASE_S = 0.025
BACKOFF_CAP_S = 0.25


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped
    (at any ``attempt``: the exponent stops growing long after the cap is reached)."""
    return float(min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt, 32)))
