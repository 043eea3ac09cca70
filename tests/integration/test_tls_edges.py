"""TLS at the edges: bad clients end cleanly and are counted without blocking others, members
reached over TLS (``upstream_tls``) are verified, and curl agrees with Python's ``ssl``."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import Backend, default_handler
from tests.support.client import Connection, request
from tests.support.proxy import RunningProxy
from tests.support.tls import TestPki, open_tls, tls_connection

LISTEN = "127.0.0.1:0"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


@pytest.fixture
async def shop(pki: TestPki, backend_factory: Any, proxy_factory: Any) -> RunningProxy:
    backend = await backend_factory()
    pair = pki.issue("shop.example.com")
    return await proxy_factory({  # type: ignore[no-any-return]
        "control": {"listen": "127.0.0.1:0"},
        "tls": {"handshake_timeout": 0.5},
        "virtual_servers": [{"name": "shop", "listen": LISTEN, "domains": ["shop.example.com"],
                             "tls": pair.tls(), "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}]})


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def closed_after(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``; what the proxy answers before it closes (asserting that it does)."""
    conn = await Connection.open(port)
    try:
        conn.send(data)
        received = b""
        async with asyncio.timeout(timeout):
            while chunk := await conn.reader.read(65536):
                received += chunk
        return received
    finally:
        await conn.close()


async def served(proxy: RunningProxy, pki: TestPki) -> int:
    async with tls_connection(proxy.port, pki.client_context(), "shop.example.com") as conn:
        return (await conn.request(host="shop.example.com")).status


async def test_plain_http_to_a_tls_port_is_closed_and_counted(shop: RunningProxy,
                                                             pki: TestPki) -> None:
    await closed_after(shop.port, b"GET / HTTP/1.1\r\nHost: shop.example.com\r\n\r\n")
    await wait_for(lambda: shop.stats.tls_handshake_failures.get("plain_http") == 1)
    assert await served(shop, pki) == 200


async def test_garbage_to_a_tls_port_is_closed_and_counted(shop: RunningProxy,
                                                          pki: TestPki) -> None:
    await closed_after(shop.port, b"\x16\x03\x01\xff\xff" + b"\x00" * 300)
    await closed_after(shop.port, bytes(range(256)))
    await wait_for(lambda: shop.stats.tls_handshake_failures.get("malformed") == 2)
    assert await served(shop, pki) == 200


async def test_a_stalled_handshake_is_closed_at_the_timeout_without_blocking_others(
        shop: RunningProxy, pki: TestPki) -> None:
    stalled = await Connection.open(shop.port)
    try:
        stalled.send(b"\x16\x03\x01\x02\x00")  # a record header, then nothing
        assert await served(shop, pki) == 200  # others are served meanwhile
        assert await stalled.closed_by_peer(timeout=5.0)  # handshake_timeout 0.5 s
    finally:
        await stalled.close()
    await wait_for(lambda: shop.stats.tls_handshake_failures.get("timeout") == 1)


async def test_a_client_offering_only_tls_1_0_is_refused_and_counted(
        shop: RunningProxy, pki: TestPki) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # (let this OpenSSL send a TLS 1.0 hello)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await open_tls(shop.port, context, "shop.example.com")
    await wait_for(lambda: shop.stats.tls_handshake_failures.get("protocol_version") == 1)
    assert await served(shop, pki) == 200


async def test_a_tls_client_hello_to_a_plain_port_gets_400(backend_factory: Any,
                                                          proxy_factory: Any) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "vs", "listen": LISTEN, "routes": [
            {"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}]})
    context = ssl.create_default_context()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await open_tls(proxy.port, context, "shop.example.com")
    await wait_for(lambda: proxy.stats.client_errors.get("400") == 1)
    assert (await request(proxy.port)).status == 200


# -- upstream_tls ----------------------------------------------------------------------------


async def tls_backend(pki: TestPki, *names: str) -> Backend:
    backend = Backend(name="tls-member", handler=default_handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.ca.issue_cert(*names).configure_cert(context)
    backend.server = await asyncio.start_server(backend._serve, "127.0.0.1", 0, ssl=context)
    backend.port = backend.server.sockets[0].getsockname()[1]
    return backend


async def upstream_proxy(proxy_factory: Any, backend: Backend,
                         upstream_tls: dict[str, Any]) -> RunningProxy:
    return await proxy_factory({  # type: ignore[no-any-return]
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "vs", "listen": LISTEN, "routes": [
            {"path": "/", "group": "api"}]}],
        "groups": [{"name": "api", "members": [{"address": backend.address}],
                    "retry": {"tries": 2}, "upstream_tls": upstream_tls}]})


async def test_members_are_reached_over_verified_tls(pki: TestPki, proxy_factory: Any) -> None:
    backend = await tls_backend(pki, "api.internal")
    try:
        proxy = await upstream_proxy(proxy_factory, backend, {
            "enabled": True, "ca": pki.ca_file, "server_name": "api.internal"})
        reply = await request(proxy.port)
        assert reply.status == 200
        assert backend.requests[0].path == "/"
    finally:
        await backend.close()


async def test_a_member_certificate_that_fails_verification_is_a_connect_failure(
        pki: TestPki, proxy_factory: Any) -> None:
    backend = await tls_backend(pki, "other.internal")
    try:
        proxy = await upstream_proxy(proxy_factory, backend, {
            "enabled": True, "ca": pki.ca_file, "server_name": "api.internal"})
        reply = await request(proxy.port)
        assert reply.status == 502
        assert backend.requests == []
        assert proxy.stats.connect_failures == {("api", backend.address): 1}
        # verify: false accepts it (a member with a self-made certificate)
        proxy = await upstream_proxy(proxy_factory, backend, {"enabled": True,
                                                              "verify": False})
        assert (await request(proxy.port)).status == 200
    finally:
        await backend.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by make system-deps")
async def test_curl_with_resolve_gets_the_certificate_of_its_name(
        shop: RunningProxy, pki: TestPki) -> None:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--cacert", pki.ca_file, "--resolve",
        f"shop.example.com:{shop.port}:127.0.0.1", "-o", "/dev/null",
        "-w", "%{http_code} %{http_version} %{ssl_verify_result}",
        f"https://shop.example.com:{shop.port}/", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 0, err
    assert out.decode() == "200 1.1 0"  # verified against the test CA, ALPN http/1.1
