"""A route's own rules (issue 13), through real sockets: redirect, rewrite, request and
response header rules, allow/deny, rate limiting with 429 and Retry-After (counted as a metric),
and a per-route read timeout that overrides the group's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.client import request

TIMEOUT = 5.0


async def start(proxy_factory: Any, backend: Backend, *routes: dict[str, Any]) -> Any:
    return await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:0", "routes": list(routes)}],
        "groups": [{"name": "svc", "members": [{"address": backend.address}]}],
    })


async def test_a_redirect_is_answered_by_the_proxy_with_or_without_the_path(
        backend_factory: Any, proxy_factory: Any) -> None:
    backend = await backend_factory(name="svc")
    proxy = await start(
        proxy_factory, backend,
        {"path": "/old/", "redirect": {"to": "https://new.example.com/", "status": 301,
                                       "keep_path": True}},
        {"path": "/gone", "redirect": {"to": "https://elsewhere.example.com/landing"}})
    moved = await request(proxy.port, "GET", "/old/cart?id=7", timeout=TIMEOUT)
    assert moved.status == 301
    assert moved.header("Location") == "https://new.example.com/old/cart?id=7"
    found = await request(proxy.port, "GET", "/gone/x", timeout=TIMEOUT)
    assert (found.status, found.header("Location")) == (
        302, "https://elsewhere.example.com/landing")
    assert backend.requests == []


async def test_rewrite_and_header_rules_change_what_the_member_and_the_client_see(
        backend_factory: Any, proxy_factory: Any) -> None:
    async def answer(req: ReceivedRequest, writer: asyncio.StreamWriter, _: Backend) -> None:
        writer.write(response(200, b"ok", {"X-Powered-By": "php", "Server": "member"}))

    backend = await backend_factory(name="svc", handler=answer)
    proxy = await start(
        proxy_factory, backend,
        {"path": "/svc/", "group": "svc", "rewrite": {"strip_prefix": "/svc"},
         "request_headers": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
         "response_headers": {"set": {"strict-transport-security": "max-age=31536000"},
                              "remove": ["x-powered-by"]}},
        {"path": "/v1/", "group": "svc",
         "rewrite": {"replace_prefix": {"from": "/v1", "to": "/v2"}}})
    reply = await request(proxy.port, "GET", "/svc/items?q=1",
                          headers={"X-Debug": "1", "X-Env": "dev", "X-Keep": "k"},
                          timeout=TIMEOUT)
    assert reply.status == 200
    assert reply.header("Strict-Transport-Security") == "max-age=31536000"
    assert reply.header("X-Powered-By") is None and reply.header("Server") == "member"
    seen = backend.requests[-1]
    assert seen.path == "/items?q=1"
    assert (seen.header("x-env"), seen.header("x-debug"), seen.header("x-keep")) == (
        "prod", None, "k")
    assert seen.header("x-forwarded-for") == "127.0.0.1"  # the proxy's own fields stay
    await request(proxy.port, "GET", "/v1/a", timeout=TIMEOUT)
    assert backend.requests[-1].path == "/v2/a"


async def test_allow_and_deny_refuse_other_clients_with_403(
        backend_factory: Any, proxy_factory: Any) -> None:
    backend = await backend_factory(name="svc")
    proxy = await start(
        proxy_factory, backend,
        {"path": "/inside/", "group": "svc", "allow": ["10.0.0.0/8"]},
        {"path": "/local/", "group": "svc", "allow": ["10.0.0.0/8", "127.0.0.1/32"]},
        {"path": "/blocked/", "group": "svc", "deny": ["127.0.0.0/8"]})
    assert (await request(proxy.port, "GET", "/inside/x", timeout=TIMEOUT)).status == 403
    assert (await request(proxy.port, "GET", "/local/x", timeout=TIMEOUT)).status == 200
    assert (await request(proxy.port, "GET", "/blocked/x", timeout=TIMEOUT)).status == 403
    assert len(backend.requests) == 1
    assert proxy.stats.route_refusals == {("shop", "0", "deny"): 1, ("shop", "2", "deny"): 1}


async def test_a_rate_limit_answers_429_with_retry_after_and_counts_it(
        backend_factory: Any, proxy_factory: Any) -> None:
    backend = await backend_factory(name="svc")
    proxy = await start(
        proxy_factory, backend,
        {"path": "/", "group": "svc",
         "rate_limit": {"requests_per_second": 0.01, "burst": 3, "key": "client_ip"}})
    statuses = [(await request(proxy.port, "GET", "/", timeout=TIMEOUT)) for _ in range(5)]
    assert [r.status for r in statuses] == [200, 200, 200, 429, 429]
    assert int(statuses[3].header("Retry-After") or 0) >= 1
    assert len(backend.requests) == 3
    assert proxy.stats.route_refusals == {("shop", "0", "rate_limit"): 2}


async def test_a_route_read_timeout_overrides_the_groups(
        backend_factory: Any, proxy_factory: Any) -> None:
    async def slow(req: ReceivedRequest, writer: asyncio.StreamWriter, _: Backend) -> None:
        await asyncio.sleep(1.0)  # the member's own pace, not the test's wait
        writer.write(response(200, b"late"))

    backend = await backend_factory(name="svc", handler=slow)
    proxy = await start(proxy_factory, backend,
                        {"path": "/quick/", "group": "svc", "timeouts": {"read": 0.2}},
                        {"path": "/", "group": "svc"})
    assert (await request(proxy.port, "GET", "/quick/x", timeout=TIMEOUT)).status == 504
    assert (await request(proxy.port, "GET", "/other", timeout=TIMEOUT)).status == 200
