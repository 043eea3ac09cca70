"""TLS termination seen by a real TLS client (Python ``ssl``): the certificate chosen by SNI,
the Host still routing, 421 for a host of another certificate, ALPN, X-Forwarded-Proto, the
redirect to https, a reload that swaps certificates under open connections, the TLS version in
the access log and the metrics. Certificates are made by the test (``tests.support.tls``).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from slb.model import describe, parse_config
from slb.model.schema import KEY_WITHHELD
from tests.support.backends import Backend
from tests.support.client import Connection, request
from tests.support.proxy import RunningProxy
from tests.support.tls import Pair, TestPki, open_tls, peer_names, tls_connection

LISTEN = "127.0.0.1:0"


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


def tls_config(backend: Backend, shop: Pair, blog: Pair, fallback: Pair,
               **extra: Any) -> dict[str, Any]:
    """Three virtual servers on one TLS listener, each with its own certificate."""
    route = [{"path": "/", "group": "g"}]
    return {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [
            {"name": "shop", "listen": LISTEN, "tls": shop.tls(), "routes": route,
             "domains": ["shop.example.com", "*.shop.example.com"]},
            {"name": "blog", "listen": LISTEN, "tls": blog.tls(), "routes": route,
             "domains": ["blog.example.com", "*.example.com"]},
            {"name": "fallback", "listen": LISTEN, "tls": fallback.tls(), "routes": route,
             "domains": ["fallback.test"], "default": True},
        ],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}],
        **extra,
    }


@pytest.fixture
async def sites(pki: TestPki, backend_factory: Any, proxy_factory: Any
                ) -> tuple[RunningProxy, Backend, dict[str, Pair]]:
    backend = await backend_factory(name="site")
    pairs = {"shop": pki.issue("shop.example.com", "*.shop.example.com"),
             "blog": pki.issue("blog.example.com", "*.example.com"),
             "fallback": pki.issue("fallback.test")}
    proxy = await proxy_factory(tls_config(backend, **pairs))
    return proxy, backend, pairs


@pytest.mark.parametrize(("server_name", "names"), [
    ("shop.example.com", ["shop.example.com", "*.shop.example.com"]),  # exact
    ("a.shop.example.com", ["shop.example.com", "*.shop.example.com"]),  # longest wildcard
    ("news.example.com", ["blog.example.com", "*.example.com"]),  # the shorter wildcard
    ("unknown.test", ["fallback.test"]),  # no name matches: the default's
    (None, ["fallback.test"]),  # no SNI at all: the default's
])
async def test_the_certificate_is_chosen_by_sni(sites: Any, pki: TestPki, server_name: str | None,
                                               names: list[str]) -> None:
    proxy, _, _ = sites
    context = pki.client_context()
    if server_name == "unknown.test":
        context.check_hostname = False  # (the client knowingly accepts the default's)
    async with tls_connection(proxy.port, context, server_name) as conn:
        assert peer_names(conn) == names
        assert conn.writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"


async def test_host_routes_after_the_handshake_and_the_member_learns_https(
        sites: Any, pki: TestPki) -> None:
    proxy, backend, _ = sites
    async with tls_connection(proxy.port, pki.client_context(), "shop.example.com") as conn:
        reply = await conn.request(host="shop.example.com")
        assert reply.status == 200
        # a second request on the same connection, another name of the same certificate
        assert (await conn.request(host="x.shop.example.com")).status == 200
    assert backend.requests[-1].header("x-forwarded-proto") == "https"
    plain_proto = [r.header("x-forwarded-proto") for r in backend.requests]
    assert plain_proto == ["https", "https"]


async def test_a_host_of_another_certificate_is_misdirected(sites: Any, pki: TestPki) -> None:
    proxy, backend, _ = sites
    async with tls_connection(proxy.port, pki.client_context(), "shop.example.com") as conn:
        reply = await conn.request(host="blog.example.com")
        assert reply.status == 421  # RFC 9110 §15.5.20: retry on a connection for that name
        assert backend.requests == []
        # the connection stays usable for its own names
        assert (await conn.request(host="shop.example.com")).status == 200


async def test_reload_swaps_certificates_and_keeps_open_connections(
        sites: Any, pki: TestPki) -> None:
    proxy, backend, pairs = sites
    before = await open_tls(proxy.port, pki.client_context(), "shop.example.com")
    after: Connection | None = None
    try:
        assert (await before.request(host="shop.example.com")).status == 200
        renewed = pki.issue("shop.example.com", "*.shop.example.com", "renewed.shop.example.com")
        config = tls_config(backend, renewed, pairs["blog"], pairs["fallback"])
        await proxy.node.plane.apply(parse_config(copy.deepcopy(config)))
        after = await open_tls(proxy.port, pki.client_context(), "shop.example.com")
        assert "renewed.shop.example.com" in peer_names(after)
        assert "renewed.shop.example.com" not in peer_names(before)
        # the connection made before the swap still serves, with its certificate
        assert (await before.request(host="shop.example.com")).status == 200
        assert (await after.request(host="shop.example.com")).status == 200
    finally:
        await before.close()
        if after is not None:
            await after.close()


async def test_redirect_to_https_answers_308_with_the_same_target(
        backend_factory: Any, proxy_factory: Any) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [
            {"name": "plain", "listen": LISTEN, "domains": ["shop.example.com"],
             "redirect_to_https": 8443},
            {"name": "other", "listen": LISTEN, "domains": ["a.test"],
             "redirect_to_https": 443}],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}]})
    conn = await Connection.open(proxy.port)
    try:
        reply = await conn.request(path="/cart/1?x=2&y", host="shop.example.com:8080")
        assert reply.status == 308
        assert reply.header("Location") == "https://shop.example.com:8443/cart/1?x=2&y"
        reply = await conn.request(path="/", host="shop.example.com")  # kept alive
        assert reply.header("Location") == "https://shop.example.com:8443/"
    finally:
        await conn.close()
    reply = await request(proxy.port, path="/p", host="a.test")
    assert reply.header("Location") == "https://a.test/p"  # 443 is not written
    assert backend.requests == []


async def test_access_log_and_metrics_carry_the_tls_version(
        pki: TestPki, backend_factory: Any, proxy_factory: Any, tmp_path: Path) -> None:
    backend = await backend_factory()
    log = tmp_path / "access.log"
    pair = pki.issue("shop.example.com")
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"}, "access_log": {"enabled": True, "path": str(log)},
        "virtual_servers": [{"name": "shop", "listen": LISTEN, "domains": ["shop.example.com"],
                             "tls": pair.tls(), "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}]})
    async with tls_connection(proxy.port, pki.client_context(), "shop.example.com") as conn:
        assert (await conn.request(host="shop.example.com")).status == 200
    proxy.server.ctx.access_log.flush()
    assert log.read_text().rstrip().endswith("tls=TLSv1.3")
    assert proxy.stats.tls_handshakes == {"TLSv1.3": 1}


async def test_metrics_show_expiry_and_handshakes_and_the_control_api_hides_keys(
        pki: TestPki, backend_factory: Any, proxy_factory: Any) -> None:
    backend = await backend_factory()
    pair = pki.issue("shop.example.com", days=20)
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": LISTEN, "domains": ["shop.example.com"],
                             "tls": pair.inline(), "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": backend.address}]}]})
    assert await served_once(proxy, pki) == 200
    reply = await request(proxy.control_port, "GET", "/metrics", host="127.0.0.1")
    families = {f.name: f for f in text_string_to_metric_families(reply.body.decode())}
    [expiry] = families["slb_tls_certificate_expiry_timestamp_seconds"].samples
    assert expiry.labels == {"virtual_server": "shop", "subject": describe(
        Path(pair.certificate).read_bytes()).subject}
    assert abs(expiry.value - (time.time() + 20 * 86400)) < 3 * 3600
    [handshakes] = families["slb_tls_handshakes"].samples
    assert (handshakes.labels, handshakes.value) == ({"version": "TLSv1.3"}, 1.0)
    view = await request(proxy.control_port, "GET", "/v1/config", host="127.0.0.1")
    assert view.status == 200
    assert b"PRIVATE KEY" not in view.body
    assert json.loads(view.body)["snapshot"]["virtual_servers"][0]["tls"]["key_pem"] \
        == KEY_WITHHELD


async def served_once(proxy: RunningProxy, pki: TestPki) -> int:
    async with tls_connection(proxy.port, pki.client_context(), "shop.example.com") as conn:
        return (await conn.request(host="shop.example.com")).status
