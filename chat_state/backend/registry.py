"""Choosing a backend: by URL scheme, by ``driver=``, or by the type of a client.

Built-in schemes live in a table that maps each to the module holding its
:class:`~chat_state.backend.BackendFactory` and the extra that installs it, so a
missing backend distribution or client library gives a :class:`ConfigurationError`
saying which of the two is installed and ``pip install "chat-state[redis]"``, rather
than an ``ImportError``. Third-party backends register a factory under the entry-point
group ``chat_state.backends`` (the entry point's name is the URL scheme); they
are read lazily and cannot replace a built-in scheme.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Literal, TypeVar

from chat_state.errors import ConfigurationError

from .interface import BackendFactory
from .urls import SCHEMES, redact_url, shown_scheme

__all__ = [
    "ENTRY_POINT_GROUP",
    "factory_for_client",
    "factory_for_url",
    "redact_url",
    "with_interface",
]

ENTRY_POINT_GROUP = "chat_state.backends"

B = TypeVar("B")
logger = logging.getLogger("chat_state")


@dataclass(frozen=True, slots=True)
class _Driver:
    """A built-in backend: its module, the extra that installs it, its client library.

    For the Redis family the extra's name is also the client library's top-level
    package and the suffix of the backend's distribution (``chat-state-redis``).
    """

    module: str
    extra: str | None
    library: str

    @property
    def distribution(self) -> str:
        """The distribution that ships :attr:`module`."""
        return f"chat-state-{self.extra}" if self.extra else "chat-state"

    @property
    def package(self) -> str | None:
        """The client library's top-level package (none for the memory backend)."""
        return self.extra


_MEMORY = _Driver("chat_state.memory", None, "the memory backend")
_DRIVERS: dict[str, _Driver] = {
    "redis": _Driver("chat_state_redis", "redis", "redis-py"),
    "valkey": _Driver("chat_state_valkey", "valkey", "valkey-py"),
    "coredis": _Driver("chat_state_coredis", "coredis", "coredis"),
}
#: Schemes of the Redis family → the drivers that serve them, preferred first: a
#: ``redis…`` URL uses redis-py if it is installed, else valkey-py; a ``valkey…`` URL
#: the reverse. ``driver=`` names one explicitly (``"coredis"`` only that way).
_SCHEMES: dict[str, tuple[str, ...]] = {
    scheme: (family, *(d for d in ("redis", "valkey") if d != family))
    for scheme, (family, _, _) in SCHEMES.items()
}
#: Top-level package of a client's class → the driver that adopts it.
_CLIENT_PACKAGES: dict[str, _Driver] = {
    "chat_state": _MEMORY,
    "redis": _DRIVERS["redis"],
    "valkey": _DRIVERS["valkey"],
    "coredis": _DRIVERS["coredis"],
}


#: What keeps a backend from loading: its distribution, its client library, both, or
#: something else (a broken install).
_Missing = Literal["backend", "library", "both", "other"]


def _within(name: str | None, package: str) -> bool:
    """Whether module ``name`` is ``package`` or one of its submodules."""
    return name is not None and f"{name}.".startswith(f"{package}.")


def _importable(package: str) -> bool:
    """Whether the top-level ``package`` is installed (found without importing it)."""
    if package in sys.modules:
        return True
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _what_is_missing(driver: _Driver, exc: ImportError) -> _Missing:
    if driver.package is None:
        return "other"
    if _within(exc.name, driver.module):
        return "backend" if _importable(driver.package) else "both"
    if _within(exc.name, driver.package):
        return "library"
    return "other"


def _missing(driver: _Driver, what: str, exc: ImportError) -> ConfigurationError:
    """The error for ``driver`` failing to import with ``exc``: what is installed, what
    is not, and the command that installs what is missing."""
    missing = _what_is_missing(driver, exc)
    not_found = isinstance(exc, ModuleNotFoundError) and exc.name
    detail = f"{exc.name} is missing" if not_found else str(exc)
    if driver.extra is None:
        return ConfigurationError(
            f"{what} needs {driver.library}, which cannot be imported ({detail}); "
            "reinstall chat-state: pip install --force-reinstall chat-state"
        )
    backend, library = driver.distribution, driver.library
    install = f'pip install "chat-state[{driver.extra}]"'
    state = {
        "backend": f"{library} is installed but {backend} is not",
        "library": f"{backend} is installed but {library} is not",
        "both": "neither is installed",
        "other": f"{backend} cannot be imported ({detail})",
    }[missing]
    if missing == "other":
        install = f'pip install --force-reinstall "chat-state[{driver.extra}]"'
    return ConfigurationError(f"{what} needs {backend} and {library}; {state}: {install}")


