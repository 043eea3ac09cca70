"""``slb.model.hosts``: the admin's ``resolve`` and the proxy's compiled router always agree."""

from __future__ import annotations

from typing import Any

import pytest

from slb.metrics import Stats
from slb.model import Config, Resolution, bare_host, parse_config, resolve, route_sort_key
from slb.model.conditions import FactsView
from slb.proxy.compile import build_runtime
from slb.proxy.exchange import Exchange
from slb.proxy.fields import COLON, CRLF

LISTEN = "127.0.0.1:8080"
OTHER = "127.0.0.1:9090"


def config(*servers: dict[str, Any]) -> Config:
    groups = sorted({r["group"] for vs in servers for r in vs.get("routes", [])})
    return parse_config({"groups": [{"name": g} for g in groups],
                         "virtual_servers": list(servers)})


def vs(name: str, routes: list[tuple[str, str, int, str]], listen: str = LISTEN,
       domains: list[str] | None = None, default: bool = False) -> dict[str, Any]:
    return {"name": name, "listen": listen, "domains": domains or [], "default": default,
            "routes": [{"match": m, "path": p, "priority": pr, "group": g}
                       for m, p, pr, g in routes]}


CONFIGS = {
    "one server": config(vs("only", [("prefix", "/", 0, "web")])),
    "domains and wildcards": config(
        vs("shop", [("prefix", "/", 0, "shop"), ("prefix", "/api", 0, "api")],
           domains=["shop.example.com"]),
        vs("any", [("exact", "/health", 0, "ops"), ("regex", "/img/.*\\.png", 0, "img")],
           domains=["*.example.com"]),
        vs("deep", [("prefix", "/", 0, "deep")], domains=["*.eu.example.com"]),
        vs("fallback", [("prefix", "/static", 0, "static")], default=True),
        vs("elsewhere", [("prefix", "/", 0, "other")], listen=OTHER, domains=["shop.example.com"]),
    ),
    "priorities": config(vs("p", [
        ("prefix", "/a", 0, "short"), ("prefix", "/a/b", 0, "long"), ("regex", "/a/b/c", 0, "re"),
        ("prefix", "/", 5, "high"), ("exact", "/x", 5, "exact-high"),
    ], domains=["p.example.com"])),
}
HOSTS = ["shop.example.com", "SHOP.Example.COM:8080", "shop.example.com.", "a.example.com",
         "x.eu.example.com", "example.com", "unknown.test", "[::1]:8080", "10.0.0.1", ""]
PATHS = ["/", "/api/cart", "/health", "/health/x", "/img/a.png", "/static/x", "/a", "/a/b/c",
         "/x", "/nothing"]


def exchange(target: str, headers: dict[str, str] | None = None) -> Exchange:
    """An exchange as the parser callbacks leave it: the target and the forwarded fields."""
    ex = Exchange(0.0)
    ex.url = target.encode()
    ex.path = target.partition("?")[0]
    for name, value in (headers or {}).items():
        ex.parts += (name.encode(), COLON, value.encode(), CRLF)
    return ex


def router_answer(cfg: Config, listen: str, host: str, path: str,
                  headers: dict[str, str] | None = None, peer: str = "127.0.0.1"
                  ) -> tuple[str | None, str | None]:
    table = build_runtime(cfg, None, Stats(), set()).tables[listen]
    vhost = table.virtual_host(host)
    route = vhost.match(path, exchange(path, headers), peer.encode()) \
        if vhost is not None else None
    target = route.target if route is not None else None
    return (vhost.name if vhost else None, target.pool.name if target else None)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resolve_gives_the_proxy_routers_answer(name: str) -> None:
    cfg = CONFIGS[name]
    for listen in sorted({v.listen for v in cfg.virtual_servers}):
        for host in HOSTS:
            for path in PATHS:
                found = resolve(cfg, host, path, listen)
                assert found is not None
                assert (found.virtual_server, found.group) == router_answer(
                    cfg, listen, host, path), (listen, host, path)


def test_resolve_says_how_the_host_matched_and_which_route() -> None:
    cfg = CONFIGS["domains and wildcards"]
    assert resolve(cfg, "Shop.example.com:8080", "/api/x", LISTEN) == Resolution(
        LISTEN, "shop", "domain shop.example.com", 1, "api", ("api",))
    assert resolve(cfg, "a.eu.example.com", "/", LISTEN) == Resolution(
        LISTEN, "deep", "wildcard *.eu.example.com", 0, "deep", ("deep",))
    assert resolve(cfg, "example.com", "/nothing", LISTEN) == Resolution(
        LISTEN, "fallback", "default virtual server of the listener", None, None)


