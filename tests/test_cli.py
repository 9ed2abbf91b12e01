"""The ``chat-state`` command line, run in-process through ``main``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import redis

from chat_state import BackendError, cli

SMALL = ["--threads", "20", "--messages", "300", "--retry-rate", "0.5", "--workers", "4"]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    status = cli.main(["demo", *SMALL, "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def test_demo_handles_every_message_exactly_once(capsys: pytest.CaptureFixture[str]) -> None:
    status, summary = run_json(capsys)
    assert status == 0
    assert summary["ok"] is True
    assert summary["problems"] == []
    assert summary["backend"].startswith("AsyncState(url='memory://'")
    assert summary["unique_messages"] == summary["handled"] == 300
    assert summary["duplicates_dropped"] > 0
    assert summary["deliveries"] == 300 + summary["duplicates_dropped"]
    assert summary["new_threads"] + summary["in_subscribed_threads"] == 300
    assert summary["lock_overlaps"] == 0
    assert summary["operations"] > summary["deliveries"]


def test_same_seed_same_deliveries(capsys: pytest.CaptureFixture[str]) -> None:
    figures = ["deliveries", "duplicates_dropped", "new_threads"]
    first = run_json(capsys, "--seed", "7")[1]
    again = run_json(capsys, "--seed", "7")[1]
    other = run_json(capsys, "--seed", "8")[1]
    assert [first[f] for f in figures] == [again[f] for f in figures]
    assert first["deliveries"] != other["deliveries"]


def test_text_summary_ends_with_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "duplicates dropped" in out
    assert out.splitlines()[-1] == "OK: 300 messages handled exactly once"


def test_a_message_handled_twice_fails_the_check(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = cli.Bot.handle

    async def twice(self: cli.Bot, thread: str, message: str) -> None:
        await handle(self, thread, message)
        if message.endswith("-m7"):
            await handle(self, thread, message)

    monkeypatch.setattr(cli.Bot, "handle", twice)
    assert cli.main(["demo", *SMALL]) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 messages were handled more than once" in out
    assert "OK:" not in out


def test_unknown_scheme_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--url", "nope://x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("chat-state: error: unknown URL scheme nope://")
    assert captured.err.count("\n") == 1


def test_error_in_a_worker_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fail(self: cli.Bot, thread: str, message: str) -> None:
        raise BackendError("redis command failed: connection lost")

    monkeypatch.setattr(cli.Bot, "handle", fail)
    assert cli.main(["demo", *SMALL]) == 1
    captured = capsys.readouterr()
    assert captured.err == "chat-state: error: redis command failed: connection lost\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    assert "demo" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--retry-rate" in out
    assert "memory://" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: chat-state" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args", [["--threads", "0"], ["--retry-rate", "1.5"], ["--workers", "x"], ["--bogus"]]
)
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", *args])
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_demo_on_redis_leaves_no_keys(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"cli-test-{uuid.uuid4().hex}"
    status, summary = run_json(capsys, "--url", redis_url, "--key-prefix", prefix)
    assert status == 0
    assert summary["ok"] is True
    assert "redis://" in summary["backend"]
    time.sleep(0.01)  # the trimmed history lists expire after 1 ms
    with redis.Redis.from_url(redis_url) as client:
        assert list(client.scan_iter(match=f"{prefix}:*")) == []
