"""chat_state.integrations.slack: slack_sdk's installation and OAuth state stores, sync
and async, on memory, one server, a Cluster and Sentinel; driven through slack_sdk's
store interfaces and through Bolt (its OAuth flow, its authorization with the stored
tokens, token rotation, uninstallation), against a stand-in for Slack's Web API."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from flask.testing import FlaskClient
from slack_bolt import App
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from chat_state import AsyncState, ConfigurationError, SerializationError, State, cli
from chat_state.integrations.slack import (
    AsyncInstallationStore,
    AsyncOAuthStateStore,
    InstallationStore,
    OAuthStateStore,
)
from chat_state.testing import free_port

from .conftest import Target
from .slack_api import SlackApi, slack_api

pytestmark = pytest.mark.anyio

STORE_TARGETS = [
    "memory",
    "redis-server/standalone/redis-py",
    "redis-server/cluster/redis-py",
    "valkey-server/sentinel/valkey-py",
]
EXAMPLES = Path(__file__).parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
from slack_bolt_app import create_bolt_app, create_web_app  # noqa: E402


class Awaited:
    """A sync store driven as its async twin: ``await s.async_save(i)`` calls ``save(i)``."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name.removeprefix("async_"))

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


def installations(state: Any, facade: str, **options: Any) -> Any:
    if facade == "sync":
        return Awaited(InstallationStore(state.sync, **options))
    return AsyncInstallationStore(state, **options)


def oauth_states(state: Any, facade: str, **options: Any) -> Any:
    if facade == "sync":
        return Awaited(OAuthStateStore(state.sync, **options))
    return AsyncOAuthStateStore(state, **options)


def installation(**fields: Any) -> Installation:
    defaults: dict[str, Any] = {
        "app_id": "A0APP",
        "team_id": "T1",
        "team_name": "Team one",
        "user_id": "U1",
        "bot_token": "xoxb-1",
        "bot_id": "B1",
        "bot_user_id": "UB1",
        "bot_scopes": "chat:write,app_mentions:read",
        "installed_at": 1_700_000_000.5,
    }
    return Installation(**(defaults | fields))


def same(a: Installation | Bot | None, b: Installation | Bot | None) -> bool:
    return a is not None and b is not None and vars(a) == vars(b)


def keys(target: Target) -> list[str]:
    return target.raw.keys(target.prefix)


# -- the installation store ------------------------------------------------------------


@pytest.mark.targets(STORE_TARGETS)
async def test_an_installation_is_found_as_saved_with_every_field(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade)
    saved = installation(
        enterprise_id="E1",
        enterprise_name="Org",
        bot_refresh_token="xoxe-1-bot",
        bot_token_expires_at=1_800_000_000,
        user_token="xoxp-1",
        user_scopes=["search:read"],
        user_refresh_token="xoxe-1-user",
        user_token_expires_at=1_800_000_100,
        incoming_webhook_url="https://hooks.example/1",
        incoming_webhook_channel="#general",
        incoming_webhook_channel_id="C1",
        token_type="bot",
        custom_values={"plan": "pro"},
    )
    await store.async_save(saved)

    found = await store.async_find_installation(enterprise_id="E1", team_id="T1")
    assert same(found, saved)
    assert found.bot_refresh_token == "xoxe-1-bot"
    assert found.user_token_expires_at == 1_800_000_100
    assert found.get_custom_value("plan") == "pro"
    assert same(
        await store.async_find_installation(enterprise_id="E1", team_id="T1", user_id="U1"), saved
    )
    bot = await store.async_find_bot(enterprise_id="E1", team_id="T1")
    assert same(bot, saved.to_bot())
    # Another workspace, or the same one outside the org, has nothing.
    assert await store.async_find_installation(enterprise_id="E1", team_id="T2") is None
    assert await store.async_find_bot(enterprise_id=None, team_id="T1") is None
    assert (
        await store.async_find_installation(enterprise_id="E1", team_id="T1", user_id="U2") is None
    )

    base = f"{target.prefix}:cache:slack:-:E1:T1"
    assert keys(target) == sorted(
        [
            f"{base}:bot",
            f"{base}:installation",
            f"{base}:installation:U1",
            f"{base}:installers",
            f"{base}:bot-history",
            f"{base}:installation-history:U1",
        ]
    )


