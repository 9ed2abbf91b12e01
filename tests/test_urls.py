"""Parsing Redis-family URLs: topologies, options, and secrets kept out of messages."""

from __future__ import annotations

import pytest

from chat_state import ConfigurationError, State
from chat_state._urls import parse_redis_url
from chat_state.registry import redact_url


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
    assert redact_url("redis://u@h") == "redis://u@h"
    assert redact_url("redis://:pw@h/0") == "redis://:***@h/0"
    assert "x=1&sentinel_password=***" in redact_url("redis+sentinel://s/m?x=1&sentinel_password=a")
