"""The examples run, on memory and on a real Redis, and say what they should."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_state.testing import find_redis_server

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


def _documents(output: str) -> list[dict[str, Any]]:
    """The JSON documents the console exporters printed, one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := output.find("{", at)) >= 0:
        document, at = decoder.raw_decode(output, at)
        found.append(document)
    return found


def test_telemetry_console(url: str) -> None:
    output = run_example("telemetry_console.py", url)
    documents = _documents(output)
    spans = [d for d in documents if "context" in d]
    assert [s["name"] for s in spans] == [
        f"chat_state.{name}"
        for name in (
            "connect", "subscribe", "set_if_not_exists", "acquire_lock",
            "append_to_list", "release_lock", "health",
        )
    ]  # fmt: skip
    system = "memory" if url == "memory://" else "redis"
    for span in spans:
        attributes = span["attributes"]
        assert span["kind"] == "SpanKind.CLIENT"
        assert attributes["db.system.name"] == system
        assert attributes["chat_state.key_prefix"] == "demo-bot"
    (metrics,) = [d for d in documents if "resource_metrics" in d]
    scopes = [scope for r in metrics["resource_metrics"] for scope in r["scope_metrics"]]
    names = {metric["name"] for scope in scopes for metric in scope["metrics"]}
    assert {"db.client.operation.duration", "chat_state.lock.outcomes"} <= names
    # Neither the value nor the thread id is anywhere in what was exported.
    assert "s3cr3t" not in output
    assert "1700000000" not in output


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_the_testing_your_bot_suite(where: str) -> None:
    """examples/testing_your_bot runs on chat-state's pytest fixtures: on memory://, and
    on a private redis-server it starts (where the tests that move time are skipped)."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    args.append(str(EXAMPLES / "testing_your_bot"))
    if where == "redis":
        if find_redis_server() is None:
            if os.environ.get("CI"):
                pytest.fail("no redis-server; in CI a missing server is a failure")
            pytest.skip("no redis-server binary")
        args += ["--chat-state-server", "redis"]
    done = subprocess.run(
        args, cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "8 passed" if where == "memory" else "5 passed, 3 skipped"
    assert expected in done.stdout, done.stdout