@pytest.mark.targets(STORE_TARGETS)
async def test_the_latest_installation_and_each_users_own(facade: str, state: Any) -> None:
    store = installations(state, facade)
    first = installation(user_id="U1", user_token="xoxp-u1", bot_token="xoxb-1", installed_at=100.0)
    second = installation(
        user_id="U2", user_token="xoxp-u2", bot_token="xoxb-2", installed_at=200.0
    )
    await store.async_save(first)
    await store.async_save(second)

    assert same(await store.async_find_installation(enterprise_id=None, team_id="T1"), second)
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-2"
    # A user's installation carries the workspace's latest bot token (bolt-python#664).
    mine = await store.async_find_installation(enterprise_id=None, team_id="T1", user_id="U1")
    assert (mine.user_id, mine.user_token, mine.bot_token) == ("U1", "xoxp-u1", "xoxb-2")
    assert mine.installed_at == 100.0

    # An older save by another user does not become the latest; the latest user's own
    # re-save (a rotated token keeps installed_at) does.
    await store.async_save(installation(user_id="U3", bot_token="xoxb-3", installed_at=150.0))
    latest = await store.async_find_installation(enterprise_id=None, team_id="T1")
    assert latest.user_id == "U2"
    assert latest.bot_token == "xoxb-2"
    rotated = installation(
        user_id="U2", user_token="xoxp-u2-rotated", bot_token="xoxb-2r", installed_at=200.0
    )
    await store.async_save(rotated)
    assert same(await store.async_find_installation(enterprise_id=None, team_id="T1"), rotated)
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-2r"


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_a_copy_through_slack_sdk_replaces_the_record_it_copies(
    facade: str, state: Any
) -> None:
    """slack_sdk's token rotator copies a record through a datetime (microseconds):
    the copy, with its new tokens, is still the latest record."""
    store = installations(state, facade)
    original = installation(installed_at=1_700_000_000.1234567, bot_refresh_token="xoxe-old")
    await store.async_save(original)
    copy = Installation(**original.to_dict_for_copying())
    assert copy.installed_at != original.installed_at  # (what slack_sdk's copy does)
    copy.bot_token, copy.bot_refresh_token = "xoxb-new", "xoxe-new"
    await store.async_save(copy)
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-new"
    for user_id in (None, "U1"):
        found = await store.async_find_installation(
            enterprise_id=None, team_id="T1", user_id=user_id
        )
        assert (found.bot_token, found.bot_refresh_token) == ("xoxb-new", "xoxe-new")


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_an_older_save_never_replaces_a_newer_one(facade: str, state: Any) -> None:
    """An instance that read an installation before the user reinstalled, and saves
    it now (a token rotation), does not undo the reinstall."""
    store = installations(state, facade)
    await store.async_save(installation(user_token="xoxp-new", installed_at=300.0))
    await store.async_save(installation(user_token="xoxp-stale", installed_at=200.0))
    for user_id in (None, "U1"):
        found = await store.async_find_installation(
            enterprise_id=None, team_id="T1", user_id=user_id
        )
        assert (found.user_token, found.installed_at) == ("xoxp-new", 300.0)


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_a_bad_record_is_refused_before_anything_is_written(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade)
    with pytest.raises(ValueError, match=r"an Installation's user_id .* must not be empty"):
        await store.async_save(installation(user_id=None))
    with pytest.raises(TypeError, match="a Slack id must be a str or None, not int"):
        await store.async_save(installation(user_id=5))
    with pytest.raises(TypeError, match="a Slack id must be a str or None, not int"):
        await store.async_save(installation(team_id=7))
    with pytest.raises(SerializationError):
        await store.async_save(installation(bot_token=None, custom_values={"when": {1, 2}}))
    with pytest.raises(TypeError, match="expected a slack_sdk Installation, not Bot"):
        await store.async_save(installation().to_bot())
    with pytest.raises(TypeError, match="expected a slack_sdk Bot, not dict"):
        await store.async_save_bot({"bot_token": "xoxb-1"})
    with pytest.raises(TypeError, match="a Slack id must be a str or None, not int"):
        await store.async_find_installation(enterprise_id=None, team_id=7)
    assert keys(target) == []
    with pytest.raises(TypeError, match="historical_data_enabled must be a bool, not str"):
        installations(state, facade, historical_data_enabled="false")


