"""TLS on a standalone redis-server, with a throwaway CA made by the tests (trustme)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

from chat_state import AsyncState, BackendError, State
from chat_state.testing import RedisServer, free_port

pytestmark = pytest.mark.anyio


@dataclass
class TLSServer:
    port: int
    ca: Path
    client_cert: Path
    client_key: Path
    other_ca: Path

    def url(self, scheme: str = "rediss", **options: str) -> str:
        query = "&".join(f"{name}={value}" for name, value in options.items())
        return f"{scheme}://:tls-pw@localhost:{self.port}/0" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSServer]:
    directory = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    client_cert = ca.issue_cert("chat-state-tests")
    paths = {
        "ca": directory / "ca.pem",
        "other_ca": directory / "other-ca.pem",
        "server_chain": directory / "server.pem",
        "server_key": directory / "server.key",
        "client_cert": directory / "client.pem",
        "client_key": directory / "client.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    other_ca.cert_pem.write_to_path(str(paths["other_ca"]))
    server_cert.cert_chain_pems[0].write_to_path(str(paths["server_chain"]))
    server_cert.private_key_pem.write_to_path(str(paths["server_key"]))
    client_cert.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client_cert.private_key_pem.write_to_path(str(paths["client_key"]))
    tls_port = free_port()
    arguments = [
        "--requirepass", "tls-pw",
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(paths["server_chain"]),
        "--tls-key-file", str(paths["server_key"]),
        "--tls-ca-cert-file", str(paths["ca"]),
        "--tls-auth-clients", "optional",
    ]  # fmt: skip
    with RedisServer(arguments):
        yield TLSServer(
            tls_port, paths["ca"], paths["client_cert"], paths["client_key"], paths["other_ca"]
        )


async def roundtrip(url: str, facade: str) -> Any:
    if facade == "sync":
        with State.from_url(url) as state:
            state.set("tls", {"secure": "ja"})
            return state.get("tls")
    async with AsyncState.from_url(url) as state:
        await state.set("tls", {"secure": "ja"})
        return await state.get("tls")


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_tls_with_the_right_ca(tls_server: TLSServer, facade: str) -> None:
    url = tls_server.url(ssl_ca_certs=str(tls_server.ca))
    assert await roundtrip(url, facade) == {"secure": "ja"}


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_tls_with_a_client_certificate(tls_server: TLSServer, facade: str) -> None:
    url = tls_server.url(
        ssl_ca_certs=str(tls_server.ca),
        ssl_certfile=str(tls_server.client_cert),
        ssl_keyfile=str(tls_server.client_key),
    )
    assert await roundtrip(url, facade) == {"secure": "ja"}


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_a_wrong_ca_is_refused(tls_server: TLSServer, facade: str) -> None:
    url = tls_server.url(ssl_ca_certs=str(tls_server.other_ca))
    with pytest.raises(BackendError, match=r"(?i)certificate verify failed") as caught:
        await roundtrip(url, facade)
    assert "tls-pw" not in str(caught.value)


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_the_system_trust_store_does_not_know_a_private_ca(
    tls_server: TLSServer, facade: str
) -> None:
    with pytest.raises(BackendError, match=r"(?i)certificate verify failed"):
        await roundtrip(tls_server.url(), facade)


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_verification_can_be_turned_off_explicitly(
    tls_server: TLSServer, facade: str
) -> None:
    url = tls_server.url(ssl_cert_reqs="none", ssl_check_hostname="false")
    assert await roundtrip(url, facade) == {"secure": "ja"}


@pytest.mark.parametrize("facade", ["sync", "async"])
async def test_plain_text_to_a_tls_port_fails_cleanly(tls_server: TLSServer, facade: str) -> None:
    with pytest.raises(BackendError):
        await roundtrip(tls_server.url(scheme="redis"), facade)
