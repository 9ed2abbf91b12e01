"""Slack apps' installations and OAuth states in chat-state: slack_sdk's stores, for
Bolt and slack_sdk, sync and async: ``pip install "chat-state[slack]"``.

Every Slack app that runs more than one instance needs its installations (the tokens)
and its OAuth states (the one-time ``state`` of the "Add to Slack" flow) where every
instance sees them. slack_sdk ships file, SQLite, SQLAlchemy and S3 stores; these keep
them in the state a bot already shares, on memory://, Redis, Valkey, Cluster and
Sentinel::

    from slack_bolt import App
    from slack_bolt.oauth.oauth_settings import OAuthSettings
    from chat_state import State
    from chat_state.integrations.slack import InstallationStore, OAuthStateStore

    state = State.from_url(url)
    state.connect()
    app = App(signing_secret=..., oauth_settings=OAuthSettings(
        client_id=..., client_secret=..., scopes=["chat:write"],
        installation_store=InstallationStore(state),
        state_store=OAuthStateStore(state, expiration_seconds=600),
    ))

:class:`AsyncInstallationStore` and :class:`AsyncOAuthStateStore` take an
:class:`~chat_state.AsyncState`, for Bolt's ``AsyncApp``. The application connects
and disconnects the state; a store only uses it.

The semantics are slack_sdk's own (its SQLAlchemy store's, whose latest records are
the latest installed): the latest bot and installation per workspace or org (an org-wide install,
``is_enterprise_install``, is found without a team id), each user's own installation,
the latest bot token merged into a user's installation, token rotation fields
(``bot_refresh_token``, ``*_token_expires_at``) and ``custom_values`` kept as saved,
and deletion per bot, per user or for the whole workspace. With
``historical_data_enabled`` (the default, as in slack_sdk), every saved bot and
installation is also kept in a history, the newest ``history_length`` (10).

Keys, under the state's prefix (``chat-state get``/``list``/``locks`` read them), with
``{app}``, ``{E}``, ``{T}`` and ``{U}`` the client id, enterprise, team and user ids,
``-`` where there is none (ids are percent-encoded, ``:`` and ``-`` included, so no
id can reach another's keys)::

    cache:slack:{app}:{E}:{T}:bot                        the latest bot (JSON)
    cache:slack:{app}:{E}:{T}:installation               the latest installation
    cache:slack:{app}:{E}:{T}:installation:{U}           the user's latest installation
    cache:slack:{app}:{E}:{T}:installers                 the users that have one
    cache:slack:{app}:{E}:{T}:bot-history                saved bots, newest last
    cache:slack:{app}:{E}:{T}:installation-history:{U}   the user's saved installations
    lock:slack:{app}:{E}:{T}                             held while saving or deleting
    cache:slack:{app}:oauth-state:{state}                an issued OAuth state (TTL)
    cache:slack:{app}:oauth-state:{state}:consumed       its one consumption (TTL)

The tokens are stored as slack_sdk gives them, as in its other stores: keep the
server private (TLS, ACLs, a password), as for any store of credentials.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Generator, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar
from urllib.parse import quote

from chat_state.core import codec
from chat_state.errors import ConfigurationError, SerializationError
from chat_state.facades import AsyncState, State
from chat_state.locking import _lost_error

try:
    from slack_sdk.oauth.installation_store import Bot, Installation
    from slack_sdk.oauth.installation_store import InstallationStore as _InstallationStore
    from slack_sdk.oauth.installation_store.async_installation_store import (
        AsyncInstallationStore as _AsyncInstallationStore,
    )
    from slack_sdk.oauth.state_store import OAuthStateStore as _OAuthStateStore
    from slack_sdk.oauth.state_store.async_state_store import (
        AsyncOAuthStateStore as _AsyncOAuthStateStore,
    )
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        'chat_state.integrations.slack needs slack_sdk: pip install "chat-state[slack]"'
    ) from exc

__all__ = [
    "AsyncInstallationStore",
    "AsyncOAuthStateStore",
    "InstallationStore",
    "OAuthStateStore",
]

_LOGGER = logging.getLogger("chat_state.integrations.slack")
#: How long a save or a deletion may hold the workspace's lock (renewed while it
#: runs), and how long another one waits for it.
_LOCK_TTL_MS = 10_000
_LOCK_WAIT_MS = 30_000
#: The bot-token fields a user's installation takes from the workspace's latest bot.
_BOT_FIELDS = (
    "bot_id",
    "bot_user_id",
    "bot_token",
    "bot_scopes",
    "bot_refresh_token",
    "bot_token_expires_at",
)

_Record = TypeVar("_Record", Bot, Installation)
_T = TypeVar("_T")


def _part(value: str | None) -> str:
    """One id in a key: ``-`` for none, else percent-encoded (``:`` and ``-`` too)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"a Slack id must be a str or None, not {type(value).__name__}")
    if not value:
        return "-"
    return quote(value, safe="").replace("-", "%2D")