@pytest.mark.targets(STORE_TARGETS)
async def test_an_installation_without_a_bot_token_takes_the_latest_bot(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade)
    await store.async_save(installation(user_id="U1", bot_token="xoxb-1", installed_at=100.0))
    user_only = installation(
        user_id="U2", bot_token=None, bot_id=None, bot_user_id=None, bot_scopes="",
        user_token="xoxp-2", user_scopes="search:read", installed_at=200.0,
    )  # fmt: skip
    await store.async_save(user_only)
    latest = await store.async_find_installation(enterprise_id=None, team_id="T1")
    assert (latest.user_id, latest.user_token, latest.bot_token, latest.bot_id) == (
        "U2", "xoxp-2", "xoxb-1", "B1",
    )  # fmt: skip
    # The bot without a token was not saved (as in slack_sdk's stores).
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1"
    assert len(await state.get("slack:-:-:T1:bot-history")) == 1
    await store.async_save_bot(user_only.to_bot())
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1"


@pytest.mark.targets(STORE_TARGETS)
async def test_an_org_wide_install_is_found_from_any_workspace_of_the_org(
    facade: str, state: Any
) -> None:
    store = installations(state, facade)
    org = installation(
        enterprise_id="E1",
        team_id=None,
        team_name=None,
        is_enterprise_install=True,
        bot_token="xoxb-org",
    )
    workspace = installation(enterprise_id="E1", team_id="T9", bot_token="xoxb-ws")
    await store.async_save(org)
    await store.async_save(workspace)

    for team_id in (None, "T5", "T9"):
        found = await store.async_find_installation(
            enterprise_id="E1", team_id=team_id, is_enterprise_install=True
        )
        assert same(found, org)
        bot = await store.async_find_bot(
            enterprise_id="E1", team_id=team_id, is_enterprise_install=True
        )
        assert bot.bot_token == "xoxb-org"
    assert same(await store.async_find_installation(enterprise_id="E1", team_id="T9"), workspace)
    assert await store.async_find_installation(enterprise_id="E1", team_id="T5") is None

    await store.async_delete_all(enterprise_id="E1", team_id=None)
    assert (
        await store.async_find_installation(
            enterprise_id="E1", team_id=None, is_enterprise_install=True
        )
        is None
    )
    assert same(await store.async_find_installation(enterprise_id="E1", team_id="T9"), workspace)


@pytest.mark.targets(STORE_TARGETS)
async def test_deleting_a_user_leaves_the_newest_installation_left(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade)
    await store.async_save(installation(user_id="U1", user_token="xoxp-1", installed_at=100.0))
    await store.async_save(installation(user_id="U2", user_token="xoxp-2", installed_at=300.0))
    await store.async_save(installation(user_id="U3", user_token="xoxp-3", installed_at=200.0))

    await store.async_delete_installation(enterprise_id=None, team_id="T1", user_id="U2")
    assert (
        await store.async_find_installation(enterprise_id=None, team_id="T1", user_id="U2") is None
    )
    assert (await store.async_find_installation(enterprise_id=None, team_id="T1")).user_id == "U3"
    await store.async_delete_installation(enterprise_id=None, team_id="T1", user_id="U1")
    assert (await store.async_find_installation(enterprise_id=None, team_id="T1")).user_id == "U3"
    await store.async_delete_installation(enterprise_id=None, team_id="T1", user_id="U3")
    assert await store.async_find_installation(enterprise_id=None, team_id="T1") is None
    # The bot stays until it is deleted.
    assert keys(target) == [
        f"{target.prefix}:cache:slack:-:-:T1:bot",
        f"{target.prefix}:cache:slack:-:-:T1:bot-history",
    ]
    await store.async_delete_bot(enterprise_id=None, team_id="T1")
    assert keys(target) == []


