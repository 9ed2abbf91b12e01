"""Where the conformance suite runs: one table of targets, and its product with the facades.

A :class:`TargetSpec` is one place a test's state can live: memory, or a server binary x
topology x client library. Everything else about it (its name, the URL it is given,
``driver=``, whether chat-state's own connections are used, whether AsyncState can run
on trio there, its pytest markers) is derived from those three fields, here and nowhere
else. :func:`target_params` and :func:`case_params` turn a list of targets into pytest
parameters; ``tests/conftest.py`` applies them to every test that takes ``target``.

Test ids are the target names (``memory``, ``redis-server/cluster/redis-py``), followed,
for tests that take ``facade`` too, by ``-sync``/``-async`` and ``-trio`` for AsyncState
on trio: ``redis-server/cluster/redis-py-sync``, ``memory-async-trio``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pytest

Server = Literal["redis-server", "valkey-server"]
Topology = Literal["memory", "standalone", "cluster", "sentinel"]
Library = Literal["redis-py", "valkey-py", "coredis", "redis-py-pooled"]
Facade = Literal["sync", "async"]
Loop = Literal["asyncio", "trio"]

SERVER_NAMES: tuple[Server, ...] = ("redis-server", "valkey-server")
SERVER_TOPOLOGIES: tuple[Topology, ...] = ("standalone", "cluster", "sentinel")
#: The client libraries every server topology runs with.
LIBRARIES: tuple[Library, ...] = ("redis-py", "valkey-py", "coredis")
#: chat-state uses its own connections by default (AsyncState multiplexes commands on one
#: per node; State keeps lean blocking ones), on every topology; targets with this library
#: switch them off for both facades (own_connections=false: redis-py's connection pool).
POOLED: Library = "redis-py-pooled"
#: The facades, and the event loops AsyncState runs on (State: asyncio, via AsAsync).
FACADE_LOOPS: tuple[tuple[Facade, Loop], ...] = (
    ("sync", "asyncio"),
    ("async", "asyncio"),
    ("async", "trio"),
)

_SCHEME_SUFFIX = {"standalone": "", "cluster": "+cluster", "sentinel": "+sentinel"}
#: pytest markers: per server binary, topology and library (registered in pyproject.toml).
SERVER_MARKS: dict[Server, str] = {"redis-server": "redis", "valkey-server": "valkey"}
LIBRARY_MARKS: dict[Library, str] = {
    "redis-py": "redis_py",
    "valkey-py": "valkey_py",
    "coredis": "coredis",
    "redis-py-pooled": "redis_py_pooled",
}
TRIO_MARK = "trio"


@dataclass(frozen=True)
class TargetSpec:
    """One target: memory (no server, no library), or server x topology x library."""

    server: Server | None
    topology: Topology
    library: Library | None

    def __post_init__(self) -> None:
        memory = self.topology == "memory"
        if memory != (self.server is None) or memory != (self.library is None):
            raise ValueError(f"memory has no server nor library, servers have both: {self}")

    @property
    def name(self) -> str:
        """``memory``, or ``server/topology/library``: the test id, and the name
        ``@pytest.mark.targets`` takes."""
        if self.server is None:
            return "memory"
        return f"{self.server}/{self.topology}/{self.library}"

    @property
    def scheme(self) -> str:
        """The URL scheme the adapter is given: ``memory``, ``redis``, ``redis+cluster``,
        ``valkey+sentinel`` ... (valkey-py gets the valkey schemes, the others the redis
        ones; coredis is chosen with ``driver=``)."""
        if self.server is None:
            return "memory"
        family = "valkey" if self.library == "valkey-py" else "redis"
        return family + _SCHEME_SUFFIX[self.topology]

    @property
    def driver(self) -> str | None:
        """The adapter's ``driver=``: ``"coredis"``, or ``None`` (chosen by the scheme)."""
        return "coredis" if self.library == "coredis" else None

    @property
    def own_connections(self) -> bool | None:
        """Whether chat-state's own connections are used (``None`` on memory)."""
        if self.server is None:
            return None
        return self.library != POOLED

    @property
    def runs_on_trio(self) -> bool:
        """AsyncState runs under trio on memory and coredis (redis-py's client is asyncio
        only)."""
        return self.server is None or self.library == "coredis"

    @property
    def marks(self) -> tuple[str, ...]:
        """The pytest markers of the target's tests: topology, server, library."""
        if self.server is None or self.library is None:
            return (self.topology,)
        return (self.topology, SERVER_MARKS[self.server], LIBRARY_MARKS[self.library])

    def memory_url(self, prefix: str) -> str:
        """The memory target's URL: a store of its own per test."""
        return f"{self.scheme}://{prefix}"

    def url(self, base_url: str) -> str:
        """The adapter's URL on the server topology at ``base_url`` (a ``redis…`` URL).

        For valkey-py its ``redis`` scheme becomes ``valkey`` (``rediss``: ``valkeys``);
        the pooled target adds ``own_connections=false``.
        """
        url = "valkey" + base_url.removeprefix("redis") if self.library == "valkey-py" else base_url
        if self.own_connections is False:
            url += "?own_connections=false"
        return url