@dataclass(frozen=True)
class _Team:
    """Where one workspace's (or org's) records live."""

    base: str

    @property
    def bot(self) -> str:
        return f"{self.base}:bot"

    @property
    def bot_history(self) -> str:
        return f"{self.base}:bot-history"

    @property
    def installation(self) -> str:
        return f"{self.base}:installation"

    @property
    def installers(self) -> str:
        return f"{self.base}:installers"

    def user(self, user_id: str | None) -> str:
        return f"{self.base}:installation:{_part(user_id)}"

    def user_history(self, user_id: str | None) -> str:
        return f"{self.base}:installation-history:{_part(user_id)}"


def _issuable(state: object) -> TypeGuard[str]:
    """Whether ``state`` (from the redirect's query string) has the form of an issued
    state (a UUID's text): anything else is refused without a look at the server."""
    if not isinstance(state, str) or len(state) != 36:
        return False
    try:
        return str(uuid.UUID(state)) == state
    except ValueError:
        return False


def _app(client_id: str | None) -> str:
    if client_id is not None and not isinstance(client_id, str):
        raise TypeError(f"client_id must be a str or None, not {type(client_id).__name__}")
    return f"slack:{_part(client_id)}"


def _check_facade(store: object, state: object, facade: type) -> None:
    """A sync store takes a State, an async one an AsyncState: the other is refused."""
    if not isinstance(state, facade):
        name = type(store).__name__
        twin = (
            f"{name.removeprefix('Async')} takes a State"
            if facade is AsyncState
            else (f"Async{name} takes an AsyncState")
        )
        raise TypeError(
            f"{name} takes a chat_state.{facade.__name__}, not {type(state).__name__} ({twin})"
        )


class _OfAnApp:
    """What every store has: its app's namespace (``client_id``) and its logger."""

    def __init__(self, *, client_id: str | None, logger: logging.Logger | None) -> None:
        if logger is not None and not isinstance(logger, logging.Logger):
            raise TypeError(f"logger must be a logging.Logger, not {type(logger).__name__}")
        self._app = _app(client_id)
        self.client_id = client_id
        self._logger = logger or _LOGGER

    @property
    def logger(self) -> logging.Logger:
        """The logger slack_sdk's stores have (``chat_state.integrations.slack``)."""
        return self._logger


def _document(record: Bot | Installation) -> dict[str, Any]:
    """What is stored for a bot or an installation: its attributes, as slack_sdk's file
    store keeps them (times as Unix seconds, scopes as lists, ``custom_values``)."""
    return dict(vars(record))


#: What each record's constructor takes.
_FIELDS: dict[type, frozenset[str]] = {
    kind: frozenset(inspect.signature(kind).parameters) for kind in (Bot, Installation)
}


def _build(kind: type[_Record], key: str, document: Any) -> _Record | None:
    """The bot or installation stored under ``key`` (``None`` if nothing is)."""
    if document is None:
        return None
    if not isinstance(document, dict):
        raise SerializationError(f"{key} holds a {type(document).__name__}, not a Slack record")
    # What another slack_sdk release wrote may have fields this one does not know.
    known = _FIELDS[kind]
    return kind(**{name: value for name, value in document.items() if name in known})


