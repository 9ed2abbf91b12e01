"""The server-side scripts, and a pure-Python twin of each.

The Lua sources ship as package data (``chat_state/lua``) and run on a server by
SHA (the drivers fall back to the full source on NOSCRIPT). The memory backend
runs the twins, so every backend executes the very same operations; a
differential test holds each twin against its Lua on a real server.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol

__all__ = [
    "EXTEND",
    "LOCK_INFO",
    "PUSH",
    "QUEUE_INFO",
    "RELEASE",
    "SCRIPTS",
    "Script",
    "ScriptHost",
    "sha1_of",
]


class ScriptHost(Protocol):
    """The primitive commands a twin may use (the memory store provides them)."""

    def get(self, key: str) -> str | None: ...
    def delete(self, key: str) -> int: ...
    def pexpire(self, key: str, ttl_ms: int) -> int: ...
    def rpush(self, key: str, value: str) -> int: ...
    def ltrim(self, key: str, start: int, stop: int) -> None: ...
    def pttl(self, key: str) -> int: ...
    def llen(self, key: str) -> int: ...
    def lindex(self, key: str, index: int) -> str | None: ...
    def type_of(self, key: str) -> str: ...


Twin = Callable[[ScriptHost, Sequence[str], Sequence[str]], Any]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, its SHA1 and its Python twin."""

    name: str
    source: str
    sha: str
    twin: Twin

    def __repr__(self) -> str:
        return f"Script({self.name!r}, sha={self.sha[:12]}…)"


def sha1_of(source: str) -> str:
    """The SHA1 a server names a script by."""
    return hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


def _load(name: str, twin: Twin) -> Script:
    source = files(__package__).joinpath("lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return Script(name, source, sha1_of(source), twin)


def _release(host: ScriptHost, keys: Sequence[str], argv: Sequence[str]) -> int:
    if host.get(keys[0]) == argv[0]:
        return host.delete(keys[0])
    return 0


def _extend(host: ScriptHost, keys: Sequence[str], argv: Sequence[str]) -> int:
    if host.get(keys[0]) == argv[0]:
        return host.pexpire(keys[0], int(argv[1]))
    return 0


_DIGITS = re.compile(r"[0-9]+")


def _push(host: ScriptHost, keys: Sequence[str], argv: Sequence[str]) -> int:
    key = keys[0]
    if len(argv) != 3 or not (_DIGITS.fullmatch(argv[1]) and _DIGITS.fullmatch(argv[2])):
        raise ValueError("max length and ttl must be non-negative integers")  # before writing
    max_length, ttl = int(argv[1]), int(argv[2])
    length = host.rpush(key, argv[0])
    if 0 < max_length < length:
        host.ltrim(key, -max_length, -1)
        length = max_length
    if ttl > 0:
        host.pexpire(key, ttl)
    return length


def _lock_info(host: ScriptHost, keys: Sequence[str], argv: Sequence[str]) -> list[Any] | None:
    if host.type_of(keys[0]) != "string":
        return None
    return [host.get(keys[0]), host.pttl(keys[0])]


def _queue_info(host: ScriptHost, keys: Sequence[str], argv: Sequence[str]) -> list[Any] | None:
    if host.type_of(keys[0]) != "list":
        return None
    return [host.llen(keys[0]), host.lindex(keys[0], 0)]


RELEASE = _load("release", _release)
EXTEND = _load("extend", _extend)
PUSH = _load("push", _push)
LOCK_INFO = _load("lock_info", _lock_info)
QUEUE_INFO = _load("queue_info", _queue_info)

#: Every script by SHA, for backends that run the twins.
SCRIPTS: dict[str, Script] = {s.sha: s for s in (RELEASE, EXTEND, PUSH, LOCK_INFO, QUEUE_INFO)}