def _import(driver: _Driver) -> BackendFactory | ImportError:
    """The backend factory of ``driver``, or why its module cannot be imported."""
    try:
        module = importlib.import_module(driver.module)
    except ImportError as exc:
        return exc
    factory: BackendFactory = module.BACKEND
    return factory


def _load(driver: _Driver, what: str) -> BackendFactory:
    found = _import(driver)
    if isinstance(found, ImportError):
        raise _missing(driver, what, found)
    return found


def _load_first(drivers: tuple[str, ...], what: str) -> BackendFactory:
    """The first of ``drivers`` that is installed; if none is, the error of the first
    that is half installed (the backend without its library or the reverse: the other
    half is what the user most likely lacks), else the first one's."""
    failures: list[tuple[_Driver, ImportError]] = []
    for name in drivers:
        found = _import(_DRIVERS[name])
        if not isinstance(found, ImportError):
            return found
        failures.append((_DRIVERS[name], found))
    half = [f for f in failures if _what_is_missing(*f) in ("backend", "library")]
    driver, exc = (half or failures)[0]
    raise _missing(driver, what, exc)


def _plugins() -> dict[str, BackendFactory]:
    found: dict[str, BackendFactory] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _SCHEMES or entry.name == "memory":
            logger.warning(
                "ignoring entry point %r of %s: the scheme %r:// is built in",
                entry.value,
                ENTRY_POINT_GROUP,
                entry.name,
            )
            continue
        found[entry.name] = entry.load()
    return found


def known_schemes() -> list[str]:
    """Every scheme a URL may use: built-in ones, then those of installed plugins."""
    return ["memory", *_SCHEMES, *sorted(_plugins())]


def factory_for_url(url: str, driver: str | None = None) -> BackendFactory:
    """The backend factory for ``url``, or :class:`ConfigurationError`."""
    if not isinstance(url, str):
        raise ConfigurationError(f"url must be a str, not {type(url).__name__}")
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if driver is not None and driver not in _DRIVERS:
        raise ConfigurationError(
            f"unknown driver {driver!r}; known drivers: {', '.join(sorted(_DRIVERS))}"
        )
    if scheme == "memory":
        if driver is not None:
            raise ConfigurationError("driver= applies to Redis URLs, not to memory://")
        return _load(_MEMORY, "memory://")
    if scheme in _SCHEMES:
        if driver:
            return _load(_DRIVERS[driver], f"driver={driver!r}")
        return _load_first(_SCHEMES[scheme], f"the {scheme}:// scheme")
    plugin = _plugins().get(scheme) if scheme else None
    if plugin is None or driver is not None:
        known = ", ".join(f"{name}://" for name in known_schemes())
        raise ConfigurationError(
            f"unknown URL scheme {shown_scheme(url)} in {redact_url(url)!r}; known schemes: {known}"
        )
    return plugin


def factory_for_client(client: object, adopt: Callable[[BackendFactory, object], B | None]) -> B:
    """Wrap an existing client with the backend that recognises its type.

    ``adopt`` is ``BackendFactory.adopt_sync`` or ``adopt_async``. Only the backend
    for the client's own library is imported.
    """
    candidates: list[BackendFactory] = []
    for cls in type(client).__mro__:
        driver = _CLIENT_PACKAGES.get(cls.__module__.partition(".")[0])
        if driver is not None:
            candidates.append(_load(driver, f"a {cls.__module__}.{cls.__qualname__} client"))
            break
    candidates.extend(_plugins().values())
    for factory in candidates:
        wrapped = adopt(factory, client)
        if wrapped is not None:
            return wrapped
    raise ConfigurationError(
        f"chat-state does not know a client of type {type(client).__module__}."
        f"{type(client).__qualname__}; pass a redis-py client or a MemoryStore, or a URL"
    )


def with_interface(factory: BackendFactory, backend: B) -> B:
    """``backend`` if it has the interface of :mod:`chat_state.backend.interface`, else
    a :class:`ConfigurationError` naming the factory (one written for chat-state < 0.2
    has a method per command instead)."""
    if backend is not None and not callable(getattr(backend, "call", None)):
        raise ConfigurationError(
            f"the backend {type(backend).__qualname__} of {factory!r} has no call(key, "
            "args): it was written for chat-state < 0.2, whose backends had a method per "
            "command; see chat_state.backend.Backend and AsyncBackend"
        )
    return backend