def _checked(record: object, kind: type[_Record]) -> _Record:
    """A bot or an installation to save, checked before anything is written: its ids
    are text (an installation's ``user_id`` is required), and it can be stored as
    JSON (or :class:`~chat_state.SerializationError`)."""
    if not isinstance(record, kind):
        raise TypeError(f"expected a slack_sdk {kind.__name__}, not {type(record).__name__}")
    for name in ("enterprise_id", "team_id", "user_id"):
        _part(getattr(record, name, None))
    if isinstance(record, Installation) and not record.user_id:
        raise ValueError("an Installation's user_id (the installer's id) must not be empty")
    codec.encode(_document(record))
    return record


def _installed_at(document: Any) -> float:
    """When a record was installed, to the microsecond: slack_sdk's copies of a record
    (the token rotator's) take it through a datetime, which keeps no more."""
    value = document.get("installed_at") if isinstance(document, dict) else None
    return round(float(value), 6) if isinstance(value, (int, float)) else 0.0


def _replaces(latest: Any, document: dict[str, Any]) -> bool:
    """Whether ``document`` becomes the latest record: it was installed no earlier (a
    record whose tokens were rotated keeps its ``installed_at``), as slack_sdk's
    SQLAlchemy store finds the latest by ``installed_at``."""
    return latest is None or _installed_at(document) >= _installed_at(latest)


def _newest(documents: Iterable[Any]) -> Any:
    """The most recently installed of ``documents`` (``None`` if there is none)."""
    present = [document for document in documents if isinstance(document, dict)]
    return max(present, key=_installed_at, default=None)


def _with_latest_bot(installation: Installation, bot: Bot | None) -> Installation:
    """slack_sdk's rule: a user's installation, or one without a bot token, carries the
    workspace's latest bot token (slackapi/bolt-python#664)."""
    if bot is not None and installation.bot_token != bot.bot_token:
        for name in _BOT_FIELDS:
            setattr(installation, name, getattr(bot, name))
    return installation


def _wants_latest_bot(installation: Installation, user_id: str | None) -> bool:
    return user_id is not None or installation.bot_token is None


def _installers(value: Any) -> list[str]:
    return [user for user in value if isinstance(user, str)] if isinstance(value, list) else []


# -- plans: what a store does, once for both facades ---------------------------------
#
# A plan is a generator that yields the State calls it needs, ``(name, *arguments)``,
# and is sent each call's result; a driver runs it on a State (calling) or an
# AsyncState (awaiting), under the workspace's lock where it writes.

_Step = tuple[Any, ...]
_Plan = Generator[_Step, Any, _T]


def _run(state: State, plan: _Plan[_T], lock: str | None = None) -> _T:
    """Run ``plan`` on ``state``, holding ``lock`` throughout if given: should a renewal
    find it lost, the plan writes no more and :class:`~chat_state.LockLostError` is
    raised (an AsyncState cancels its block itself)."""
    held = state.lock(lock, _LOCK_TTL_MS, wait_ms=_LOCK_WAIT_MS) if lock else nullcontext()
    with held as holding:
        try:
            step = next(plan)
            while holding is None or not holding.lost:
                step = plan.send(getattr(state, step[0])(*step[1:]))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        plan.close()
        raise _lost_error(holding)


