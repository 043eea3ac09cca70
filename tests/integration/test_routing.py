"""Routing: Host to virtual server, then path to route, on one listener shared by several
virtual servers. Each group is one distinct backend, so the backend that answers names the route.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.backends import Backend
from tests.support.client import request

TIMEOUT = 3.0
LISTEN = "127.0.0.1:0"  # every virtual server on it: they share one listener


def group(name: str, backend: Backend) -> dict[str, Any]:
    return {"name": name, "members": [{"address": backend.address}]}


@dataclass
class Routed:
    port: int
    backends: dict[str, Backend]

    async def backend_for(self, path: str, host: str = "main.test") -> str | None:
        """Name of the backend (= group) that answered, or None when the proxy answered."""
        before = {name: len(b.requests) for name, b in self.backends.items()}
        reply = await request(self.port, "GET", path, host=host, timeout=TIMEOUT)
        reached = [name for name, b in self.backends.items() if len(b.requests) > before[name]]
        if reply.status == 404 and not reached:
            return None
        assert reply.status == 200, (path, host, reply.status, reply.body)
        assert reached == [reply.header("X-Backend")], (path, host, reached)
        # the member gets the request target as sent, query string included
        assert reply.body == f"{reached[0]} GET {path}\n".encode()
        return reached[0]


GROUPS = ["exact", "api", "api_v2", "static", "png", "prio_high", "prio_low", "users", "wild",
          "fallback", "first", "second"]


@pytest.fixture
async def backends(backend_factory: Any) -> dict[str, Backend]:
    return {name: await backend_factory(name=name) for name in GROUPS}


@pytest.fixture
async def routed(backends: dict[str, Backend], proxy_factory: Any) -> Routed:
    """main.test: the path rules; *.example.com: wild; fallback.test: the marked default."""
    config = {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [
            {"name": "main", "listen": LISTEN, "domains": ["main.test"], "routes": [
                {"match": "exact", "path": "/exact", "group": "exact"},
                # the shorter prefix first: order in the file must not decide
                {"match": "prefix", "path": "/api", "group": "api"},
                {"match": "prefix", "path": "/api/v2", "group": "api_v2"},
                {"match": "prefix", "path": "/static", "group": "static"},
                {"match": "regex", "path": r"^/static/.*\.png$", "priority": 10, "group": "png"},
                {"match": "prefix", "path": "/p/longer", "group": "prio_low"},
                {"match": "prefix", "path": "/p", "priority": 5, "group": "prio_high"},
                {"match": "regex", "path": r"^/users/[0-9]+$", "group": "users"},
            ]},
            {"name": "wild", "listen": LISTEN, "domains": ["*.example.com"],
             "routes": [{"path": "/", "group": "wild"}]},
            {"name": "fallback", "listen": LISTEN, "domains": ["fallback.test"], "default": True,
             "routes": [{"path": "/", "group": "fallback"}]},
        ],
        "groups": [group(name, backends[name]) for name in GROUPS],
    }
    proxy = await proxy_factory(config)
    assert len(proxy.server.listeners) == 1
    return Routed(proxy.port, backends)


@pytest.mark.parametrize(("path", "expected"), [
    ("/exact", "exact"),
    ("/exact/", None),  # exact is not a prefix
    ("/exactly", None),
])
async def test_exact_route_matches_only_the_exact_path(routed: Routed, path: str,
                                                      expected: str | None) -> None:
    assert await routed.backend_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/api", "api"),
    ("/api/v1/items", "api"),
    ("/api/v2", "api_v2"),
    ("/api/v2/items/7", "api_v2"),
])
async def test_same_priority_longest_prefix_wins(routed: Routed, path: str,
                                                 expected: str) -> None:
    assert await routed.backend_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/p/longer/x", "prio_high"),  # priority 5 beats the longer prefix of priority 0
    ("/p/other", "prio_high"),
    ("/static/logo.png", "png"),  # a priority-10 regex beats a matching prefix
    ("/static/site.css", "static"),
])
async def test_highest_priority_wins_over_a_longer_match(routed: Routed, path: str,
                                                         expected: str) -> None:
    assert await routed.backend_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/users/42", "users"),
    ("/users/abc", None),
    ("/users/42/avatar", None),  # the regex is anchored with $
    ("/v1/users/42", None),  # and at the start of the path
])
async def test_regex_route_matches_the_path(routed: Routed, path: str,
                                            expected: str | None) -> None:
    assert await routed.backend_for(path) == expected


@pytest.mark.parametrize(("path", "expected"), [
    ("/exact?page=2", "exact"),
    ("/users/42?fields=name", "users"),
    ("/api/v2?x=/api", "api_v2"),
    ("/nothing?/exact", None),
])
async def test_query_string_is_ignored_for_matching(routed: Routed, path: str,
                                                    expected: str | None) -> None:
    assert await routed.backend_for(path) == expected


async def test_no_matching_route_gets_404_from_the_proxy(routed: Routed) -> None:
    reply = await request(routed.port, "GET", "/nowhere", host="main.test", timeout=TIMEOUT)
    assert reply.status == 404
    assert reply.body == b"404 Not Found\n"
    assert reply.header("X-Backend") is None
    assert all(not b.requests for b in routed.backends.values())


@pytest.mark.parametrize(("host", "expected"), [
    ("main.test", "exact"),
    ("MAIN.Test", "exact"),
    ("main.test:8080", "exact"),
    ("Main.TEST:80", "exact"),
    ("a.example.com", "wild"),
    ("a.b.example.com", "wild"),
    ("A.Example.COM:8443", "wild"),
    ("example.com", "fallback"),  # *.example.com does not cover example.com itself
    ("notexample.com", "fallback"),
    ("unknown.test", "fallback"),
    ("fallback.test", "fallback"),
])
async def test_host_selects_the_virtual_server(routed: Routed, host: str, expected: str) -> None:
    # /exact routes to "exact" in main and to the catch-all of wild and fallback
    assert await routed.backend_for("/exact", host=host) == expected


async def test_unknown_host_goes_to_the_default_virtual_server_even_when_not_first(
        routed: Routed) -> None:
    assert await routed.backend_for("/exact", host="nobody.invalid") == "fallback"
    assert await routed.backend_for("/exact", host="127.0.0.1") == "fallback"


async def test_without_default_the_first_virtual_server_takes_unknown_hosts(
        backends: dict[str, Backend], proxy_factory: Any) -> None:
    config = {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [
            {"name": "first", "listen": LISTEN, "domains": ["first.test"],
             "routes": [{"path": "/", "group": "first"}]},
            {"name": "second", "listen": LISTEN, "domains": ["second.test"],
             "routes": [{"path": "/", "group": "second"}]},
        ],
        "groups": [group(name, backends[name]) for name in ("first", "second")],
    }
    proxy = await proxy_factory(config)
    routed = Routed(proxy.port, {n: backends[n] for n in ("first", "second")})
    assert await routed.backend_for("/x", host="second.test") == "second"
    assert await routed.backend_for("/x", host="first.test") == "first"
    assert await routed.backend_for("/x", host="unknown.test") == "first"
    assert await routed.backend_for("/x", host="second.test.evil") == "first"
