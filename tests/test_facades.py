"""The facades: one surface, connection lifecycle, client adoption, secrets, the registry."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import threading
import uuid
from importlib.metadata import EntryPoint
from typing import Any, cast

import anyio
import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
import valkey
import valkey.asyncio
import valkey.asyncio.cluster
import valkey.asyncio.sentinel
import valkey.cluster
import valkey.sentinel
from chat_sdk.types import StateAdapter

from chat_state import (
    AsyncState,
    BackendError,
    ChatStateError,
    ConfigurationError,
    MemoryStore,
    NotConnectedError,
    QueueEntry,
    SerializationError,
    State,
    WrongLoopError,
)
from chat_state.backend import parse_redis_url
from chat_state.backend import registry as registry_module
from chat_state.memory import BACKEND as MEMORY_BACKEND
from chat_state.memory import store_for_url
from chat_state.testing import RedisServer, free_port


def factory_of(state: Any) -> Any:
    """The backend factory an adapter built from a URL will open."""
    return state._opener.args[0]


PUBLIC_METHODS = {
    "connect", "disconnect", "subscribe", "unsubscribe", "is_subscribed", "acquire_lock",
    "release_lock", "extend_lock", "force_release_lock", "get", "set", "set_if_not_exists",
    "delete", "append_to_list", "get_list", "enqueue", "dequeue", "queue_depth", "get_client",
    "iter_keys", "lock", "release_and_recheck", "enqueue_and_recheck", "ping", "health",
    "iter_subscriptions", "subscription_count", "inspect_lock", "iter_locks", "iter_queues",
    "peek_queue", "stats", "clear",
}  # fmt: skip
#: Those that return an iterator (an async one in AsyncState) or a context manager.
NOT_COROUTINES = {
    "get_client",
    "iter_keys",
    "lock",
    "iter_subscriptions",
    "iter_locks",
    "iter_queues",
}


def _surface(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, callable)
        if not name.startswith("_")
    }


def test_state_and_async_state_have_the_same_surface() -> None:
    sync, asynchronous = _surface(State), _surface(AsyncState)
    assert sync.keys() == asynchronous.keys()
    assert sync.keys() >= PUBLIC_METHODS
    for name in sync:
        assert sync[name].parameters == asynchronous[name].parameters, name
    for name in PUBLIC_METHODS - NOT_COROUTINES:
        assert inspect.iscoroutinefunction(getattr(AsyncState, name)), name
        assert not inspect.iscoroutinefunction(getattr(State, name)), name
    assert inspect.signature(State.append_to_list).parameters["max_length"].kind is (
        inspect.Parameter.KEYWORD_ONLY
    )


def test_async_state_is_a_chat_sdk_state_adapter() -> None:
    assert isinstance(AsyncState.from_url("memory://"), StateAdapter)
    for name, member in inspect.getmembers(StateAdapter, inspect.iscoroutinefunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(AsyncState, name))
        theirs = inspect.signature(member)
        # Ours may add keyword-only parameters with defaults (acquire_lock's wait_ms),
        # which no call written for chat_sdk's signature can reach.
        shared = list(ours.parameters)[: len(theirs.parameters)]
        assert shared == list(theirs.parameters), name
        for extra in list(ours.parameters.values())[len(theirs.parameters) :]:
            assert extra.kind is inspect.Parameter.KEYWORD_ONLY, (name, extra)
            assert extra.default is not inspect.Parameter.empty, (name, extra)
        for param, expected in theirs.parameters.items():
            assert ours.parameters[param].kind == expected.kind, (name, param)
            assert ours.parameters[param].default == expected.default, (name, param)


def test_errors_hierarchy() -> None:
    for error in (NotConnectedError, ConfigurationError, SerializationError, BackendError):
        assert issubclass(error, ChatStateError)
    assert issubclass(WrongLoopError, NotConnectedError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(SerializationError, ValueError)


# -- choosing a backend -------------------------------------------------------------------


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError) as caught:
        State.from_url("mongodb://user:hunter2@host/db")
    message = str(caught.value)
    for scheme in ("memory://", "redis://", "rediss://", "unix://"):
        assert scheme in message
    assert "hunter2" not in message


@pytest.mark.parametrize("url", ["", "localhost:6379", "no scheme at all"])
def test_urls_without_a_known_scheme(url: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown URL scheme"):
        AsyncState.from_url(url)


def test_bad_options() -> None:
    with pytest.raises(ConfigurationError, match="key_prefix"):
        State.from_url("memory://", key_prefix=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown driver 'nope'"):
        State.from_url("redis://localhost", driver="nope")
    with pytest.raises(ConfigurationError, match="memory"):
        State.from_url("memory://", driver="redis")
    with pytest.raises(ConfigurationError, match="memory://"):
        State.from_url("memory://a/b")
    with pytest.raises(ConfigurationError, match="not both"):
        State("memory://", client=MemoryStore())


def _uninstall(monkeypatch: pytest.MonkeyPatch, driver: str, library: str) -> None:
    missing = registry_module._Driver(f"chat_state_{driver}_not_installed", driver, library)
    monkeypatch.setitem(registry_module._DRIVERS, driver, missing)


def test_a_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _uninstall(monkeypatch, "redis", "redis-py")
    _uninstall(monkeypatch, "valkey", "valkey-py")
    for url, extra, library in [
        ("redis://localhost:6379", "redis", "redis-py"),
        ("valkey+cluster://localhost:6379", "valkey", "valkey-py"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            State.from_url(url)
        assert f'pip install "chat-state[{extra}]"' in str(caught.value)
        assert library in str(caught.value)
    with pytest.raises(ConfigurationError, match=r"chat-state\[redis\]"):
        State.from_url("redis://localhost", driver="redis")


def test_either_library_serves_either_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redis:// URL uses valkey-py when redis-py is not installed, and the reverse."""
    assert factory_of(State.from_url("redis://h")).name == "redis"
    assert factory_of(State.from_url("valkey://h")).name == "valkey"
    assert factory_of(State.from_url("redis://h", driver="valkey")).name == "valkey"
    assert factory_of(State.from_url("valkey+sentinel://h/s", driver="redis")).name == "redis"
    _uninstall(monkeypatch, "redis", "redis-py")
    assert factory_of(State.from_url("redis+cluster://h:1")).name == "valkey"