@pytest.mark.targets(STORE_TARGETS)
async def test_delete_all_removes_the_workspace_and_nothing_else(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade)
    for user in ("U1", "U2", "U3"):
        await store.async_save(installation(user_id=user))
    await store.async_save(installation(team_id="T2", user_id="U1", bot_token="xoxb-t2"))
    await store.async_delete_installation(enterprise_id=None, team_id="T1")  # every user
    assert (
        await store.async_find_installation(enterprise_id=None, team_id="T1", user_id="U1") is None
    )
    assert (await store.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-1"

    await store.async_delete_all(enterprise_id=None, team_id="T1")
    assert await store.async_find_bot(enterprise_id=None, team_id="T1") is None
    assert all(":-:-:T2:" in key for key in keys(target))
    assert (
        await store.async_find_installation(enterprise_id=None, team_id="T2")
    ).bot_token == "xoxb-t2"


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_history_is_kept_bounded_or_not_at_all(
    target: Target, facade: str, state: Any
) -> None:
    store = installations(state, facade, history_length=2)
    for n in range(3):
        await store.async_save(installation(bot_token=f"xoxb-{n}", installed_at=100.0 + n))
    history = await state.get("slack:-:-:T1:installation-history:U1")
    assert [saved["bot_token"] for saved in history] == ["xoxb-1", "xoxb-2"]
    assert [saved["bot_token"] for saved in await state.get("slack:-:-:T1:bot-history")] == [
        "xoxb-1", "xoxb-2",
    ]  # fmt: skip

    plain = installations(state, facade, historical_data_enabled=False, client_id="app-2")
    await plain.async_save(installation(bot_token="xoxb-p"))
    assert not [key for key in keys(target) if "app%2D2" in key and "history" in key]
    assert [key for key in keys(target) if "app%2D2" in key]
    assert (await plain.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-p"


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_apps_and_ids_cannot_reach_each_others_records(facade: str, state: Any) -> None:
    first, second = installations(state, facade, client_id="A1"), installations(state, facade)
    await first.async_save(installation(user_id="U1", bot_token="xoxb-secret"))
    assert await second.async_find_installation(enterprise_id=None, team_id="T1") is None
    # Ids from a request are percent-encoded: none of these names another key.
    for team_id in ("T1:installation:U1", "T1:bot", "-", "T1%3Abot"):
        assert await first.async_find_installation(enterprise_id=None, team_id=team_id) is None
        assert await first.async_find_bot(enterprise_id=None, team_id=team_id) is None
    assert await first.async_find_installation(enterprise_id="-", team_id="T1") is None
    assert (
        await first.async_find_installation(enterprise_id=None, team_id="T1", user_id="U1:x")
        is None
    )
    assert (await first.async_find_bot(enterprise_id=None, team_id="T1")).bot_token == "xoxb-secret"


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
def test_the_records_are_read_with_the_operator_commands(
    target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    with State.from_url(target.url, key_prefix=target.prefix) as state:
        InstallationStore(state).save(installation(user_id="U7"))
    where = ["--url", target.url, "--prefix", target.prefix, "--json"]
    capsys.readouterr()
    assert cli.main(["get", "slack:-:-:T1:installation:U7", *where]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert (stored["user_id"], stored["bot_token"], stored["team_id"]) == ("U7", "xoxb-1", "T1")
    assert cli.main(["locks", *where]) == 0  # the save's lock was released
    assert capsys.readouterr().out == ""
    assert cli.main(["clear", "--yes", *where]) == 0
    assert keys(target) == []


@pytest.mark.targets(["memory"])
async def test_a_record_that_is_not_one_is_an_error_of_ours(facade: str, state: Any) -> None:
    await state.set("slack:-:-:T1:bot", ["not", "a", "bot"])
    store = installations(state, facade)
    with pytest.raises(
        SerializationError, match=r"slack:-:-:T1:bot holds a list, not a Slack record"
    ):
        await store.async_find_bot(enterprise_id=None, team_id="T1")


def test_stores_refuse_the_other_facade_and_bad_options() -> None:
    sync, asynchronous = State.from_url("memory://"), AsyncState.from_url("memory://")
    with pytest.raises(TypeError, match="AsyncInstallationStore takes an AsyncState"):
        InstallationStore(asynchronous)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="InstallationStore takes a State"):
        AsyncInstallationStore(sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AsyncOAuthStateStore takes an AsyncState"):
        OAuthStateStore(asynchronous)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="OAuthStateStore takes a State"):
        AsyncOAuthStateStore(sync)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="history_length must be an int >= 1, not 0"):
        InstallationStore(sync, history_length=0)
    with pytest.raises(
        ConfigurationError, match=r"expiration_seconds must be an int >= 1, not 1\.5"
    ):
        OAuthStateStore(sync, expiration_seconds=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="client_id must be a str or None, not int"):
        OAuthStateStore(sync, client_id=7)  # type: ignore[arg-type]
    store = InstallationStore(sync, client_id="A1")
    assert repr(store) == f"InstallationStore({sync!r}, client_id='A1')"
    assert store.logger.name == "chat_state.integrations.slack"


# -- the OAuth state store -------------------------------------------------------------


@pytest.mark.targets(STORE_TARGETS)
async def test_an_oauth_state_is_consumed_once(target: Target, facade: str, state: Any) -> None:
    store = oauth_states(state, facade)
    issued = await store.async_issue()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", issued)
    key = f"{target.prefix}:cache:slack:-:oauth-state:{issued}"
    assert 0 < target.raw.pttl(key) <= 600_000
    assert await store.async_consume(issued) is True
    assert await store.async_consume(issued) is False
    assert keys(target) == [f"{key}:consumed"]
    # Never issued, forged from an issued one's keys, or not a state at all.
    assert await store.async_consume(str(uuid.uuid4())) is False
    other = await store.async_issue()
    assert await store.async_consume(f"{issued}:consumed") is False
    assert await store.async_consume(f"{other}:consumed") is False
    assert await store.async_consume("") is False
    assert await store.async_consume("x" * 257) is False
    assert await store.async_consume(None) is False
    assert await store.async_consume(other) is True


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
async def test_an_oauth_state_expires(facade: str, state: Any) -> None:
    store = oauth_states(state, facade, expiration_seconds=1)
    issued = await store.async_issue()
    await anyio.sleep(1.2)
    assert await store.async_consume(issued) is False


# (memory:// runs each operation without yielding: only a server can interleave them)
@pytest.mark.targets(["redis-server/standalone/redis-py", "redis-server/cluster/redis-py"])
@pytest.mark.facades(["async"])
async def test_concurrent_consumers_in_one_process_consume_once(facade: str, state: Any) -> None:
    store = oauth_states(state, facade)
    for _ in range(5):
        issued = await store.async_issue()
        results: list[bool] = []

        async def consume(state: str = issued, results: list[bool] = results) -> None:
            results.append(await store.async_consume(state))

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(consume)
        assert sorted(results) == [False] * 19 + [True]


CONSUMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from chat_state import State
    from chat_state.integrations.slack import OAuthStateStore

    url, prefix, go, *states = sys.argv[1:]
    with State.from_url(url, key_prefix=prefix) as state:
        store = OAuthStateStore(state)
        print("ready", flush=True)
        deadline = time.monotonic() + 30
        while not Path(go).exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        print(" ".join(str(store.consume(s)) for s in states), flush=True)
    """
)


@pytest.mark.targets(["redis-server/standalone/redis-py", "redis-server/cluster/redis-py"])
def test_consumers_in_several_processes_consume_a_state_exactly_once(
    target: Target, tmp_path: Path
) -> None:
    with State.from_url(target.url, key_prefix=target.prefix) as state:
        store = OAuthStateStore(state)
        issued = [store.issue() for _ in range(5)]
    go = tmp_path / "go"
    command = [sys.executable, "-c", CONSUMER, target.url, target.prefix, str(go), *issued]
    consumers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(8)]
    try:
        for consumer in consumers:
            assert consumer.stdout is not None
            assert consumer.stdout.readline().strip() == "ready"
        go.touch()  # all at once
        outputs = [consumer.communicate(timeout=60)[0].split() for consumer in consumers]
    finally:
        for consumer in consumers:
            consumer.kill()
            consumer.wait()
    assert all(consumer.returncode == 0 for consumer in consumers)
    for column in zip(*outputs, strict=True):
        assert sorted(column) == ["False"] * 7 + ["True"]


# -- Bolt: the OAuth flow, authorization, rotation, uninstallation -------------------------

SIGNING_SECRET = "test-signing-secret"


def signed(body: str) -> dict[str, Any]:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=timestamp, body=body)
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }


def event(kind: str, **fields: Any) -> str:
    inner = {"type": kind, "user": "U0SOMEONE", "ts": "1700000000.000100", "channel": "C1"} | fields
    return json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0TEAM",
            "api_app_id": "A0APP",
            "event": inner,
            "event_id": f"Ev{uuid.uuid4().hex[:8]}",
            "event_time": 1700000000,
            "authorizations": [{"team_id": "T0TEAM", "user_id": "U0BOT", "is_bot": True}],
        }
    )


def oauth_state_of(page: str) -> str:
    found = re.search(r"[?&;]state=([0-9a-f-]{36})", page)
    assert found, page
    return found.group(1)


@dataclass
class Installed:
    api: SlackApi
    state: State
    bolt: App
    web: FlaskClient
    store: InstallationStore

    def post(self, body: str) -> None:
        assert self.web.post("/slack/events", data=body, headers=signed(body)).status_code == 200


@contextmanager
def installed_bolt_app(target: Target, **answers: Any) -> Iterator[Installed]:
    """The example's Bolt app on the target, installed through its OAuth flow against
    a stand-in Web API that answers with ``answers``."""
    with (
        slack_api(**answers) as api,
        State.from_url(target.url, key_prefix=target.prefix) as state,
    ):
        bolt = create_bolt_app(
            state, signing_secret=SIGNING_SECRET, client_id="111.222", client_secret="s3cret",
            api_url=api.url,
        )  # fmt: skip
        web = create_web_app(bolt).test_client()
        issued = oauth_state_of(web.get("/slack/install").text)
        assert web.get(f"/slack/oauth_redirect?code=c0de&state={issued}").status_code == 200
        yield Installed(api, state, bolt, web, InstallationStore(state, client_id="111.222"))


def eventually(condition: Callable[[], object]) -> None:
    """Wait (10 s at most) for what Bolt's listener threads do."""
    deadline = time.monotonic() + 10
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def api() -> Iterator[SlackApi]:
    with slack_api() as running:
        yield running


@pytest.mark.targets(
    ["memory", "redis-server/standalone/redis-py", "redis-server/cluster/redis-py"]
)
def test_the_bolt_example_installs_answers_and_uninstalls(
    target: Target, api: SlackApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="chat_state")
    with State.from_url(target.url, key_prefix=target.prefix) as state:
        bolt = create_bolt_app(
            state, signing_secret=SIGNING_SECRET, client_id="111.222", client_secret="s3cret",
            api_url=api.url,
        )  # fmt: skip
        web = create_web_app(bolt).test_client()

        page = web.get("/slack/install")
        assert page.status_code == 200
        issued = oauth_state_of(page.text)
        assert "https://slack.com/oauth/v2/authorize" in page.text
        done = web.get(f"/slack/oauth_redirect?code=c0de&state={issued}")
        assert done.status_code == 200, done.text
        assert "Thank you!" in done.text
        (access,) = api.called("oauth.v2.access")
        assert access.form["code"] == "c0de"

        store = InstallationStore(state, client_id="111.222")
        installed = store.find_installation(enterprise_id=None, team_id="T0TEAM")
        assert installed is not None
        assert (installed.bot_token, installed.bot_id, installed.user_id) == (
            "xoxb-bot-0", "B0BOT", "U0INSTALLER",
        )  # fmt: skip

        # The state was consumed: the same redirect again, from the same browser (Bolt
        # deleted its cookie: it is given back), is refused by the store (401, not the
        # browser check's 400).
        web.set_cookie("slack-app-oauth-state", issued)
        again = web.get(f"/slack/oauth_redirect?code=c0de&state={issued}")
        assert again.status_code == 401
        assert len(api.called("oauth.v2.access")) == 1

        # An event is authorized with the stored token, and answered with it.
        body = event("app_mention", text="<@U0BOT> hello")
        assert web.post("/slack/events", data=body, headers=signed(body)).status_code == 200
        eventually(lambda: api.called("chat.postMessage"))
        (posted,) = api.called("chat.postMessage")
        assert posted.token == "xoxb-bot-0"
        assert posted.form["text"] == "Hi <@U0SOMEONE>!"

        # Revoking the bot's token deletes the bot (Bolt's revocation listener).
        body = event("tokens_revoked", tokens={"bot": ["U0BOT"]})
        assert web.post("/slack/events", data=body, headers=signed(body)).status_code == 200
        eventually(lambda: store.find_bot(enterprise_id=None, team_id="T0TEAM") is None)
        assert store.find_bot(enterprise_id=None, team_id="T0TEAM") is None

        # Uninstalling deletes the workspace's records.
        def workspace_keys() -> list[str]:
            return [key for key in keys(target) if ":T0TEAM" in key]

        assert workspace_keys()
        body = event("app_uninstalled")
        assert web.post("/slack/events", data=body, headers=signed(body)).status_code == 200
        eventually(lambda: not workspace_keys())
        assert workspace_keys() == []
    # chat-state's own logs and reprs never show a token (slack_sdk's DEBUG logs of
    # response bodies are its own).
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("chat_state")]
    assert ours
    assert not [line for line in ours if "xox" in line]
    assert "xox" not in repr(store) + repr(bolt.oauth_flow.settings.state_store)  # type: ignore[union-attr]


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
def test_bolt_rotates_expiring_tokens_and_the_store_keeps_the_new_ones(target: Target) -> None:
    with installed_bolt_app(target, expires_in=600) as app:
        api, store = app.api, app.store
        first = store.find_bot(enterprise_id=None, team_id="T0TEAM")
        assert first is not None
        assert first.bot_refresh_token == "xoxe-1-r0"
        assert first.bot_token_expires_at is not None

        # Expiring within Bolt's two hours: it refreshes the token before using it.
        app.post(event("app_mention", text="<@U0BOT> hi"))
        eventually(lambda: api.called("chat.postMessage"))
        refresh = [c for c in api.called("oauth.v2.access") if c.form.get("grant_type")]
        assert [c.form["refresh_token"] for c in refresh] == ["xoxe-1-r0"]
        rotated = store.find_installation(enterprise_id=None, team_id="T0TEAM")
        assert rotated is not None
        assert (rotated.bot_token or "").startswith("xoxb-rotated-")
        assert rotated.bot_refresh_token != "xoxe-1-r0"
        (posted,) = api.called("chat.postMessage")
        assert posted.token == rotated.bot_token
        bot = store.find_bot(enterprise_id=None, team_id="T0TEAM")
        assert bot is not None
        assert (bot.bot_token, bot.bot_refresh_token) == (
            rotated.bot_token, rotated.bot_refresh_token,
        )  # fmt: skip
        assert bot.installed_at == first.installed_at

        # The new token lasts 12 hours: the next event uses it as stored.
        app.post(event("app_mention", text="<@U0BOT> again"))
        eventually(lambda: len(api.called("chat.postMessage")) == 2)
        assert api.called("chat.postMessage")[1].token == rotated.bot_token
        assert len([c for c in api.called("oauth.v2.access") if c.form.get("grant_type")]) == 1


@pytest.mark.targets(["memory", "redis-server/standalone/redis-py"])
def test_an_org_wide_install_through_bolt_authorizes_its_workspaces(target: Target) -> None:
    with installed_bolt_app(target, enterprise_id="E0ORG", is_enterprise_install=True) as app:
        org = app.store.find_installation(
            enterprise_id="E0ORG", team_id="T0ANY", is_enterprise_install=True
        )
        assert org is not None
        assert (org.team_id, org.is_enterprise_install, org.bot_token) == (None, True, "xoxb-bot-0")
        assert org.enterprise_url == "https://team.example/"
        assert any(":slack:111.222:E0ORG:-:installation" in key for key in keys(target))

        # An event from a workspace of the org is answered with the org's token.
        body = json.loads(event("app_mention", text="<@U0BOT> hi"))
        body |= {"enterprise_id": "E0ORG", "is_ext_shared_channel": False}
        body["authorizations"] = [
            {"enterprise_id": "E0ORG", "team_id": None, "user_id": "U0BOT", "is_bot": True,
             "is_enterprise_install": True}
        ]  # fmt: skip
        app.post(json.dumps(body))
        eventually(lambda: app.api.called("chat.postMessage"))
        (posted,) = app.api.called("chat.postMessage")
        assert posted.token == "xoxb-bot-0"


@pytest.mark.targets(
    ["memory", "redis-server/standalone/redis-py", "redis-server/cluster/redis-py"]
)
# slack_sdk's AsyncWebClient still authenticates oauth.v2.access with aiohttp.BasicAuth,
# which aiohttp 3.14 deprecates (upstream, not ours).
@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
async def test_an_async_bolt_app_installs_and_authorizes_through_the_async_stores(
    target: Target, api: SlackApi
) -> None:
    async with AsyncState.from_url(target.url, key_prefix=target.prefix) as state:
        app = AsyncApp(
            signing_secret=SIGNING_SECRET,
            client=AsyncWebClient(base_url=api.url),
            oauth_settings=AsyncOAuthSettings(
                client_id="111.222",
                client_secret="s3cret",
                scopes=["chat:write"],
                installation_store=AsyncInstallationStore(state),
                state_store=AsyncOAuthStateStore(state),
            ),
        )
        said: list[str] = []

        @app.event("app_mention")
        async def greet(event: dict[str, Any], say: Any) -> None:
            await say("hello")
            said.append(event["text"])

        flow = app.oauth_flow
        assert flow is not None
        started = await flow.handle_installation(AsyncBoltRequest(body="", query=""))
        issued = oauth_state_of(started.body)
        cookie = started.headers["set-cookie"][0].split(";")[0]
        callback = AsyncBoltRequest(
            body="", query=f"code=c0de&state={issued}", headers={"cookie": [cookie]}
        )
        finished = await flow.handle_callback(callback)
        assert finished.status == 200, finished.body
        replayed = await flow.handle_callback(
            AsyncBoltRequest(
                body="", query=f"code=c0de&state={issued}", headers={"cookie": [cookie]}
            )
        )
        assert replayed.status == 401  # the store refused it (the browser check passed)

        body = event("app_mention", text="<@U0BOT> hi")
        response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=signed(body)))
        assert response.status == 200
        with anyio.fail_after(10):
            while not said:
                await anyio.sleep(0.02)
        (posted,) = api.called("chat.postMessage")
        assert posted.token == "xoxb-bot-0"
        stored = await AsyncInstallationStore(state).async_find_bot(
            enterprise_id=None, team_id="T0TEAM"
        )
        assert stored is not None
        assert stored.bot_token == "xoxb-bot-0"

        # Uninstalling deletes the workspace's records, through the async store.
        assert [key for key in keys(target) if ":T0TEAM" in key]
        app.enable_token_revocation_listeners()
        body = event("app_uninstalled")
        response = await app.async_dispatch(AsyncBoltRequest(body=body, headers=signed(body)))
        assert response.status == 200
        with anyio.fail_after(10):
            while [key for key in keys(target) if ":T0TEAM" in key]:
                await anyio.sleep(0.02)


