"""Fixtures of this suite's own; chat-state's (state, async_state, state_clock,
chat_state_url) come from its pytest plugin, loaded by pytest itself."""

from __future__ import annotations

import pytest

from chat_state.pytest_plugin import StateClock


@pytest.fixture
def anyio_backend() -> str:
    """The async tests (``@pytest.mark.anyio``) run on asyncio."""
    return "asyncio"


@pytest.fixture
def clock(request: pytest.FixtureRequest, chat_state_url: str) -> StateClock:
    """``state_clock`` on memory://; a test that moves time is skipped on a real server,
    whose clock cannot be moved (``state_clock`` itself would fail it)."""
    if not chat_state_url.startswith("memory://"):
        pytest.skip("moves time: memory:// only")
    value: StateClock = request.getfixturevalue("state_clock")
    return value