def _table() -> tuple[TargetSpec, ...]:
    """memory, then server x topology x library, then the pooled redis-server targets."""
    memory = TargetSpec(None, "memory", None)
    product = [
        TargetSpec(server, topology, library)
        for server in SERVER_NAMES
        for topology in SERVER_TOPOLOGIES
        for library in LIBRARIES
    ]
    pooled = [TargetSpec("redis-server", topology, POOLED) for topology in SERVER_TOPOLOGIES]
    return (memory, *product, *pooled)


#: Every target, in test order.
TABLE: tuple[TargetSpec, ...] = _table()
BY_NAME: dict[str, TargetSpec] = {spec.name: spec for spec in TABLE}
#: Every target's name, and every server target's (what ``@pytest.mark.targets`` takes).
TARGETS: list[str] = [spec.name for spec in TABLE]
SERVER_TARGETS: list[str] = [spec.name for spec in TABLE if spec.server is not None]


def select(names: Iterable[str]) -> list[TargetSpec]:
    """The targets named (``@pytest.mark.targets``'s argument), in that order."""
    chosen = []
    for name in names:
        if name not in BY_NAME:
            raise ValueError(f"unknown target {name!r}; the targets are {TARGETS}")
        chosen.append(BY_NAME[name])
    return chosen


@dataclass(frozen=True)
class Case:
    """One run of a test that takes ``target`` and ``facade``: a target, a facade, a loop."""

    target: TargetSpec
    facade: Facade
    loop: Loop

    @property
    def id(self) -> str:
        """``<target>-<facade>``, and ``-trio`` on trio."""
        return f"{self.target.name}-{self.facade}" + ("-trio" if self.loop == "trio" else "")

    @property
    def marks(self) -> tuple[str, ...]:
        """The target's markers, and ``trio`` on trio."""
        return self.target.marks + ((TRIO_MARK,) if self.loop == "trio" else ())


def cases(
    targets: Sequence[TargetSpec], facades: Iterable[Facade] = ("sync", "async")
) -> list[Case]:
    """targets x facades x loops: State on asyncio, AsyncState on asyncio, and AsyncState
    on trio where it can run there (``facades``: only these)."""
    chosen = set(facades)
    return [
        Case(target, facade, loop)
        for target in targets
        for facade, loop in FACADE_LOOPS
        if facade in chosen and (loop == "asyncio" or target.runs_on_trio)
    ]


def _marks(names: Iterable[str]) -> list[Any]:
    return [getattr(pytest.mark, name) for name in names]


def target_params(targets: Sequence[TargetSpec]) -> list[Any]:
    """pytest parameters for ``target`` alone."""
    return [pytest.param(spec, id=spec.name, marks=_marks(spec.marks)) for spec in targets]


def case_params(
    targets: Sequence[TargetSpec], facades: Iterable[Facade] = ("sync", "async")
) -> list[Any]:
    """pytest parameters for ``(target, facade, anyio_backend)``."""
    return [
        pytest.param(case.target, case.facade, case.loop, id=case.id, marks=_marks(case.marks))
        for case in cases(targets, facades)
    ]
