"""Developer sessions: ``uv run nox -s tests lint typecheck``.

Each session installs the project from its own files with uv (``uv sync``), so
a session runs exactly what CI runs.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["tests", "lint", "typecheck"]
# Locally a Python that is not installed is skipped (and said so); in CI it fails.
nox.options.error_on_missing_interpreters = bool(os.environ.get("CI"))


def _sync(session: nox.Session) -> None:
    session.run_install(
        "uv",
        "sync",
        "--locked",
        "--all-packages",
        f"--python={session.virtualenv.location}",
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
        external=True,
    )


@nox.session(python=["3.10", "3.11", "3.12", "3.13"])
def tests(session: nox.Session) -> None:
    """The whole test suite against real servers started by the harness."""
    _sync(session)
    session.run("pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    _sync(session)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library, the backends and the tests."""
    _sync(session)
    session.run("mypy")
