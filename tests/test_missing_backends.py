"""What a user sees when a backend distribution or its client library is missing.

Each case runs in a child Python whose ``sys.meta_path`` refuses some top-level
packages, exactly as if they were not installed (the rest of the environment is the
real one), and checks the exact :class:`ConfigurationError` message, for URLs and for
``client=`` objects.
"""

from __future__ import annotations

import json
import subprocess
import sys

import coredis
import redis
import redis.asyncio
import valkey

#: Runs in the child: hide the packages named in argv[1], then evaluate each of
#: argv[2:] and print the message of the ConfigurationError each raises (null if none).
CHILD = """
import json, sys

hidden = frozenset(sys.argv[1].split(","))
assert not hidden & set(sys.modules), "already imported: " + repr(hidden & set(sys.modules))


class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())

import chat_state
from chat_state import AsyncState, ConfigurationError, State

messages = []
for source in sys.argv[2:]:
    try:
        eval(source)
    except ConfigurationError as exc:
        messages.append(str(exc))
    else:
        messages.append(None)
print(json.dumps(messages))
"""


def messages(hidden: set[str], *calls: str) -> list[str | None]:
    """The message of the ConfigurationError each call raises with ``hidden`` missing."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(sorted(hidden)), *calls],
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[str | None] = json.loads(done.stdout)
    return found


def client(cls: type) -> str:
    return f"a {cls.__module__}.{cls.__qualname__} client"


BACKENDS = {"chat_state_redis", "chat_state_valkey", "chat_state_coredis"}
LIBRARIES = {"redis", "valkey", "coredis"}


def test_a_library_without_its_backend_says_to_install_the_backend() -> None:
    assert messages(
        BACKENDS,
        "State.from_url('redis://localhost:6379/0')",
        "AsyncState.from_url('valkeys+cluster://h:7000')",
        "State.from_url('unix:///tmp/redis.sock', driver='valkey')",
        "AsyncState.from_url('redis://h', driver='coredis')",
    ) == [
        "the redis:// scheme needs chat-state-redis and redis-py; "
        'redis-py is installed but chat-state-redis is not: pip install "chat-state[redis]"',
        "the valkeys+cluster:// scheme needs chat-state-valkey and valkey-py; "
        'valkey-py is installed but chat-state-valkey is not: pip install "chat-state[valkey]"',
        "driver='valkey' needs chat-state-valkey and valkey-py; "
        'valkey-py is installed but chat-state-valkey is not: pip install "chat-state[valkey]"',
        "driver='coredis' needs chat-state-coredis and coredis; "
        'coredis is installed but chat-state-coredis is not: pip install "chat-state[coredis]"',
    ]


def test_a_client_without_its_backend_says_to_install_the_backend() -> None:
    assert messages(
        BACKENDS,
        "State(client=__import__('redis').Redis())",
        "AsyncState(client=__import__('redis.asyncio').asyncio.Redis())",
        "State(client=__import__('valkey').Valkey())",
        "AsyncState(client=__import__('coredis').Redis())",
    ) == [
        f"{client(redis.Redis)} needs chat-state-redis and redis-py; "
        'redis-py is installed but chat-state-redis is not: pip install "chat-state[redis]"',
        f"{client(redis.asyncio.Redis)} needs chat-state-redis and redis-py; "
        'redis-py is installed but chat-state-redis is not: pip install "chat-state[redis]"',
        f"{client(valkey.Valkey)} needs chat-state-valkey and valkey-py; "
        'valkey-py is installed but chat-state-valkey is not: pip install "chat-state[valkey]"',
        f"{client(coredis.Redis)} needs chat-state-coredis and coredis; "
        'coredis is installed but chat-state-coredis is not: pip install "chat-state[coredis]"',
    ]


def test_neither_library_nor_backend_says_what_to_install() -> None:
    assert messages(
        BACKENDS | LIBRARIES,
        "State.from_url('redis://localhost')",
        "AsyncState.from_url('valkey+sentinel://h:26379/mymaster')",
        "AsyncState.from_url('redis://h', driver='coredis')",
    ) == [
        "the redis:// scheme needs chat-state-redis and redis-py; "
        'neither is installed: pip install "chat-state[redis]"',
        "the valkey+sentinel:// scheme needs chat-state-valkey and valkey-py; "
        'neither is installed: pip install "chat-state[valkey]"',
        "driver='coredis' needs chat-state-coredis and coredis; "
        'neither is installed: pip install "chat-state[coredis]"',
    ]


def test_a_backend_without_its_library_says_to_install_the_library() -> None:
    assert messages(
        LIBRARIES,
        "State.from_url('redis://localhost')",
        "AsyncState.from_url('redis://h', driver='coredis')",
    ) == [
        "the redis:// scheme needs chat-state-redis and redis-py; "
        'chat-state-redis is installed but redis-py is not: pip install "chat-state[redis]"',
        "driver='coredis' needs chat-state-coredis and coredis; "
        'chat-state-coredis is installed but coredis is not: pip install "chat-state[coredis]"',
    ]


def test_a_half_installed_driver_is_named_before_an_absent_one() -> None:
    """A redis:// URL falls back to valkey-py: with valkey-py there but not its backend,
    and no redis-py at all, installing chat-state-valkey is what completes the setup."""
    assert messages(
        {"redis", "chat_state_redis", "chat_state_valkey"},
        "State.from_url('redis://localhost')",
    ) == [
        "the redis:// scheme needs chat-state-valkey and valkey-py; "
        'valkey-py is installed but chat-state-valkey is not: pip install "chat-state[valkey]"',
    ]


def test_a_broken_install_says_to_reinstall() -> None:
    assert messages({"hiredis"}, "State.from_url('redis://localhost')") == [
        "the redis:// scheme needs chat-state-redis and redis-py; chat-state-redis cannot be "
        'imported (hiredis is missing): pip install --force-reinstall "chat-state[redis]"',
    ]


def test_with_everything_installed_nothing_is_refused() -> None:
    assert messages(
        set(),
        "State.from_url('redis://localhost')",
        "State.from_url('valkey://localhost')",
        "AsyncState.from_url('redis://h', driver='coredis')",
        "State(client=__import__('redis').Redis())",
    ) == [None, None, None, None]
