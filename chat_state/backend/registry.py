"""Choosing a backend: by URL scheme, by ``driver=``, or by the type of a client.

Built-in schemes live in a table that maps each to the module holding its
:class:`~chat_state.backend.BackendFactory` and the extra that installs it, so a
missing client library gives ``pip install "chat-state[redis]"`` rather than an
``ImportError``. Third-party backends register a factory under the entry-point
group ``chat_state.backends`` (the entry point's name is the URL scheme); they
are read lazily and cannot replace a built-in scheme.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TypeVar

from chat_state.errors import ConfigurationError

from .interface import BackendFactory
from .urls import SCHEMES, redact_url, shown_scheme

__all__ = ["ENTRY_POINT_GROUP", "factory_for_client", "factory_for_url", "redact_url"]

ENTRY_POINT_GROUP = "chat_state.backends"

B = TypeVar("B")
logger = logging.getLogger("chat_state")


@dataclass(frozen=True, slots=True)
class _Driver:
    module: str
    extra: str | None
    library: str


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


def _load(driver: _Driver, what: str) -> BackendFactory:
    try:
        module = importlib.import_module(driver.module)
    except ImportError as exc:
        hint = f'pip install "chat-state[{driver.extra}]"' if driver.extra else "a reinstall"
        raise ConfigurationError(
            f"{what} needs {driver.library}, which is not installed ({exc.name} is missing); "
            f"install it with: {hint}"
        ) from None
    factory: BackendFactory = module.BACKEND
    return factory


def _load_first(drivers: tuple[str, ...], what: str) -> BackendFactory:
    """The first of ``drivers`` that is installed; if none is, the first one's error."""
    errors: list[ConfigurationError] = []
    for name in drivers:
        try:
            return _load(_DRIVERS[name], what)
        except ConfigurationError as exc:
            errors.append(exc)
    raise errors[0]


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
        what = f"the {scheme}:// scheme"
        return _load(_DRIVERS[driver], what) if driver else _load_first(_SCHEMES[scheme], what)
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
