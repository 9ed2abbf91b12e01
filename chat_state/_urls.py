"""Parsing Redis and Valkey URLs ourselves, for every topology.

Neither redis-py nor valkey-py parses a Cluster or Sentinel URL, and their own
URL parsing turns option strings into truthy values (``?decode_responses=False``
still decodes). So chat-state parses every URL of the Redis family here into a
typed :class:`RedisURL`, refuses unknown options, and hands the client library
keyword arguments only.

Forms::

    redis://[user:pass@]host[:port][/db][?options]             rediss:// for TLS
    unix://[user:pass@]/path/to/socket[?db=N&options]
    redis+cluster://[user:pass@]host:port[,host:port...][/][?options]
    redis+sentinel://[user:pass@]host:port[,host:port...]/service[/db][?options]

and ``rediss+cluster://``, ``rediss+sentinel://``, and the same set with
``valkey`` in place of ``redis`` (``valkeys`` for TLS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigurationError

__all__ = ["SCHEMES", "RedisURL", "parse_redis_url"]

Topology = Literal["standalone", "unix", "cluster", "sentinel"]

#: scheme → (client family that speaks it natively, topology, TLS)
SCHEMES: dict[str, tuple[str, Topology, bool]] = {
    "redis": ("redis", "standalone", False),
    "rediss": ("redis", "standalone", True),
    "unix": ("redis", "unix", False),
    "redis+cluster": ("redis", "cluster", False),
    "rediss+cluster": ("redis", "cluster", True),
    "redis+sentinel": ("redis", "sentinel", False),
    "rediss+sentinel": ("redis", "sentinel", True),
    "valkey": ("valkey", "standalone", False),
    "valkeys": ("valkey", "standalone", True),
    "valkey+cluster": ("valkey", "cluster", False),
    "valkeys+cluster": ("valkey", "cluster", True),
    "valkey+sentinel": ("valkey", "sentinel", False),
    "valkeys+sentinel": ("valkey", "sentinel", True),
}

DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
#: Bounded waits unless the URL says otherwise (seconds).
DEFAULT_SOCKET_TIMEOUT = 10.0
DEFAULT_CONNECT_TIMEOUT = 5.0

_CERT_REQS = ("required", "optional", "none")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"URL option {name} must be a positive number of seconds")
    return value


def _positive_int(name: str, text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise ConfigurationError(f"URL option {name} must be a positive integer")
    return int(text)


def _boolean(name: str, text: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise ConfigurationError(f"URL option {name} must be true or false")


def _cert_reqs(name: str, text: str) -> str:
    if text.lower() not in _CERT_REQS:
        raise ConfigurationError(f"URL option {name} must be one of {', '.join(_CERT_REQS)}")
    return text.lower()


def _text(name: str, text: str) -> str:
    if not text:
        raise ConfigurationError(f"URL option {name} must not be empty")
    return text


def _db(name: str, text: str) -> int:
    if not text.isdigit():
        raise ConfigurationError(f"the database number ({name}) must be a non-negative integer")
    return int(text)


#: option → (parser, the topologies it applies to, needs TLS)
_OPTIONS: dict[str, tuple[Callable[[str, str], Any], tuple[Topology, ...], bool]] = {
    "db": (_db, ("standalone", "unix", "sentinel"), False),
    "socket_timeout": (_positive_float, ("standalone", "unix", "cluster", "sentinel"), False),
    "socket_connect_timeout": (
        _positive_float,
        ("standalone", "unix", "cluster", "sentinel"),
        False,
    ),
    "max_connections": (_positive_int, ("standalone", "unix", "cluster", "sentinel"), False),
    "own_connections": (_boolean, ("standalone", "unix", "cluster", "sentinel"), False),
    "sentinel_username": (_text, ("sentinel",), False),
    "sentinel_password": (_text, ("sentinel",), False),
    "ssl_ca_certs": (_text, ("standalone", "cluster", "sentinel"), True),
    "ssl_certfile": (_text, ("standalone", "cluster", "sentinel"), True),
    "ssl_keyfile": (_text, ("standalone", "cluster", "sentinel"), True),
    "ssl_cert_reqs": (_cert_reqs, ("standalone", "cluster", "sentinel"), True),
    "ssl_check_hostname": (_boolean, ("standalone", "cluster", "sentinel"), True),
}

#: Query options whose values are secrets (redacted wherever a URL is shown).
SECRET_OPTIONS = ("sentinel_password",)


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis-family URL."""

    scheme: str
    family: str
    topology: Topology
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()
    path: str | None = None  # unix socket
    service: str | None = None  # sentinel
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def secrets(self) -> list[str]:
        """Every secret in the URL, to scrub from messages."""
        found = [self.password, self.options.get("sentinel_password")]
        return [s for s in found if s]

    @property
    def socket_timeout(self) -> float:
        """Seconds to wait for a reply."""
        timeout: float = self.options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        return timeout

    @property
    def connect_timeout(self) -> float:
        """Seconds to wait for a connection."""
        timeout: float = self.options.get("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        return timeout

    @property
    def own_connections(self) -> bool:
        """Whether chat-state's own connections are used, not the client library's pool."""
        return bool(self.options.get("own_connections", True))

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the data-node connections (every client class takes them)."""
        kwargs: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            "decode_responses": True,
        }
        if "max_connections" in self.options:
            kwargs["max_connections"] = self.options["max_connections"]
        kwargs.update(self.tls_kwargs())
        return kwargs

    def tls_kwargs(self) -> dict[str, Any]:
        """TLS keyword arguments (empty without TLS)."""
        if not self.tls:
            return {}
        kwargs: dict[str, Any] = {"ssl": True}
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
            if name in self.options:
                kwargs[name] = self.options[name]
        if "ssl_check_hostname" in self.options:
            kwargs["ssl_check_hostname"] = self.options["ssl_check_hostname"]
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the connections to the sentinels themselves."""
        return {
            "username": self.options.get("sentinel_username"),
            "password": self.options.get("sentinel_password"),
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.connect_timeout,
            **self.tls_kwargs(),
        }


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ConfigurationError("a host in the URL is empty")
    if port_text and (not port_text.isdigit() or not 0 < int(port_text) < 65536):
        raise ConfigurationError("a port in the URL is not a number from 1 to 65535")
    return host, int(port_text) if port_text else default_port


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, has_password, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if has_password else None


def _options(query: str, scheme: str, topology: Topology, tls: bool) -> dict[str, Any]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError("the URL's query string cannot be parsed") from None
    options: dict[str, Any] = {}
    for name, value in pairs:
        spec = _OPTIONS.get(name)
        if spec is None:
            known = ", ".join(_OPTIONS)
            raise ConfigurationError(f"unknown URL option {name!r}; known options: {known}")
        parse, topologies, needs_tls = spec
        if topology not in topologies:
            raise ConfigurationError(f"URL option {name} does not apply to {scheme}://")
        if needs_tls and not tls:
            raise ConfigurationError(f"URL option {name} needs a TLS scheme (rediss…/valkeys…)")
        options[name] = parse(name, value)
    return options


def _service_and_db(
    scheme: str, topology: Topology, segments: list[str], *, family: str, hosts: int, db: int
) -> tuple[str | None, int]:
    """The sentinel service name and the database, from the URL's path segments."""
    if topology == "sentinel":
        if not 1 <= len(segments) <= 2:
            raise ConfigurationError(
                f"a {scheme}:// URL is {scheme}://host:port[,host:port…]/service_name[/db]"
            )
        return segments[0], _db("path", segments[1]) if len(segments) == 2 else db
    if topology == "cluster":
        if segments not in ([], ["0"]) or db:
            raise ConfigurationError("a Redis Cluster has only database 0")
        return None, 0
    if hosts > 1:
        raise ConfigurationError(
            f"{scheme}:// takes one host; for several use {family}+cluster:// or "
            f"{family}+sentinel://"
        )
    if len(segments) > 1:
        raise ConfigurationError(f"a {scheme}:// URL's path is the database number")
    return None, _db("path", segments[0]) if segments else db


def parse_redis_url(url: str) -> RedisURL:
    """Parse ``url`` or raise :class:`ConfigurationError` (never showing its password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigurationError(f"not a Redis URL scheme: {scheme or '(none)'}")
    family, topology, tls = SCHEMES[scheme]
    try:
        parts = urlsplit(f"x://{rest}")  # urlsplit's netloc rules, without its port parsing
    except ValueError:
        raise ConfigurationError(f"the {scheme}:// URL cannot be parsed") from None
    if parts.fragment:
        raise ConfigurationError("a Redis URL has no #fragment")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    options = _options(parts.query, scheme, topology, tls)
    db = options.pop("db", 0)
    path = unquote(parts.path)
    if topology == "unix":
        if hostlist or not path:
            raise ConfigurationError("a unix URL is unix:///path/to/socket[?db=N]")
        return RedisURL(
            scheme, family, topology, tls, (), path, None, db, username, password, options
        )
    if not hostlist:
        raise ConfigurationError(f"the {scheme}:// URL names no host")
    default_port = DEFAULT_SENTINEL_PORT if topology == "sentinel" else DEFAULT_PORT
    hosts = tuple(_host_port(item, default_port) for item in hostlist.split(","))
    segments = [s for s in path.split("/") if s]
    service, db = _service_and_db(
        scheme, topology, segments, family=family, hosts=len(hosts), db=db
    )
    return RedisURL(
        scheme, family, topology, tls, hosts, None, service, db, username, password, options
    )
