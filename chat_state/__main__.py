"""``python -m chat_state``: the ``chat-state`` command line."""

from __future__ import annotations

from chat_state.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
