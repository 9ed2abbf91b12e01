"""The examples run, on memory and on a real Redis, and say what they should."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import importlib.util
import inspect
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.to_thread
import httpx
import pytest

from chat_state import AsyncState, BackendError, NotConnectedError, QueueEntry, State
from chat_state.testing import RedisServer, find_redis_server, free_port

with warnings.catch_warnings():
    # starlette >= 1.9 would rather drive httpx2, and says so once, on import.
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

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


def require_redis_server() -> None:
    if find_redis_server() is None:
        if os.environ.get("CI"):
            pytest.fail("no redis-server; in CI a missing server is a failure")
        pytest.skip("no redis-server binary")


def fail_once(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> list[str]:
    """Make ``target.name`` (sync or async) raise BackendError, as with the server down,
    the first time it is called, without calling the real one; → the calls that failed."""
    call, failed = getattr(target, name), list[str]()

    def fail() -> None:
        if not failed:
            failed.append(name)
            raise BackendError(f"{name}: connection refused (the test's)")

    def failing(*args: Any, **kwargs: Any) -> Any:
        fail()
        return call(*args, **kwargs)

    async def failing_async(*args: Any, **kwargs: Any) -> Any:
        fail()
        return await call(*args, **kwargs)

    is_async = inspect.iscoroutinefunction(call)
    monkeypatch.setattr(target, name, failing_async if is_async else failing)
    return failed


def test_async_bot(url: str) -> None:
    output = run_example("async_bot.py", url)
    assert "e1 handled 1 message(s)" in output
    assert "e1 duplicate dropped" in output
    assert "e2 handled 1 message(s)" in output
    assert "history: [{'text': 'hello'}, {'text': 'héllo again'}]" in output


@pytest.mark.anyio
async def test_async_bot_forgets_a_delivery_it_could_not_queue(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When enqueue fails after the de-dup key was written (a thread id chat_state
    refuses; the server down), on_webhook removes the key: the retry is handled."""
    bot = load_example("async_bot")
    thread = f"slack:C{uuid.uuid4().hex[:10]}:1700000000.1"
    event_id = f"{thread}/e1"
    async with AsyncState.from_url(url) as state:
        with pytest.raises(ValueError, match="lone surrogate"):
            await bot.on_webhook(state, event_id, thread + "\ud800", "hello")
        assert await state.get(f"dedupe:{event_id}") is None
        failed = fail_once(monkeypatch, state, "enqueue")
        with pytest.raises(BackendError, match="the test's"):
            await bot.on_webhook(state, event_id, thread, "hello")
        assert failed == ["enqueue"]
        assert await state.get(f"dedupe:{event_id}") is None
        assert await bot.on_webhook(state, event_id, thread, "hello") == "handled 1 message(s)"
        assert await bot.on_webhook(state, event_id, thread, "hello") == "duplicate dropped"
        assert await state.get_list(f"history:{thread}") == [{"text": "hello"}]


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


def test_chat_sdk_bot(url: str) -> None:
    """examples/chat_sdk_bot.py: chat_sdk's Chat on ChatSdkState, fed offline."""
    expected = [
        "<- m1 from ada: '@mybot hello' (a mention)",
        "   bot: Hi Ada! I follow this thread now.",
        "<- m1 from ada: '@mybot hello' (the platform retries: a duplicate)",
        "   (no reply)",
        "<- m2 from ada: 'what is chat-state?' (in a thread the bot follows)",
        "   bot: You said 'what is chat-state?' (answer 1 in this thread).",
        "<- m3 from grace: 'bye' (in a thread the bot follows)",
        "   bot: Bye! I no longer follow this thread.",
        "<- m4 from grace: 'anyone there?' (no mention, in a thread it left)",
        "   (no reply)",
        "following demo:C1:1700000000.1: False",
    ]
    for _ in range(2):  # the demo removes its keys: run again, it does the same
        first, *lines = run_example("chat_sdk_bot.py", url).splitlines()
        assert first.startswith("chat_sdk bot on AsyncState(url=")
        assert "key_prefix='chat-sdk-demo') [connected]" in first
        assert lines == expected


