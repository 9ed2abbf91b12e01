"""The layers' import rule, read from the source (no import is run).

The operations (``chat_state/core/``) and the routes of chat-state's own connections
(``chat_state/connections/routes.py`` and the modules it builds on) are sans-IO: they
name no event loop, socket, thread or parser library. Checked here on every module
they import from chat-state, transitively, so that the rule cannot be slipped past
through a helper module. (A package's ``__init__`` runs when Python imports one of
its modules; it is not code these modules use, so it is not followed.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "chat_state"

#: Where the rule starts: the operations and the routes.
SANS_IO = [
    *sorted(f"chat_state.core.{path.stem}" for path in (PACKAGE / "core").glob("*.py")),
    "chat_state.connections.routes",
]
FORBIDDEN = {"asyncio", "anyio", "socket", "threading", "hiredis", "trio", "select", "ssl"}


def _source(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imports(module: str) -> set[str]:
    """Every module that ``module``'s source imports, anywhere in it (absolute names)."""
    path = _source(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text("utf-8"), package)


def _imports_in(source: str, package: str) -> set[str]:
    """Every module that ``source``, a module of ``package``, imports (absolute names)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            prefix = f"{base}." if node.level else ""
            target = prefix + (node.module or "") if node.module else base
            names.add(target)
            for alias in node.names:  # ``from . import codec`` names a module
                candidate = f"{target}.{alias.name}"
                if _source(candidate).exists():
                    names.add(candidate)
    return names


def _closure(start: list[str]) -> dict[str, set[str]]:
    """``start`` and every chat_state module they import, transitively: → their imports."""
    seen: dict[str, set[str]] = {}
    todo = list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen[module] = _imports(module)
        todo.extend(
            name
            for name in seen[module]
            if name.startswith("chat_state.") and _source(name).exists() and name not in seen
        )
    return seen


def test_the_rule_covers_the_operations_and_the_routes() -> None:
    reached = _closure(SANS_IO)
    assert "chat_state.core.operations" in reached
    assert "chat_state.core.codec" in reached
    assert "chat_state.connections.routes" in reached
    assert "chat_state.connections.failures" in reached
    assert "chat_state.connections.keyslot" in reached


@pytest.mark.parametrize("module", sorted(_closure(SANS_IO)))
def test_sans_io_modules_import_no_io(module: str) -> None:
    """No module the operations or the routes depend on imports an I/O library."""
    used = {name.partition(".")[0] for name in _imports(module)}
    assert not used & FORBIDDEN, f"{module} imports {sorted(used & FORBIDDEN)}"


def test_the_check_sees_imports_wherever_they_are() -> None:
    """Imports in a function, ``from`` imports and relative ones are all seen."""
    source = (
        "from . import codec\n"
        "from ..connections.routes import Send\n"
        "def f():\n"
        "    import asyncio\n"
        "    from hiredis import Reader\n"
    )
    assert _imports_in(source, "chat_state.core") == {
        "chat_state.core",
        "chat_state.core.codec",
        "chat_state.connections.routes",
        "asyncio",
        "hiredis",
    }


def test_the_connections_never_import_a_client_library() -> None:
    """chat-state's own connections stand alone: no redis-py, valkey-py or coredis."""
    modules = [
        f"chat_state.connections.{path.stem}" for path in (PACKAGE / "connections").glob("*.py")
    ]
    for module in modules:
        used = {name.partition(".")[0] for name in _imports(module)}
        assert not used & {"redis", "valkey", "coredis"}, module


@pytest.mark.parametrize("distribution", ["redis", "valkey", "coredis"])
def test_first_party_backends_use_only_public_names(distribution: str) -> None:
    """A third-party backend can do what ours do: they import no private chat-state module."""
    package = ROOT / "backends" / distribution / f"chat_state_{distribution}"
    used = set()
    for path in package.glob("*.py"):
        names = _imports_in(path.read_text("utf-8"), package.name)
        used |= {name for name in names if name.split(".")[0] == "chat_state"}
    assert used, "the backend imports chat-state"
    private = {name for name in used if any(part.startswith("_") for part in name.split("."))}
    assert not private, private
    allowed = ("chat_state.backend", "chat_state.errors", "chat_state.models")
    assert all(name == "chat_state" or name.startswith(allowed) for name in used), used


def _layer(module: str) -> str:
    """The layer of a chat_state module, as ARCHITECTURE.md draws them."""
    if module == "chat_state.backend.redis_family":
        return "adaptors"  # redis-py-shaped libraries, on chat-state's own connections
    for layer in ("core", "backend", "connections", "testing"):
        if module.startswith(f"chat_state.{layer}"):
            return layer
    return "top"  # the facades, memory, the CLI; chat_state.errors and .models are below all


#: What each layer may import of chat-state (errors and models are everyone's).
ALLOWED = {
    "core": {"core"},
    "backend": {"core", "backend"},
    "connections": {"core", "backend", "connections"},
    "adaptors": {"core", "backend", "connections"},
}


def test_each_layer_imports_only_the_layers_below() -> None:
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for folder in ("core", "backend", "connections")
        for path in (PACKAGE / folder).glob("*.py")
        if path.name != "__init__.py"
    ]
    assert "chat_state.backend.redis_family" in modules
    for module in modules:
        layer = _layer(module)
        for name in _imports(module):
            if not name.startswith("chat_state.") or name in (
                "chat_state.errors",
                "chat_state.models",
            ):
                continue
            target = _layer(name)
            assert target in ALLOWED[layer], f"{module} ({layer}) imports {name} ({target})"
