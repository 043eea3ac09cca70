"""``slb.model.hosts``: the admin's ``resolve`` and the proxy's compiled router always agree."""

from __future__ import annotations

from typing import Any

import pytest

from slb.metrics import Stats
from slb.model import Config, Resolution, bare_host, parse_config, resolve, route_sort_key
from slb.proxy.compile import build_runtime

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


def router_answer(cfg: Config, listen: str, host: str, path: str) -> tuple[str | None, str | None]:
    table = build_runtime(cfg, None, Stats(), set()).tables[listen]
    vhost = table.virtual_host(host)
    target = vhost.match(path) if vhost is not None else None
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
        LISTEN, "shop", "domain shop.example.com", 1, "api")
    assert resolve(cfg, "a.eu.example.com", "/", LISTEN) == Resolution(
        LISTEN, "deep", "wildcard *.eu.example.com", 0, "deep")
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