def test_resolve_without_a_listener_uses_the_hosts_port() -> None:
    cfg = CONFIGS["domains and wildcards"]
    found = resolve(cfg, "shop.example.com:9090", "/")
    assert found is not None and (found.listen, found.group) == (OTHER, "other")
    assert resolve(cfg, "shop.example.com", "/") is None  # nothing listens on port 80
    assert resolve(cfg, "shop.example.com", "/", "127.0.0.1:1") is None


def test_bare_host_drops_case_port_and_trailing_dot_but_keeps_ipv6_brackets() -> None:
    assert bare_host("Shop.Example.com.:8080") == "shop.example.com"
    assert bare_host("[::1]") == "[::1]"
    assert bare_host("[::1]:80") == "[::1]"


def test_route_order_is_priority_then_plain_before_regex_then_longest_then_order() -> None:
    keys = {name: route_sort_key(match, path, priority, order) for name, (match, path, priority,
            order) in {"short": ("prefix", "/a", 0, 0), "long": ("prefix", "/a/bc", 0, 1),
                       "regex": ("regex", "/a/bcdef", 0, 2), "high": ("prefix", "/", 1, 3),
                       "twin": ("prefix", "/b", 0, 4)}.items()}
    assert sorted(keys, key=keys.__getitem__) == ["high", "long", "short", "twin", "regex"]


# -- route conditions (issue 13): the admin's resolve and the router agree on them too --------

CANARY = parse_config({
    "groups": [{"name": g} for g in ("canary", "ipcanary", "beta", "stable", "both")],
    "virtual_servers": [{"name": "shop", "listen": LISTEN, "routes": [
        # the plain route first in the file: the conditional ones must still be tried before it
        {"path": "/api/", "group": "stable"},
        {"path": "/api/", "group": "canary", "when": {"headers": {"X-Canary": "1"}}},
        {"path": "/api/", "group": "beta", "when": {"query": {"beta": "1"},
                                                     "cookies": {"tier": "*"}}},
        {"path": "/api/", "group": "ipcanary", "when": {"client_ips": ["10.0.0.0/8"]}},
        {"path": "/api/x", "group": "both",
         "when": {"headers": {"x-canary": "*"}, "client_ips": ["192.168.1.0/24"]}},
    ]}],
})
REQUESTS = [  # (target, headers, client address)
    ("/api/a", {}, "127.0.0.1"),
    ("/api/a", {"x-canary": "1"}, "127.0.0.1"),
    ("/api/a", {"X-CANARY": "2"}, "127.0.0.1"),
    ("/api/a?beta=1", {"Cookie": "a=b; tier=gold"}, "127.0.0.1"),
    ("/api/a?beta=1", {}, "127.0.0.1"),
    ("/api/a?beta=2", {"cookie": "tier=x"}, "127.0.0.1"),
    ("/api/a", {}, "10.1.2.3"),
    ("/api/x", {"x-canary": "0"}, "192.168.1.7"),
    ("/api/x", {"x-canary": "0"}, "192.168.2.7"),
    ("/other", {"x-canary": "1"}, "10.0.0.1"),
]


@pytest.mark.parametrize(("target", "headers", "peer"), REQUESTS)
def test_conditions_give_the_same_answer_in_resolve_and_the_router(
        target: str, headers: dict[str, str], peer: str) -> None:
    path, _, query = target.partition("?")
    facts = FactsView(headers, {}, query, peer)
    found = resolve(CANARY, "shop", path, LISTEN, facts)
    assert found is not None
    assert (found.virtual_server, found.group) == router_answer(
        CANARY, LISTEN, "shop", target, headers, peer)


def test_a_route_with_conditions_goes_before_a_plain_one_and_resolve_says_why_not() -> None:
    plain = resolve(CANARY, "shop", "/api/a", LISTEN, FactsView({"x-canary": "2"}, {}))
    assert plain is not None and plain.group == "stable"
    assert plain.passed_over == (
        "routes[1]: header x-canary is not '1'",
        "routes[2]: cookie tier is not present",
        "routes[3]: client address (none) is not in client_ips",
    )
    canary = resolve(CANARY, "shop", "/api/a", LISTEN, FactsView({}, {"tier": "t"}, "beta=1"))
    assert canary is not None and canary.group == "beta"


def test_conditions_do_not_hold_when_the_url_tool_gives_no_request_facts() -> None:
    found = resolve(CANARY, "shop", "/api/a", LISTEN)
    assert found is not None and found.group == "stable"
    assert found.passed_over[0] == "routes[1]: no request facts given"