async def _run_async(state: AsyncState, plan: _Plan[_T], lock: str | None = None) -> _T:
    """Run ``plan`` on ``state``, awaiting each call (holding ``lock``, if given)."""
    held = state.lock(lock, _LOCK_TTL_MS, wait_ms=_LOCK_WAIT_MS) if lock else nullcontext()
    async with held:
        try:
            step = next(plan)
            while True:
                step = plan.send(await getattr(state, step[0])(*step[1:]))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class _Stores(_OfAnApp):
    """What the installation stores share: where a workspace's records are, and the
    plans of their methods."""

    def __init__(
        self,
        *,
        client_id: str | None,
        historical_data_enabled: bool,
        history_length: int,
        logger: logging.Logger | None,
    ) -> None:
        if not isinstance(historical_data_enabled, bool):
            kind = type(historical_data_enabled).__name__
            raise TypeError(f"historical_data_enabled must be a bool, not {kind}")
        if type(history_length) is not int or history_length < 1:
            raise ConfigurationError(f"history_length must be an int >= 1, not {history_length!r}")
        super().__init__(client_id=client_id, logger=logger)
        self.historical_data_enabled = historical_data_enabled
        self.history_length = history_length

    def _team(
        self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None
    ) -> _Team:
        # An org-wide install belongs to the org: it is found without a team id.
        team = None if is_enterprise_install else team_id
        return _Team(f"{self._app}:{_part(enterprise_id)}:{_part(team)}")

    def _of(self, record: Bot | Installation) -> _Team:
        return self._team(record.enterprise_id, record.team_id, record.is_enterprise_install)

    def _kept(self, key: str, document: dict[str, Any]) -> _Plan[None]:
        """Add ``document`` to the history at ``key`` (the newest ``history_length``)."""
        if self.historical_data_enabled:
            history = yield ("get", key)
            kept = history if isinstance(history, list) else []
            yield ("set", key, [*kept, document][-self.history_length :])

    def _save(self, team: _Team, installation: Installation) -> _Plan[None]:
        document, user_id = _document(installation), installation.user_id
        yield from self._save_bot(team, installation.to_bot())
        installers = _installers((yield ("get", team.installers)))
        if user_id not in installers:
            yield ("set", team.installers, [*installers, user_id])
        if _replaces((yield ("get", team.user(user_id))), document):
            yield ("set", team.user(user_id), document)
        if _replaces((yield ("get", team.installation)), document):
            yield ("set", team.installation, document)
        yield from self._kept(team.user_history(user_id), document)

    def _save_bot(self, team: _Team, bot: Bot) -> _Plan[None]:
        if bot.bot_token is None:
            self.logger.debug("a bot without a bot token is not saved")
            return
        document = _document(bot)
        if _replaces((yield ("get", team.bot)), document):
            yield ("set", team.bot, document)
        yield from self._kept(team.bot_history, document)

    def _find_bot(
        self, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None
    ) -> _Plan[Bot | None]:
        key = self._team(enterprise_id, team_id, is_enterprise_install).bot
        return _build(Bot, key, (yield ("get", key)))

    def _find_installation(
        self,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        is_enterprise_install: bool | None,
    ) -> _Plan[Installation | None]:
        team = self._team(enterprise_id, team_id, is_enterprise_install)
        key = team.installation if user_id is None else team.user(user_id)
        installation = _build(Installation, key, (yield ("get", key)))
        if installation is None or not _wants_latest_bot(installation, user_id):
            return installation
        return _with_latest_bot(installation, _build(Bot, team.bot, (yield ("get", team.bot))))

    @staticmethod
    def _delete_bot(team: _Team) -> _Plan[None]:
        yield ("delete", team.bot)
        yield ("delete", team.bot_history)

    def _delete_all(self, team: _Team) -> _Plan[None]:
        yield from self._delete_bot(team)
        yield from self._delete_installation(team, None)

    @staticmethod
    def _delete_installation(team: _Team, user_id: str | None) -> _Plan[None]:
        installers = _installers((yield ("get", team.installers)))
        gone = installers if user_id is None else [user_id]
        for user in gone:
            yield ("delete", team.user(user))
            yield ("delete", team.user_history(user))
        left = [user for user in installers if user not in gone]
        if not left:
            yield ("delete", team.installation)
            yield ("delete", team.installers)
            return
        latest = yield ("get", team.installation)
        if isinstance(latest, dict) and latest.get("user_id") in gone:
            documents = []
            for user in left:
                documents.append((yield ("get", team.user(user))))
            newest = _newest(documents)
            if newest is None:
                yield ("delete", team.installation)
            else:
                yield ("set", team.installation, newest)
        if left != installers:
            yield ("set", team.installers, left)


