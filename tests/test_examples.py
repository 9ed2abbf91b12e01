"""The examples run, on memory and on a real Redis, and say what they should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


def run_example(name: str, url: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(params=["memory", "redis"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


def test_async_bot(url: str) -> None:
    output = run_example("async_bot.py", url)
    assert "e1 handled 1 message(s)" in output
    assert "e1 duplicate dropped" in output
    assert "e2 handled 1 message(s)" in output
    assert "history: [{'text': 'hello'}, {'text': 'héllo again'}]" in output


def test_sync_worker(url: str) -> None:
    output = run_example("sync_worker.py", url)
    assert "config: {'greeting': 'hi', 'languages': ['en', 'fr']}" in output
    assert "1 of 4 workers got the thread's lock" in output