class PlatformDown(Exception):
    """What stops the demo in the test below."""


def test_chat_sdk_bot_raises_the_error_that_stopped_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server goes away, then something stops the demo: main() raises that error,
    not the one its clean-up would meet on the way out (the demo's keys stay)."""
    require_redis_server()
    bot = load_example("chat_sdk_bot")
    deliver = bot.DemoAdapter.handle_webhook
    with RedisServer() as private:

        async def handle_webhook(adapter: Any, request: Any, options: Any = None) -> Any:
            if request["id"] == "m2":
                private.stop()
                raise PlatformDown("the platform is down too")
            return await deliver(adapter, request, options)

        monkeypatch.setattr(bot.DemoAdapter, "handle_webhook", handle_webhook)
        with pytest.raises(PlatformDown):
            asyncio.run(bot.main(private.url))


# -- the web apps: examples/flask_app.py and examples/fastapi_app.py ------------------

FRAMEWORKS = ["flask", "fastapi"]
Reply = tuple[int, Any]
JSON = "application/json"


@functools.cache
def load_example(name: str) -> ModuleType:
    """An example module, imported from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic looks its models' module up there
    spec.loader.exec_module(module)
    return module


class FlaskClient:
    """A Flask app, driven through its test client (one per call: calls may come from
    several threads at once)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def post(self, path: str, body: Any) -> Reply:
        data = json.dumps(body)  # ASCII: a lone surrogate is sent as its \u escape
        response = self.app.test_client().post(path, data=data, content_type=JSON)
        return response.status_code, response.get_json()

    def get(self, path: str) -> Reply:
        response = self.app.test_client().get(path)
        return response.status_code, response.get_json()


class FastAPIClient:
    """A FastAPI app, driven through Starlette's TestClient (whose portal runs the app in
    one event loop; calls from several threads run there at once)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(self, path: str, body: Any) -> Reply:
        data = json.dumps(body)  # ASCII: a lone surrogate is sent as its \u escape
        response = self.client.post(path, content=data, headers={"Content-Type": JSON})
        return response.status_code, response.json()

    def get(self, path: str) -> Reply:
        response = self.client.get(path)
        return response.status_code, response.json()


@dataclass
class App:
    framework: str
    module: ModuleType  # the example's module (its handle() can be instrumented)
    state: Any  # the app's State / AsyncState
    client: FlaskClient | FastAPIClient


@contextlib.contextmanager
def serve(framework: str, url: str) -> Iterator[App]:
    """The example's app on ``url``, its state connected while the block runs."""
    module = load_example(f"{framework}_app")
    if framework == "flask":
        flask_app = module.create_app(url)  # connects
        state = flask_app.extensions["chat_state"]
        try:
            yield App(framework, module, state, FlaskClient(flask_app))
        finally:
            module.close_app(flask_app)  # now, not at exit
    else:
        fastapi_app = module.create_app(url)
        with TestClient(fastapi_app) as client:  # runs the lifespan, which connects
            state = fastapi_app.state.chat_state
            yield App(framework, module, state, FastAPIClient(client))


@pytest.fixture
def app_url(url: str) -> str:
    """``url``; memory:// as a store of this test's own, ``memory://NAME``, which a State
    the test opens on the same URL shares with the app."""
    return f"memory://examples-{uuid.uuid4().hex[:10]}" if url == "memory://" else url


@pytest.fixture(params=FRAMEWORKS)
def app(request: pytest.FixtureRequest, app_url: str) -> Iterator[App]:
    with serve(request.param, app_url) as served:
        yield served


@pytest.fixture
def thread_id() -> str:
    """A thread of this test's own (the session's Redis is shared between tests)."""
    return f"slack:C{uuid.uuid4().hex[:10]}:1700000000.1"


def delivery(thread_id: str, n: int, text: str = "") -> dict[str, str]:
    return {"event_id": f"{thread_id}/e{n}", "thread_id": thread_id, "text": text or f"m{n}"}


def keys_of(url: str, thread_id: str) -> list[str]:
    """The keys that name the thread (its queue, its history, its deliveries' de-dup
    keys), seen through a State of the test's own on the app's URL and prefix."""
    with State.from_url(url) as state:
        return sorted(key for key in state.iter_keys() if thread_id in key)


def history(app: App, thread_id: str) -> list[Any]:
    status, body = app.client.get(f"/threads/{thread_id}/history")
    assert status == 200
    assert body["thread_id"] == thread_id
    messages: list[Any] = body["messages"]
    return messages


def test_app_drops_a_retried_delivery(app: App, thread_id: str) -> None:
    event = delivery(thread_id, 1, "hello")
    assert app.client.post("/webhook", event) == (200, {"status": "handled", "handled": 1})
    assert app.client.post("/webhook", event) == (200, {"status": "duplicate"})
    assert app.client.post("/webhook", {**event, "text": "edited"}) == (
        200,
        {"status": "duplicate"},
    )  # the same event id is the same delivery, whatever it carries
    assert history(app, thread_id) == [{"event_id": event["event_id"], "text": "hello"}]


def test_app_keeps_each_threads_history(app: App, thread_id: str) -> None:
    other = f"gchat:spaces/{thread_id}/threads/2"  # a "/" in a thread id is fine
    for n, (thread, text) in enumerate(
        [(thread_id, "héllo"), (other, "a"), (thread_id, "again 🎉"), (other, "b")]
    ):
        assert app.client.post("/webhook", delivery(thread, n, text))[0] == 200
    assert [m["text"] for m in history(app, thread_id)] == ["héllo", "again 🎉"]
    assert [m["text"] for m in history(app, other)] == ["a", "b"]
    assert history(app, thread_id.replace("slack:", "teams:")) == []


def test_app_refuses_a_malformed_delivery(app: App, thread_id: str) -> None:
    refused = 400 if app.framework == "flask" else 422  # FastAPI's validation error
    for body in [
        {"event_id": "x", "thread_id": thread_id},
        {**delivery(thread_id, 1), "event_id": ""},
        [],
    ]:
        assert app.client.post("/webhook", body)[0] == refused
    assert history(app, thread_id) == []
    # Nothing was remembered of them: the event is taken when it comes whole.
    assert app.client.post("/webhook", delivery(thread_id, 1))[1]["status"] == "handled"


@pytest.mark.parametrize("field", ["event_id", "thread_id", "text"])
def test_app_refuses_a_lone_surrogate_before_writing(
    app: App, app_url: str, thread_id: str, field: str
) -> None:
    """A lone surrogate ("\\ud800", legal in JSON; UTF-8 cannot encode it) in any field
    is refused before anything is written: the corrected retry is handled, not taken
    for a duplicate."""
    refused = 400 if app.framework == "flask" else 422
    event = delivery(thread_id, 1)
    status, body = app.client.post("/webhook", {**event, field: event[field] + "\ud800"})
    assert status == refused
    assert field in json.dumps(body)  # the reply names the field
    assert keys_of(app_url, thread_id) == []
    assert app.client.post("/webhook", event) == (200, {"status": "handled", "handled": 1})
    assert history(app, thread_id) == [{"event_id": event["event_id"], "text": "m1"}]


def test_app_forgets_a_delivery_it_could_not_queue(
    app: App, app_url: str, thread_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enqueue fails (as when the server is down) after the de-dup key was written:
    the app removes the key before it fails the request, so the retry is handled."""
    failed = fail_once(monkeypatch, app.state, "enqueue")
    event = delivery(thread_id, 1)
    if app.framework == "flask":
        assert app.client.post("/webhook", event)[0] == 500
    else:  # Starlette's TestClient raises what the app raised (served: a 500)
        with pytest.raises(BackendError, match="the test's"):
            app.client.post("/webhook", event)
    assert failed == ["enqueue"]
    assert keys_of(app_url, thread_id) == []
    assert app.client.post("/webhook", event) == (200, {"status": "handled", "handled": 1})
    assert app.client.post("/webhook", event) == (200, {"status": "duplicate"})
    assert history(app, thread_id) == [{"event_id": event["event_id"], "text": "m1"}]


def test_app_drops_a_queued_message_that_expired(app: App, app_url: str, thread_id: str) -> None:
    """An entry past its expires_at, waiting in the thread's queue, is taken off the
    queue and dropped: not handled, not in the history."""
    now = time.time_ns() // 1_000_000
    stale = QueueEntry(now - 120_000, now - 30_000, {"event_id": "stale", "text": "too late"})
    with State.from_url(app_url) as other:
        assert other.enqueue(thread_id, stale, max_size=10) == 1
    reply = app.client.post("/webhook", delivery(thread_id, 1))
    assert reply == (200, {"status": "handled", "handled": 1})
    assert [m["text"] for m in history(app, thread_id)] == ["m1"]
    with State.from_url(app_url) as other:
        assert other.queue_depth(thread_id) == 0


def test_flask_close_app_lets_the_state_go() -> None:
    """close_app disconnects the app's State and drops its exit hook: nothing keeps it."""
    module = load_example("flask_app")
    flask_app = module.create_app("memory://")
    state = flask_app.extensions["chat_state"]
    assert state.is_connected
    module.close_app(flask_app)
    assert not state.is_connected
    with pytest.raises(NotConnectedError):
        state.get("anything")
    gone = weakref.ref(state)
    del flask_app, state
    gc.collect()
    assert gone() is None  # the atexit hook would still hold it


class Pause:
    """Holds the app in one call, once, until the test lets it go on."""

    def __init__(self) -> None:
        self.reached, self.resumed = threading.Event(), threading.Event()
        self._armed = True

    def hold(self) -> None:
        if self._armed:
            self._armed = False
            self.reached.set()
            assert self.resumed.wait(20), "the test never let the app go on"


def pause_after(
    app: App,
    monkeypatch: pytest.MonkeyPatch,
    target: object,
    name: str,
    when: Callable[[tuple[Any, ...], Any], bool],
) -> Pause:
    """Wrap ``target.name`` (the real one is still called) to hold the app, once, right
    after a call for which ``when(args, result)``."""
    pause, call = Pause(), getattr(target, name)

    def held(*args: Any) -> Any:
        result = call(*args)
        if when(args, result):
            pause.hold()
        return result

    async def held_async(*args: Any) -> Any:
        result = await call(*args)
        if when(args, result):
            await anyio.to_thread.run_sync(pause.hold)
        return result

    monkeypatch.setattr(target, name, held if app.framework == "flask" else held_async)
    return pause


def newcomer_while_held(app: App, thread_id: str, pause: Pause) -> Reply:
    """Deliver m1; while ``pause`` holds its request (which has the thread's lock),
    deliver m2, which is queued; then let the first go on. → the first's reply."""
    replies: list[Reply] = []
    holder = threading.Thread(
        target=lambda: replies.append(app.client.post("/webhook", delivery(thread_id, 1)))
    )
    holder.start()
    try:
        assert pause.reached.wait(20), "the first delivery never got there"
        assert app.client.post("/webhook", delivery(thread_id, 2)) == (202, {"status": "queued"})
    finally:
        pause.resumed.set()
        holder.join(20)
    assert not holder.is_alive()
    (reply,) = replies
    return reply


def test_app_queues_a_delivery_for_the_lock_holder(
    app: App, thread_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m2 comes while m1's request handles m1 under the thread's lock: m2 is queued, and
    the holder handles it before it lets the thread go."""
    pause = pause_after(app, monkeypatch, app.module, "handle", lambda args, _: True)
    reply = newcomer_while_held(app, thread_id, pause)
    assert reply == (200, {"status": "handled", "handled": 2})
    assert [m["text"] for m in history(app, thread_id)] == ["m1", "m2"]


def test_app_looks_at_the_queue_again_after_releasing(
    app: App, thread_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """m2 is queued after the holder found the queue empty and before it released: the
    holder's look at the queue after releasing finds it (vercel/chat #928)."""
    pause = pause_after(app, monkeypatch, app.state, "dequeue", lambda _, entry: entry is None)
    reply = newcomer_while_held(app, thread_id, pause)
    assert reply == (200, {"status": "handled", "handled": 2})
    assert [m["text"] for m in history(app, thread_id)] == ["m1", "m2"]


def test_app_handles_concurrent_deliveries_exactly_once(app: App, thread_id: str) -> None:
    """12 messages for one thread, each delivered twice, from 8 threads at once: each
    handled once, by whichever request held the thread's lock, none left queued."""
    events = [delivery(thread_id, n) for n in range(12)]
    deliveries = events * 2
    random.Random(7).shuffle(deliveries)
    workers = 8
    start = threading.Barrier(workers)
    replies: list[Reply] = []

    def worker(mine: list[dict[str, str]]) -> None:
        start.wait(20)
        replies.extend(app.client.post("/webhook", event) for event in mine)

    threads = [
        threading.Thread(target=worker, args=(deliveries[n::workers],)) for n in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert len(replies) == len(deliveries)
    statuses = collections.Counter(body["status"] for _, body in replies)
    assert statuses["duplicate"] == len(events)
    assert statuses["handled"] + statuses["queued"] == len(events)
    assert sum(body.get("handled", 0) for _, body in replies) == len(events)
    assert all(code == (202 if body["status"] == "queued" else 200) for code, body in replies)
    handled = [m["event_id"] for m in history(app, thread_id)]
    assert sorted(handled) == sorted(e["event_id"] for e in events)  # each once, none left


def test_app_healthz(app: App, url: str) -> None:
    status, body = app.client.get("/healthz")
    assert status == 200
    assert body["ok"] is True
    assert body["topology"] == ("memory" if url == "memory://" else "standalone")
    assert body["server"] == ("memory" if url == "memory://" else "redis")
    assert [node["ok"] for node in body["nodes"]] == [True]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_app_healthz_is_503_while_the_server_is_down(framework: str) -> None:
    require_redis_server()
    with RedisServer() as private, serve(framework, private.url) as app:
        assert app.client.get("/healthz")[0] == 200
        private.stop()
        status, body = app.client.get("/healthz")
        assert status == 503
        assert body["ok"] is False
        assert body["nodes"][0]["error"]


# -- the apps run: their own servers, driven over HTTP --------------------------------


def _wait_until_up(server: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Until the server answers /healthz (at most 20 s)."""
    deadline = time.monotonic() + 20
    for _ in range(400):
        if server.poll() is not None:
            pytest.fail(f"the server exited ({server.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    pytest.fail(f"the server did not answer within 20 s:\n{log.read_text()}")


def _stop(server: subprocess.Popen[bytes]) -> int:
    """Stop the server we started as Ctrl-C would; → its exit status."""
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            return server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
    return server.wait(timeout=15)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_app_runs_as_a_server(framework: str, url: str, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    command = [sys.executable, str(EXAMPLES / f"{framework}_app.py"), url, "--port", str(port)]
    with log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    thread_id = f"slack:C{uuid.uuid4().hex[:10]}:1700000000.1"
    try:
        _wait_until_up(server, base, log)
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as http:
            event = delivery(thread_id, 1, "hello over HTTP")
            reply = http.post("/webhook", json=event)
            assert (reply.status_code, reply.json()) == (200, {"status": "handled", "handled": 1})
            assert http.post("/webhook", json=event).json() == {"status": "duplicate"}
            reply = http.get(f"/threads/{thread_id}/history")
            assert reply.json()["messages"] == [
                {"event_id": event["event_id"], "text": "hello over HTTP"}
            ]
    finally:
        status = _stop(server)
    output_text = log.read_text()
    assert status == 0, output_text
    if framework == "fastapi":
        assert "Application shutdown complete" in output_text  # the lifespan's exit ran