class InstallationStore(_Stores, _InstallationStore):
    """slack_sdk's ``InstallationStore`` on a :class:`~chat_state.State` (connected by
    the application), for Bolt's ``App`` and slack_sdk's ``OAuthFlow``."""

    def __init__(
        self,
        state: State,
        *,
        client_id: str | None = None,
        historical_data_enabled: bool = True,
        history_length: int = 10,
        logger: logging.Logger | None = None,
    ) -> None:
        _check_facade(self, state, State)
        super().__init__(
            client_id=client_id,
            historical_data_enabled=historical_data_enabled,
            history_length=history_length,
            logger=logger,
        )
        self.state = state

    def __repr__(self) -> str:
        return f"InstallationStore({self.state!r}, client_id={self.client_id!r})"

    def save(self, installation: Installation) -> None:
        """Save an installation: the user's, the workspace's latest, and its bot."""
        team = self._of(_checked(installation, Installation))
        _run(self.state, self._save(team, installation), lock=team.base)

    def save_bot(self, bot: Bot) -> None:
        """Save a bot (one without a token is not kept, as in slack_sdk's stores)."""
        team = self._of(_checked(bot, Bot))
        _run(self.state, self._save_bot(team, bot), lock=team.base)

    def find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The workspace's (or org's) latest bot, or ``None``."""
        return _run(self.state, self._find_bot(enterprise_id, team_id, is_enterprise_install))

    def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The user's latest installation (the workspace's latest without ``user_id``),
        with the workspace's latest bot token, or ``None``."""
        plan = self._find_installation(enterprise_id, team_id, user_id, is_enterprise_install)
        return _run(self.state, plan)

    def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete the workspace's bots (the latest and its history)."""
        team = self._team(enterprise_id, team_id, None)
        _run(self.state, self._delete_bot(team), lock=team.base)

    def delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Delete the user's installations, or every user's without ``user_id``; the
        workspace's latest installation becomes the newest one left."""
        team = self._team(enterprise_id, team_id, None)
        _run(self.state, self._delete_installation(team, user_id), lock=team.base)

    def delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete everything of the workspace (bots and installations), at once: a save
        by another instance comes before or after, never between."""
        team = self._team(enterprise_id, team_id, None)
        _run(self.state, self._delete_all(team), lock=team.base)


class AsyncInstallationStore(_Stores, _AsyncInstallationStore):
    """slack_sdk's ``AsyncInstallationStore`` on an :class:`~chat_state.AsyncState`
    (connected by the application), for Bolt's ``AsyncApp``: what
    :class:`InstallationStore` does, awaited."""

    def __init__(
        self,
        state: AsyncState,
        *,
        client_id: str | None = None,
        historical_data_enabled: bool = True,
        history_length: int = 10,
        logger: logging.Logger | None = None,
    ) -> None:
        _check_facade(self, state, AsyncState)
        super().__init__(
            client_id=client_id,
            historical_data_enabled=historical_data_enabled,
            history_length=history_length,
            logger=logger,
        )
        self.state = state

    def __repr__(self) -> str:
        return f"AsyncInstallationStore({self.state!r}, client_id={self.client_id!r})"

    async def async_save(self, installation: Installation) -> None:
        """Save an installation: the user's, the workspace's latest, and its bot."""
        team = self._of(_checked(installation, Installation))
        await _run_async(self.state, self._save(team, installation), lock=team.base)

    async def async_save_bot(self, bot: Bot) -> None:
        """Save a bot (one without a token is not kept, as in slack_sdk's stores)."""
        team = self._of(_checked(bot, Bot))
        await _run_async(self.state, self._save_bot(team, bot), lock=team.base)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        """The workspace's (or org's) latest bot, or ``None``."""
        plan = self._find_bot(enterprise_id, team_id, is_enterprise_install)
        return await _run_async(self.state, plan)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The user's latest installation (the workspace's latest without ``user_id``),
        with the workspace's latest bot token, or ``None``."""
        plan = self._find_installation(enterprise_id, team_id, user_id, is_enterprise_install)
        return await _run_async(self.state, plan)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete the workspace's bots (the latest and its history)."""
        team = self._team(enterprise_id, team_id, None)
        await _run_async(self.state, self._delete_bot(team), lock=team.base)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        """Delete the user's installations, or every user's without ``user_id``; the
        workspace's latest installation becomes the newest one left."""
        team = self._team(enterprise_id, team_id, None)
        await _run_async(self.state, self._delete_installation(team, user_id), lock=team.base)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Delete everything of the workspace (bots and installations), at once: a save
        by another instance comes before or after, never between."""
        team = self._team(enterprise_id, team_id, None)
        await _run_async(self.state, self._delete_all(team), lock=team.base)


# -- OAuth states ------------------------------------------------------------------


class _States(_OfAnApp):
    """What the OAuth state stores share: where a state lives, for how long, and the
    plans of their methods."""

    def __init__(
        self, *, expiration_seconds: int, client_id: str | None, logger: logging.Logger | None
    ) -> None:
        if type(expiration_seconds) is not int or expiration_seconds < 1:
            raise ConfigurationError(
                f"expiration_seconds must be an int >= 1, not {expiration_seconds!r}"
            )
        super().__init__(client_id=client_id, logger=logger)
        self.expiration_seconds = expiration_seconds

    def _key(self, state: str) -> str:
        # (only a UUID's text gets here: no state can name another's key)
        return f"{self._app}:oauth-state:{state}"

    def _issue(self) -> _Plan[str]:
        state = str(uuid.uuid4())  # random, as slack_sdk's own states
        ttl_ms = self.expiration_seconds * 1000
        yield ("set", self._key(state), {"issued_at": time.time()}, ttl_ms)
        return state

    def _consume(self, state: object) -> _Plan[bool]:
        if not _issuable(state):
            self.logger.warning("an OAuth state that cannot be one issued was refused")
            return False
        key = self._key(state)
        issued = yield ("get", key)
        issued_at = issued.get("issued_at") if isinstance(issued, dict) else None
        # Expired by the server's TTL, or by this store's expiration_seconds (the
        # issuing instance's may have been longer).
        if not isinstance(issued_at, (int, float)) or (
            time.time() >= issued_at + self.expiration_seconds
        ):
            self.logger.warning("an OAuth state never issued, or expired, was refused")
            return False
        # The one atomic step: whoever sets the mark consumes the state. It outlives the
        # state (which expires within the same TTL), so a late second try finds neither.
        ttl_ms = self.expiration_seconds * 1000
        if not (yield ("set_if_not_exists", f"{key}:consumed", True, ttl_ms)):
            self.logger.warning("an OAuth state already consumed was refused")
            return False
        yield ("delete", key)
        return True


class OAuthStateStore(_States, _OAuthStateStore):
    """slack_sdk's ``OAuthStateStore`` on a :class:`~chat_state.State`: a state issued by
    one instance is consumed by any, exactly once, until it expires."""

    def __init__(
        self,
        state: State,
        *,
        expiration_seconds: int = 600,
        client_id: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        _check_facade(self, state, State)
        super().__init__(expiration_seconds=expiration_seconds, client_id=client_id, logger=logger)
        self.state = state

    def __repr__(self) -> str:
        return (
            f"OAuthStateStore({self.state!r}, expiration_seconds={self.expiration_seconds},"
            f" client_id={self.client_id!r})"
        )

    def issue(self, *args: Any, **kwargs: Any) -> str:
        """A new OAuth state, valid for ``expiration_seconds``."""
        return _run(self.state, self._issue())

    def consume(self, state: str) -> bool:
        """Whether ``state`` was issued, has not expired and was not consumed before; it
        is consumed. Of concurrent calls, on any instances, exactly one returns True."""
        return _run(self.state, self._consume(state))


class AsyncOAuthStateStore(_States, _AsyncOAuthStateStore):
    """slack_sdk's ``AsyncOAuthStateStore`` on an :class:`~chat_state.AsyncState`: what
    :class:`OAuthStateStore` does, awaited."""

    def __init__(
        self,
        state: AsyncState,
        *,
        expiration_seconds: int = 600,
        client_id: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        _check_facade(self, state, AsyncState)
        super().__init__(expiration_seconds=expiration_seconds, client_id=client_id, logger=logger)
        self.state = state

    def __repr__(self) -> str:
        return (
            f"AsyncOAuthStateStore({self.state!r}, expiration_seconds={self.expiration_seconds},"
            f" client_id={self.client_id!r})"
        )

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        """A new OAuth state, valid for ``expiration_seconds``."""
        return await _run_async(self.state, self._issue())

    async def async_consume(self, state: str) -> bool:
        """Whether ``state`` was issued, has not expired and was not consumed before; it
        is consumed. Of concurrent calls, on any instances, exactly one returns True."""
        return await _run_async(self.state, self._consume(state))