@pytest.fixture(params=["memory", "redis"])
def example_url(request: pytest.FixtureRequest) -> str:
    return "memory://" if request.param == "memory" else str(request.getfixturevalue("redis_url"))


def test_the_bolt_example_runs_and_completes_an_install(example_url: str, api: SlackApi) -> None:
    port = free_port()
    environment = {
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_CLIENT_ID": "111.222",
        "SLACK_CLIENT_SECRET": "s3cret",
        "SLACK_API_URL": api.url,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "slack_bolt_app.py"),
            example_url,
            "--port",
            str(port),
        ],
        env=os.environ | environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=5) as web:
            deadline = time.monotonic() + 20
            while True:
                try:
                    page = web.get("/slack/install")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the example did not start"
                    assert process.poll() is None, "the example exited"
                    time.sleep(0.1)
            issued = oauth_state_of(page.text)
            # (its cookie is Secure: a client sends it over plain http only when told)
            cookie = {"Cookie": f"slack-app-oauth-state={issued}"}
            done = web.get(f"/slack/oauth_redirect?code=c0de&state={issued}", headers=cookie)
            assert done.status_code == 200
            assert "Thank you!" in done.text
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"install it: http://127.0.0.1:{port}/slack/install" in output
    assert len(api.called("oauth.v2.access")) == 1
    if example_url != "memory://":
        with State.from_url(example_url, key_prefix="slack-bolt-example") as state:
            store = InstallationStore(state, client_id="111.222")
            found = store.find_installation(enterprise_id=None, team_id="T0TEAM")
            assert found is not None
            assert found.bot_token == "xoxb-bot-0"
            store.delete_all(enterprise_id=None, team_id="T0TEAM")
