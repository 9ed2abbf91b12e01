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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import SplitResult, parse_qsl, unquote, unquote_plus, urlsplit

from chat_state.errors import ConfigurationError

__all__ = ["SCHEMES", "RedisURL", "parse_redis_url", "redact_url", "shown_scheme"]

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


#: The longest timeout a URL may set (seconds): a day. A socket cannot wait much longer
#: than 2**63 ns, and no reply is worth waiting a day for.
MAX_TIMEOUT_S = 86_400.0


def _positive_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_TIMEOUT_S:
        raise ConfigurationError(
            f"URL option {name} must be a positive number of seconds, at most {MAX_TIMEOUT_S:g}"
        )
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
#: Where a secret option's value ends: at the next known option, else at the very end (a
#: password with an unencoded "&", "#" or "@" is still hidden whole).
_NEXT_OPTION = re.compile(rf"&(?:{'|'.join(_OPTIONS)})=")
#: Where an option's name starts (``?`` or ``&``) and ends (``=``), in the raw query.
_OPTION_NAME = re.compile(r"[?&]([^=&#?]*)=")
#: What a URL scheme looks like (RFC 3986); anything else before "://" is not shown.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,30}")
_ENCODE_HINT = (
    "; if a password contains '/', '?', '#', '@' or '&', percent-encode it "
    "(urllib.parse.quote(password, safe=''))"
)


def _secret_name(raw: str) -> bool:
    """Whether an option's raw name is a secret one, however it is encoded or cased."""
    return unquote_plus(raw).lower() in SECRET_OPTIONS


def redact_url(url: str) -> str:
    """``url`` with every secret replaced by ``***``, however malformed it is.

    Everything after ``://`` up to the last ``@`` before the query's secret options is
    secret, the user name too (a password may hold a ``:``), and so is the value of a
    secret option (its name matched decoded and in any case) up to the next known
    option or the end. Text before ``://`` that is not a scheme is hidden too.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    elif not _SCHEME.fullmatch(scheme):
        scheme = "***"
    pieces: list[str] = []
    while (secret := _next_secret(rest)) is not None:
        following = _NEXT_OPTION.search(rest, secret)
        pieces.append(rest[:secret] + "***")
        rest = rest[following.start() :] if following else ""
    pieces.append(rest)
    _, at, hosts = pieces[0].rpartition("@")
    if at:
        pieces[0] = f"***@{hosts}"
    redacted = "".join(pieces)
    return f"{scheme}://{redacted}" if sep else redacted


def _next_secret(text: str) -> int | None:
    """Where the value of the first secret option in ``text`` starts, if there is one."""
    for match in _OPTION_NAME.finditer(text):
        if _secret_name(match.group(1)):
            return match.end()
    return None


def shown_scheme(url: str) -> str:
    """The URL's scheme for a message, or "(none)" if what precedes ``://`` is not one."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://" if sep and _SCHEME.fullmatch(scheme) else "(none)"


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
        # A user name with no password may be a password that lost its ":".
        user = self.username if self.password is None else None
        found = [self.password, self.options.get("sentinel_password"), user]
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


def _query_pairs(query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        pass  # its message quotes the query: raise ours outside, with no context
    raise ConfigurationError("the URL's query string cannot be parsed")


def _options(
    query: str, scheme: str, topology: Topology, tls: bool, *, echo: bool
) -> dict[str, Any]:
    """The typed options; ``echo``: whether an unknown option's name may be shown (not
    when it may be part of a password that was not percent-encoded)."""
    options: dict[str, Any] = {}
    previous = ""
    for name, value in _query_pairs(query):
        spec = _OPTIONS.get(name)
        if spec is None:
            known = ", ".join(_OPTIONS)
            if echo and previous not in SECRET_OPTIONS and not _secret_name(name):
                raise ConfigurationError(f"unknown URL option {name!r}; known options: {known}")
            raise ConfigurationError(
                f"an unknown URL option (not shown: it may be part of a password){_ENCODE_HINT}; "
                f"known options: {known}"
            )
        previous = name
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
    """Parse ``url`` or raise :class:`ConfigurationError` (never showing its password).

    No exception of this function carries a part of the URL in its chain.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigurationError(f"not a Redis URL scheme: {shown_scheme(url)}")
    try:
        parts = urlsplit(f"x://{rest}")  # urlsplit's netloc rules, without its port parsing
    except ValueError:
        parts = None  # raised below, with no context
    # An "@" after the host: a password with an unencoded "/", "?" or "#" was cut there.
    mangled = parts is None or "@" in rest[len(parts.netloc) :]
    try:
        if parts is None:
            raise ConfigurationError(f"the {scheme}:// URL cannot be parsed")
        return _parse(scheme, parts, echo=not mangled)
    except ConfigurationError as exc:
        if not mangled:
            raise
        error = ConfigurationError(f"{exc}{_ENCODE_HINT}")
    raise error  # outside the handler: no context


def _parse(scheme: str, parts: SplitResult, *, echo: bool) -> RedisURL:
    family, topology, tls = SCHEMES[scheme]
    if parts.fragment:
        raise ConfigurationError("a Redis URL has no #fragment")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    options = _options(parts.query, scheme, topology, tls, echo=echo)
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
