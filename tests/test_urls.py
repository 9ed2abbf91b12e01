"""Parsing Redis-family URLs: topologies, options, and secrets kept out of messages."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chat_state import AsyncState, ConfigurationError, State
from chat_state.backend import parse_redis_url, redact_url


def test_standalone() -> None:
    url = parse_redis_url("redis://user:p%40ss@cache.example:6380/3")
    assert (url.family, url.topology, url.tls) == ("redis", "standalone", False)
    assert url.hosts == (("cache.example", 6380),)
    assert (url.db, url.username, url.password) == (3, "user", "p@ss")
    assert parse_redis_url("valkeys://h").tls is True
    assert parse_redis_url("redis://h").hosts == (("h", 6379),)
    assert parse_redis_url("redis://[::1]:7000").hosts == (("::1", 7000),)
    assert parse_redis_url("redis://:only-password@h").username is None


def test_unix() -> None:
    url = parse_redis_url("unix:///run/redis/redis.sock?db=4")
    assert (url.topology, url.path, url.db) == ("unix", "/run/redis/redis.sock", 4)


def test_cluster() -> None:
    url = parse_redis_url("rediss+cluster://:pw@n1:7000,n2:7001,n3?ssl_cert_reqs=none")
    assert (url.family, url.topology, url.tls) == ("redis", "cluster", True)
    assert url.hosts == (("n1", 7000), ("n2", 7001), ("n3", 6379))
    assert url.password == "pw"
    assert url.connection_kwargs()["ssl_cert_reqs"] == "none"
    assert parse_redis_url("valkey+cluster://n1:7000/").family == "valkey"


def test_sentinel() -> None:
    url = parse_redis_url(
        "redis+sentinel://app:pw@s1:26379,s2,s3:26380/mymaster/2?sentinel_password=spw&socket_timeout=0.5"
    )
    assert (url.topology, url.service, url.db) == ("sentinel", "mymaster", 2)
    assert url.hosts == (("s1", 26379), ("s2", 26379), ("s3", 26380))
    assert url.sentinel_kwargs()["password"] == "spw"
    assert url.connection_kwargs()["password"] == "pw"
    assert url.connection_kwargs()["socket_timeout"] == 0.5
    assert sorted(url.secrets) == ["pw", "spw"]
    assert parse_redis_url("valkeys+sentinel://s1/svc").tls is True


def test_options_are_typed() -> None:
    kwargs = parse_redis_url(
        "rediss://h?socket_connect_timeout=1.5&max_connections=20&ssl_check_hostname=false"
        "&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
    ).connection_kwargs()
    assert kwargs["socket_connect_timeout"] == 1.5
    assert kwargs["max_connections"] == 20
    assert kwargs["ssl_check_hostname"] is False
    assert (kwargs["ssl"], kwargs["ssl_ca_certs"]) == (True, "/ca.pem")
    assert kwargs["decode_responses"] is True
    defaults = parse_redis_url("redis://h").connection_kwargs()
    assert (defaults["socket_timeout"], defaults["socket_connect_timeout"]) == (10.0, 5.0)


BAD = [
    ("redis://h?decode_responses=False", "unknown URL option 'decode_responses'"),
    ("redis://h?socket_timeout=soon", "socket_timeout must be a positive number"),
    ("redis://h?socket_timeout=-1", "socket_timeout must be a positive number"),
    ("redis://h?max_connections=0", "max_connections must be a positive integer"),
    ("redis://h?ssl_ca_certs=/ca.pem", "needs a TLS scheme"),
    ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ("rediss://h?ssl_check_hostname=perhaps", "must be true or false"),
    ("redis://h?sentinel_password=x", "does not apply to redis://"),
    ("redis://h1,h2", "takes one host; for several use redis\\+cluster://"),
    ("redis://h/1/2", "path is the database number"),
    ("redis://h/x", "database number"),
    ("redis://h:99999", "port"),
    ("redis://h:abc", "port"),
    ("redis://", "names no host"),
    ("redis+cluster://h/1", "only database 0"),
    ("redis+cluster://h?db=2", "does not apply|only database 0"),
    ("redis+sentinel://s1:26379", "service_name"),
    ("redis+sentinel://s1/a/b/c", "service_name"),
    ("unix://host/path", "unix:///path/to/socket"),
    ("redis://h#frag", "fragment"),
]


@pytest.mark.parametrize(("url", "message"), BAD)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_redis_url(url)
    with pytest.raises(ConfigurationError):
        State.from_url(url)  # refused when the adapter is built, before any connection


def test_secrets_stay_out_of_errors_and_reprs() -> None:
    for url in [
        "redis://u:hunter2@h:1,h:2",
        "redis+sentinel://u:hunter2@s1/svc?sentinel_password=hunter2&bogus=1",
        "rediss+cluster://:hunter2@h?ssl_cert_reqs=nope",
    ]:
        with pytest.raises(ConfigurationError) as caught:
            parse_redis_url(url)
        assert "hunter2" not in str(caught.value)
    state = State.from_url("redis+sentinel://u:hunter2@s1,s2/svc?sentinel_password=sekrit")
    assert "hunter2" not in repr(state)
    assert "sekrit" not in repr(state)
    assert "sentinel_password=***" in repr(state)
    # The whole user info is hidden: a password may hold a ":", or have lost its own.
    assert redact_url("redis://u@h") == "redis://***@h"
    assert redact_url("user:pw@h") == "***@h"
    assert redact_url("redis://:pw@h/0") == "redis://***@h/0"
    assert "x=1&sentinel_password=***" in redact_url("redis+sentinel://s/m?x=1&sentinel_password=a")


# -- passwords in URLs that are not well formed ---------------------------------------------

#: Password text: runs of letters no message of ours has, between the characters that a
#: URL gives a meaning to (and that a base64 password has: "/", "+", "=").
_RUN = st.text(alphabet="QXZJKVW", min_size=4, max_size=6)
_SPECIAL = st.sampled_from(["/", "?", "#", "@", "&", "=", ":", "+", "%", " ", "%2", "/?"])
PASSWORDS = st.lists(st.tuples(_RUN, _SPECIAL), min_size=1, max_size=3).map(
    lambda parts: "".join(run + special for run, special in parts) + "QQQQ"
)
SCHEMES_TRIED = [
    "redis", "rediss", "valkey", "unix", "redis+cluster", "redis+sentinel", "rediss+sentinel",
    "redis-cluster", "reddis", "redis+sentinal", "REDIS", "",
]  # fmt: skip
SHAPES = [
    "{scheme}://:{pw}@127.0.0.1:6390/0",
    "{scheme}://user:{pw}@h1:1,h2:2/mymaster",
    "{scheme}://{pw}@127.0.0.1",
    "{scheme}:{pw}@127.0.0.1",
    "{scheme}://h1:1,h2:2/mymaster?sentinel_password={pw}&socket_timeout=1",
    "{scheme}://:{pw}@h1/mymaster?sentinel_password={pw}",
    "{scheme}://:{pw}@/run/redis.sock?db=1",
    "{scheme}://h1/mymaster?sentinel%5Fpassword={pw}",  # an encoded option name
    "{scheme}://h1/mymaster?Sentinel_Password={pw}&db=1",
    "user:{pw}@{scheme}://127.0.0.1",  # user info before the scheme
]


def leaks(text: str, password: str) -> list[str]:
    """The runs of ``password``'s letters that ``text`` shows."""
    runs = "".join(c if c in "QXZJKVW" else " " for c in password).split()
    return [run for run in runs if run in text]


def chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and every exception chained to it, as cause or as context."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    password=PASSWORDS,
    scheme=st.sampled_from(SCHEMES_TRIED),
    shape=st.sampled_from(SHAPES),
)
def test_no_part_of_a_password_ever_shows(password: str, scheme: str, shape: str) -> None:
    """Whatever the URL's form, well formed or not, known scheme or mistyped: no error,
    chained error, repr or redacted form shows any part of the password."""
    url = shape.format(scheme=scheme, pw=password)
    shown = [redact_url(url)]
    for facade in (State, AsyncState):
        try:
            state: Any = facade.from_url(url)
        except ConfigurationError as exc:
            shown.extend(f"{error!s} {error!r}" for error in chain(exc))
        else:
            shown.append(repr(state))
    for text in shown:
        assert not leaks(text, password), (url, text)


@pytest.mark.parametrize(
    "url",
    [
        "redis-cluster://:ab/s3cr3tPW@host:1234",  # the issue's examples
        "reddis://:ab/s3cr3tPW@host:1234",
        "redis+sentinel://:pw@h1,h2/mymaster?sentinel_password=ab&PW9xTail=1",
        "redis+sentinel://h1,h2/mymaster?sentinel_password=ab&PW9xTail",
        "redis://:pa?s3cr3tPW@host",
        "redis://:pa#s3cr3tPW@host",
        "redis://:ab/s3cr3tPW@host:1234",
    ],
)
def test_the_issues_urls_show_no_password(url: str) -> None:
    secret = "s3cr3tPW" if "s3cr3tPW" in url else "PW9xTail"
    with pytest.raises(ConfigurationError) as caught:
        State.from_url(url)
    for error in chain(caught.value):
        assert secret not in f"{error!s} {error!r}"
        assert "PW9x" not in str(error)
    assert secret not in redact_url(url)
    if "@" in url.partition("://")[2]:
        assert "percent-encode" in str(caught.value) or "unknown URL scheme" in str(caught.value)


def test_a_user_name_alone_may_be_a_password() -> None:
    url = parse_redis_url("redis://s3cr3tPW@h")
    assert url.secrets == ["s3cr3tPW"]  # scrubbed from every message of ours
    assert "s3cr3tPW" not in repr(State.from_url("redis://s3cr3tPW@h"))


@pytest.mark.parametrize("option", ["socket_timeout", "socket_connect_timeout"])
def test_timeouts_are_bounded(option: str) -> None:
    assert parse_redis_url(f"redis://h?{option}=86400").options[option] == 86400
    for value in ("86401", "1e300", "inf", "nan", "0"):
        with pytest.raises(ConfigurationError, match=f"{option} must be a positive number"):
            parse_redis_url(f"redis://h?{option}={value}")