class PluginFactory:
    """A third-party backend: memory under another scheme."""

    def __init__(self) -> None:
        self.inner = MEMORY_BACKEND

    def validate_url(self, url: str) -> None:
        pass

    def open_sync(self, url: str) -> Any:
        return self.inner.open_sync("memory://plugin-" + url.partition("://")[2])

    def open_async(self, url: str) -> Any:
        return self.inner.open_async("memory://plugin-" + url.partition("://")[2])

    def adopt_sync(self, client: object) -> Any:
        return None

    def adopt_async(self, client: object) -> Any:
        return None


PLUGIN = PluginFactory()


def test_entry_point_plugins(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    points = [
        EntryPoint("acme", f"{__name__}:PLUGIN", registry_module.ENTRY_POINT_GROUP),
        EntryPoint("redis", f"{__name__}:PLUGIN", registry_module.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    with State.from_url("acme://x") as state:
        state.set("k", 1)
    assert store_for_url("memory://plugin-x").get("chat-sdk:cache:k") == "1"
    # A plugin cannot take over a built-in scheme.
    assert factory_of(State.from_url("redis://localhost")) is not PLUGIN
    assert "the scheme 'redis'://" in caplog.text or "'redis'" in caplog.text
    with pytest.raises(ConfigurationError, match="acme://"):
        State.from_url("other://x")


class OldBackend:
    """A backend written for chat-state < 0.2: a method per command, no call()."""

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


class OldPluginFactory(PluginFactory):
    def open_sync(self, url: str) -> Any:
        return OldBackend()


OLD_PLUGIN = OldPluginFactory()


def test_a_plugin_backend_of_the_old_interface_is_refused_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    points = [EntryPoint("old", f"{__name__}:OLD_PLUGIN", registry_module.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: points)
    state = State.from_url("old://x")
    with pytest.raises(ConfigurationError, match=r"OldBackend .* has no call\(key, args\)"):
        state.connect()
    assert not state.is_connected


def test_chat_state_protocols_still_imports_with_a_deprecation_warning() -> None:
    sys.modules.pop("chat_state.protocols", None)
    with pytest.warns(DeprecationWarning, match="chat_state.backend"):
        protocols = importlib.import_module("chat_state.protocols")
    from chat_state.backend import BackendFactory, NoScriptError  # noqa: PLC0415

    assert protocols.BackendFactory is BackendFactory
    assert protocols.NoScriptError is NoScriptError
    with pytest.raises(AttributeError, match=r"removed in 0\.2: a backend now implements call"):
        _ = protocols.RedisLike


def test_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CHAT_STATE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "memory://from-redis-url")
    assert "memory://from-redis-url" in repr(State())
    monkeypatch.setenv("CHAT_STATE_URL", "memory://from-chat-state-url")
    assert "memory://from-chat-state-url" in repr(AsyncState())
    monkeypatch.delenv("CHAT_STATE_URL")
    monkeypatch.delenv("REDIS_URL")
    with caplog.at_level(logging.WARNING, logger="chat_state"):
        state = State()
    assert "memory://" in repr(state)
    assert "not shared between processes" in caplog.text


def test_a_logger_of_our_own(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("my.bot.state")
    with (
        caplog.at_level(logging.DEBUG, logger="my.bot.state"),
        State.from_url("memory://", logger=logger),
    ):
        pass
    assert [r.name for r in caplog.records] == ["my.bot.state", "my.bot.state"]
    assert "connected" in caplog.records[0].getMessage()


# -- memory ---------------------------------------------------------------------------------


def test_memory_names_select_shared_stores() -> None:
    with State.from_url("memory://shared-a") as one, State.from_url("memory://shared-a") as two:
        one.set("k", "v")
        assert two.get("k") == "v"
    with State.from_url("memory://") as private_one, State.from_url("memory://") as private_two:
        private_one.set("k", "v")
        assert private_two.get("k") is None
    with State.from_url("memory://shared-a") as again:
        assert again.get("k") == "v"


def test_memory_wrong_type_behaves_like_redis() -> None:
    store = MemoryStore()
    store.set("k", "v")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        store.rpush("k", "x")
    with State(client=store) as state, pytest.raises(BackendError, match="WRONGTYPE"):
        state.get_client().sadd("k", "member")


def test_memory_store_is_safe_from_many_threads() -> None:
    state = State.from_url("memory://")
    state.connect()
    barrier = threading.Barrier(8)
    wins: list[bool] = []
    locks: list[Any] = []

    def worker() -> None:
        barrier.wait()
        for n in range(200):
            wins.append(state.set_if_not_exists(f"d{n}", True, 60_000))
            state.append_to_list("log", n)
        locks.append(state.acquire_lock("one", 60_000))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert wins.count(True) == 200
    assert len(state.get_list("log")) == 1600
    assert sum(lock is not None for lock in locks) == 1
    state.disconnect()


def test_memory_deleted_keys_leave_no_expiry_entries_behind() -> None:
    """Locks taken and released with a long TTL: the expiry heap follows the live keys."""
    with State.from_url("memory://") as state:
        store = state.get_client()
        for n in range(20_000):
            lock = state.acquire_lock(f"t{n % 50}", 600_000)
            assert lock is not None
            state.release_lock(lock)
            state.set(f"k{n % 10}", n, 600_000)  # re-timed keys too
        assert len(store._deadlines) == 10
        assert len(store._heap) <= 2 * len(store._deadlines) + 1024


def test_memory_expired_keys_do_not_accumulate() -> None:
    store = MemoryStore()
    for n in range(1000):
        store.set(f"k{n}", "v", px=1)
    threading.Event().wait(0.01)
    store.set("trigger", "v")
    assert store.live_keys() == ["trigger"]
    assert len(store._data) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_async_state_on_memory_under_asyncio_and_trio(anyio_backend: str) -> None:
    async with AsyncState.from_url("memory://") as state:
        results: list[Any] = []

        async def grab() -> None:
            results.append(await state.acquire_lock("t", 1_000))

        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(grab)
        assert sum(lock is not None for lock in results) == 1


# -- connection lifecycle on a real server ---------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_connects_share_one_attempt(redis_url: str) -> None:
    state = AsyncState.from_url(redis_url)
    opened: list[str] = []
    original = state._opener

    def counting_open() -> Any:
        opened.append("attempt")
        return original()

    state._opener = counting_open
    async with anyio.create_task_group() as group:
        for _ in range(10):
            group.start_soon(state.connect)
    assert opened == ["attempt"]
    assert await state.is_subscribed("x") is False
    await state.disconnect()


def test_concurrent_sync_connects_share_one_failed_attempt() -> None:
    port = free_port()
    state = State.from_url(f"redis://127.0.0.1:{port}/0")
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def connect() -> None:
        barrier.wait()
        try:
            state.connect()
        except BackendError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=connect) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(errors) == 6
    assert 1 <= len({id(error) for error in errors}) < 6  # callers shared attempts


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.anyio
async def test_a_failed_connect_can_be_retried(facade: str) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    state: Any = State.from_url(url) if facade == "sync" else AsyncState.from_url(url)

    async def connect() -> None:
        if facade == "sync":
            state.connect()
        else:
            await state.connect()

    with pytest.raises(BackendError, match=r"ConnectionError|cannot connect to 127.0.0.1"):
        await connect()
    assert not state.is_connected
    with RedisServer(port=port):
        await connect()
        assert state.is_connected
        if facade == "sync":
            state.set("k", 1)
            assert state.get("k") == 1
            state.disconnect()
        else:
            await state.set("k", 1)
            assert await state.get("k") == 1
            await state.disconnect()


def _client_count(url: str) -> int:
    with redis.Redis.from_url(url) as probe:
        return len(probe.client_list()) - 1


def test_disconnect_closes_only_what_it_created_sync(redis_url: str) -> None:
    mine = redis.Redis.from_url(redis_url, decode_responses=True)
    with State(client=mine) as state:
        assert state.get_client() is mine
        state.set("adopted", 1)
    assert mine.ping() is True  # still usable: never closed by us
    mine.close()
    before = _client_count(redis_url)
    state = State.from_url(redis_url)
    state.connect()
    state.set("k", 1)
    assert _client_count(redis_url) == before + 1
    state.disconnect()
    assert _client_count(redis_url) == before


class _RecordingRedis(redis.Redis):
    """A real redis-py client that records the ``keys=`` each command is sent with."""

    seen: list[tuple[str, Any]]

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.seen.append((str(args[0]), options.get("keys")))
        return super().execute_command(*args, **options)


def test_an_adopted_client_gets_each_commands_keys_as_from_its_own_methods(
    redis_url: str,
) -> None:
    """redis-py's client-side cache (RESP3, Redis 7.4+, so not testable on this
    machine's servers) finds a command's keys in ``keys=``, which its own methods
    pass: chat-state passes the same, for every command that has a key."""
    mine = cast(_RecordingRedis, _RecordingRedis.from_url(redis_url, decode_responses=True))
    mine.seen = []
    prefix = f"keys-{uuid.uuid4().hex[:8]}"
    try:
        with State(client=mine, key_prefix=prefix) as state:
            state.set("k", {"v": 1})
            assert state.get("k") == {"v": 1}
            state.subscribe("t")
            assert state.is_subscribed("t") is True
            assert state.get_list("l") == []
            assert state.queue_depth("q") == 0
            ours = [entry for entry in mine.seen if entry[0] != "PING"]
            mine.seen = []
            mine.set(f"{prefix}:cache:k", '{"v":1}')
            mine.get(f"{prefix}:cache:k")
            mine.sadd(f"{prefix}:subscriptions", "t")
            mine.sismember(f"{prefix}:subscriptions", "t")
            mine.lrange(f"{prefix}:list:l", 0, -1)
            mine.llen(f"{prefix}:queue:q")
            library = mine.seen
    finally:
        mine.close()
    assert [command for command, _ in ours] == ["SET", "GET", "SADD", "SISMEMBER", "LRANGE", "LLEN"]
    reads = {"GET", "SISMEMBER", "LRANGE", "LLEN"}
    assert [e for e in ours if e[0] in reads] == [e for e in library if e[0] in reads]
    assert all(
        keys == [f"{prefix}:{part}"]
        for (_, keys), part in zip(
            ours,
            ["cache:k", "cache:k", "subscriptions", "subscriptions", "list:l", "queue:q"],
            strict=True,
        )
    )


@pytest.mark.anyio
async def test_disconnect_closes_only_what_it_created_async(redis_url: str) -> None:
    mine = redis.asyncio.Redis.from_url(redis_url)  # bytes replies: normalised by us
    async with AsyncState(client=mine) as state:
        await state.set("adopted-async", {"é": 1})
        assert await state.get("adopted-async") == {"é": 1}
        await state.append_to_list("adopted-list", "x")
        assert await state.get_list("adopted-list") == ["x"]
    assert await mine.ping() is True
    await mine.aclose()
    before = _client_count(redis_url)
    state = AsyncState.from_url(redis_url)
    await state.connect()
    await state.set("k", 1)
    assert _client_count(redis_url) == before + 1
    await state.disconnect()
    assert _client_count(redis_url) == before


def test_clients_of_the_wrong_kind(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="asyncio client: use it with AsyncState"):
        State(client=redis.asyncio.Redis.from_url(redis_url))
    with pytest.raises(ConfigurationError, match="blocking client: use it with State"):
        AsyncState(client=redis.Redis.from_url(redis_url))
    with pytest.raises(ConfigurationError, match="does not know a client of type"):
        State(client=object())


# -- secrets ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_server() -> Any:
    with RedisServer(["--requirepass", "s3cret-pw"]) as server:
        yield server


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.anyio
async def test_passwords_never_leak(
    password_server: RedisServer, facade: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = f"redis://:s3cret-pw@127.0.0.1:{password_server.port}/0"
    bad = f"redis://default:wrong-pw@127.0.0.1:{password_server.port}/0"
    cls: Any = State if facade == "sync" else AsyncState
    caplog.set_level(logging.DEBUG)

    async def run(method: Any, *args: Any) -> Any:
        result = method(*args)
        return await result if inspect.isawaitable(result) else result

    state = cls.from_url(good)
    assert "s3cret-pw" not in repr(state)
    assert "***" in repr(state)
    await run(state.connect)
    await run(state.set, "k", 1)
    assert "s3cret-pw" not in repr(state)
    await run(state.disconnect)
    refused = cls.from_url(bad)
    with pytest.raises(BackendError) as caught:
        await run(refused.connect)
    assert "wrong-pw" not in str(caught.value)
    assert "wrong-pw" not in repr(refused)
    with pytest.raises(ConfigurationError) as bad_option:
        cls.from_url(good + "?socket_timeout=soon")
    assert "s3cret-pw" not in str(bad_option.value)
    assert "s3cret-pw" not in caplog.text
    assert "wrong-pw" not in caplog.text


@pytest.mark.parametrize("facade", ["sync", "async"])
@pytest.mark.anyio
async def test_unix_socket_urls(tmp_path: Any, facade: str) -> None:
    socket_path = tmp_path / "redis.sock"
    url = f"unix://{socket_path}?db=2"
    with RedisServer(["--unixsocket", str(socket_path), "--unixsocketperm", "700"]):
        if facade == "sync":
            with State.from_url(url, key_prefix="unix") as state:
                state.set("k", {"over": "a unix socket"})
                assert state.get("k") == {"over": "a unix socket"}
        else:
            async with AsyncState.from_url(url, key_prefix="unix") as async_state:
                await async_state.set("k", {"over": "a unix socket"})
                assert await async_state.get("k") == {"over": "a unix socket"}
        with redis.Redis(unix_socket_path=str(socket_path), db=2, decode_responses=True) as raw:
            assert raw.get("unix:cache:k") == '{"over":"a unix socket"}'


def _hosts(url: str) -> list[tuple[str, int]]:
    return list(parse_redis_url(url).hosts)


def _sync_client(library: Any, kind: str, url: str) -> tuple[Any, list[Any]]:
    """A client of ``library`` for the topology, and the clients to close with it."""
    if kind == "cluster":
        nodes = [library.cluster.ClusterNode(h, p) for h, p in _hosts(url)]
        client = getattr(library.cluster, CLUSTER_CLASS[library.__name__])(startup_nodes=nodes)
        return client, [client]
    if kind == "sentinel":
        sentinel = library.sentinel.Sentinel(_hosts(url))
        client = sentinel.master_for("mymaster")
        return client, [client, *sentinel.sentinels]
    client = getattr(library, CLIENT_CLASS[library.__name__]).from_url(url)
    return client, [client]


def _async_client(library: Any, kind: str, url: str) -> tuple[Any, list[Any]]:
    if kind == "cluster":
        nodes = [library.asyncio.cluster.ClusterNode(h, p) for h, p in _hosts(url)]
        cluster = getattr(library.asyncio.cluster, CLUSTER_CLASS[library.__name__])
        client = cluster(startup_nodes=nodes)
        return client, [client]
    if kind == "sentinel":
        sentinel = library.asyncio.sentinel.Sentinel(_hosts(url))
        client = sentinel.master_for("mymaster")
        return client, [client, *sentinel.sentinels]
    client = getattr(library.asyncio, CLIENT_CLASS[library.__name__]).from_url(url)
    return client, [client]


CLIENT_CLASS = {"redis": "Redis", "valkey": "Valkey"}
CLUSTER_CLASS = {"redis": "RedisCluster", "valkey": "ValkeyCluster"}
ADOPTED = [(lib, kind) for lib in (redis, valkey) for kind in ("standalone", "cluster", "sentinel")]


@pytest.mark.parametrize(
    ("library", "kind"), ADOPTED, ids=[f"{lib.__name__}-{kind}" for lib, kind in ADOPTED]
)
@pytest.mark.anyio
async def test_existing_clients_of_every_kind_are_used(
    servers: Any, library: Any, kind: str
) -> None:
    url = servers.url("redis-server", kind)
    mine, to_close = _sync_client(library, kind, url)
    with State(client=mine, key_prefix=f"adopt-{kind}") as state:
        assert state.get_client() is mine
        lock = state.acquire_lock("t", 5_000)
        assert lock is not None
        assert state.extend_lock(lock, 5_000) is True  # a script through the given client
        state.release_lock(lock)
        state.set("k", {"bytes": "normalised"})
        assert state.get("k") == {"bytes": "normalised"}
        assert list(state.iter_keys()) == [f"adopt-{kind}:cache:k"]
        state.delete("k")
    assert mine.ping() is True  # not closed by disconnect()
    for client in to_close:
        client.close()
    mine_async, to_aclose = _async_client(library, kind, url)
    async with AsyncState(client=mine_async, key_prefix=f"adopt-a-{kind}") as async_state:
        assert async_state.get_client() is mine_async
        lock = await async_state.acquire_lock("t", 5_000)
        assert lock is not None
        assert await async_state.extend_lock(lock, 5_000) is True
        await async_state.release_lock(lock)
        await async_state.enqueue("t", QueueEntry(1, 2, "m"), 5)
        assert [key async for key in async_state.iter_keys()] == [f"adopt-a-{kind}:queue:t"]
        assert await async_state.dequeue("t") == QueueEntry(1, 2, "m")
    assert await mine_async.ping() is True
    for client in to_aclose:
        await client.aclose()
    wrong_kind, to_aclose = _async_client(library, kind, url)
    with pytest.raises(ConfigurationError, match="use it with AsyncState"):
        State(client=wrong_kind)
    for client in to_aclose:
        await client.aclose()
