"""What each distribution pulls in, read from the installed metadata."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(distribution: str, extras: tuple[str, ...] = ()) -> set[str]:
    """Every distribution that installing ``distribution[extras]`` brings, by name."""
    seen: set[str] = set()
    pending = [(canonicalize_name(distribution), extras)]
    while pending:
        name, wanted = pending.pop()
        if name in seen and not wanted:
            continue
        seen.add(name)
        for text in requires(name) or []:
            requirement = Requirement(text)
            marker = requirement.marker
            environments = [{"extra": extra} for extra in ("", *wanted)]
            if marker is None or any(marker.evaluate(env) for env in environments):
                pending.append((canonicalize_name(requirement.name), tuple(requirement.extras)))
    return seen


def test_the_valkey_extra_does_not_pull_in_redis_py() -> None:
    pulled = closure("chat-state", ("valkey",))
    assert {"chat-state-valkey", "valkey"} <= pulled
    assert "redis" not in pulled
    assert "chat-state-redis" not in pulled


def test_the_redis_extra_does_not_pull_in_valkey_py() -> None:
    pulled = closure("chat-state", ("redis",))
    assert {"chat-state-redis", "redis"} <= pulled
    assert "valkey" not in pulled


def test_the_core_needs_no_client_library() -> None:
    pulled = closure("chat-state")
    assert pulled.isdisjoint({"redis", "valkey", "coredis", "chat-sdk"})
    assert "anyio" in pulled


def test_importing_chat_state_imports_no_client_library() -> None:
    code = (
        "import sys, chat_state\n"
        "chat_state.State.from_url('memory://')\n"
        "print(sorted(m for m in ('redis', 'valkey', 'coredis', 'chat_sdk') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
