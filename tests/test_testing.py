"""chat_state.testing's promises to users: the README's example runs as written, only
the processes a harness object started are stopped, ports are loopback and never
6379, a missing binary says what to install, and the admin client speaks RESP."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from chat_state import State, testing
from chat_state.testing import (
    AdminClient,
    RedisServer,
    ReplyError,
    ServerUnavailable,
    find_redis_server,
    free_port,
)

README = Path(__file__).resolve().parent.parent / "README.md"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _readme_example() -> str:
    section = README.read_text("utf-8").split("### Testing your bot against real servers")[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's chat_state.testing section has an example"
    return match.group(1)


def test_the_readme_example_runs_and_stops_what_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    started: list[int] = []

    class Recorded(testing.Cluster):
        def start(self) -> Recorded:
            super().start()
            started.extend(node.pid for node in self.nodes if node.pid is not None)
            return self

    monkeypatch.setattr(testing, "Cluster", Recorded)
    namespace: dict[str, object] = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    server = namespace["server"]
    assert isinstance(server, RedisServer)
    assert not server.running
    assert len(started) == 6, "three primaries and three replicas"
    assert not [pid for pid in started if _alive(pid)]


def test_a_server_is_private_and_stops_with_its_block() -> None:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    with RedisServer() as server:
        assert server.port != 6379
        assert server.url.startswith("redis://127.0.0.1:")
        pid = server.pid
        assert pid is not None
        assert _alive(pid)
        with State.from_url(server.url) as state:
            state.set("k", {"a": 1})
            assert state.get("k") == {"a": 1}
    assert not _alive(pid)
    server.stop()  # safe twice


def test_kill_and_restart_keep_the_port() -> None:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    with RedisServer() as server:
        port = server.port
        server.kill()
        assert not server.running
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), 1),
        ):
            pass
        server.restart()
        assert server.port == port
        with AdminClient(port) as admin:
            assert admin.execute_command("PING") == "PONG"


def test_the_admin_client_speaks_resp() -> None:
    if find_redis_server() is None:
        pytest.skip("no redis-server binary (apt-get install redis-server)")
    with RedisServer() as server, AdminClient(server.port) as admin:
        assert admin.execute_command("SET", "k", "v") == "OK"
        assert admin.execute_command("GET", "k") == "v"
        assert admin.execute_command("GET", "absent") is None
        assert admin.execute_command("RPUSH", "l", 1, "x") == 2
        assert admin.execute_command("LRANGE", "l", 0, -1) == ["1", "x"]
        assert admin.info("server")["tcp_port"] == str(server.port)
        with pytest.raises(ReplyError, match="WRONGTYPE"):
            admin.execute_command("GET", "l")


def test_free_ports_are_never_the_system_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should the OS offer 6379 (it is in the ephemeral range on some systems), the
    harness asks again."""
    offered = [6379, 6379, 40001]

    class Offering(socket.socket):
        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", offered.pop(0))

    monkeypatch.setattr(socket, "socket", Offering)  # (the harness uses socket.socket)
    assert free_port() == 40001
    assert offered == []


def test_the_system_port_is_refused() -> None:
    with pytest.raises(ValueError, match="6379 is the system Redis server's"):
        RedisServer(port=6379)


def test_a_missing_binary_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServerUnavailable, match="'/no/such/redis-server' is not an executable"):
        RedisServer(binary="/no/such/redis-server").start()
    monkeypatch.setattr(testing._servers, "find_redis_server", lambda: None)
    with pytest.raises(ServerUnavailable, match="apt-get install redis-server"):
        RedisServer().start()
