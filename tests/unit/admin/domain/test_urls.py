"""Which group serves a URL, and the order a virtual server tries its routes, as the proxy's own
routing code answers them (domain/urls.py)."""

from __future__ import annotations

from typing import Any

import pytest

from admin.domain.errors import Invalid
from admin.domain.urls import Url, ordered_routes, parse_url, resolve_url

SITE = {"name": "site", "cluster": "c1", "listen": "127.0.0.1:8080",
        "domains": ["shop.test", "*.shop.test"]}
CONTENT: dict[str, list[dict[str, Any]]] = {
    "cluster": [{"name": "c1"}],
    "virtual_server": [SITE, {"name": "fallback", "cluster": "c1", "listen": "127.0.0.1:8080",
                              "domains": [], "default": True}],
    "route": [{"name": "root", "virtual_server": "site", "path": "/", "group": "web"},
              {"name": "api", "virtual_server": "site", "path": "/api/", "group": "api"},
              {"name": "any", "virtual_server": "fallback", "path": "/", "group": "web"}],
    "group": [{"name": "web", "members": []}, {"name": "api", "members": []}],
}


@pytest.mark.parametrize(("text", "url"), [
    ("shop.test/api/x", Url("shop.test", "/api/x", 80)),
    ("https://shop.test", Url("shop.test", "/", 443)),
    ("http://user@shop.test:8080/a", Url("shop.test:8080", "/a", 8080)),
])
def test_parse_url_reads_host_path_and_port(text: str, url: Url) -> None:
    assert parse_url(text) == url


@pytest.mark.parametrize("text", ["ftp://shop.test/", "http://", "http://shop.test:port/",
                                  "hello world", "not a url!!", "12345", "", "shop_test/x"])
def test_parse_url_refuses_what_is_not_an_http_url(text: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_url(text)
    assert caught.value.status == 400 and caught.value.errors[0].startswith("url: ")


@pytest.mark.parametrize(("host", "path", "server", "matched_by", "group"), [
    ("shop.test", "/api/cart", "site", "domain shop.test", "api"),
    ("a.shop.test", "/", "site", "wildcard *.shop.test", "web"),
    ("elsewhere.test", "/api/", "fallback", "default virtual server of the listener", "web"),
])
def test_resolve_url_answers_as_the_proxy_routes(host: str, path: str, server: str,
                                                 matched_by: str, group: str) -> None:
    [answer] = resolve_url(CONTENT, "c1", Url(host, path, 8080)) or []
    assert (answer.listen, answer.virtual_server, answer.matched_by, answer.group) == (
        "127.0.0.1:8080", server, matched_by, group)


def test_routes_are_listed_in_the_order_the_proxy_tries_them() -> None:
    routes = ordered_routes(CONTENT, SITE) or []
    assert [r["name"] for r in routes] == ["api", "root"]  # the longer prefix first


def test_a_cluster_that_does_not_compile_has_no_answer() -> None:
    broken = {**CONTENT, "group": []}  # routes name missing groups
    assert resolve_url(broken, "c1", Url("shop.test", "/", 8080)) is None
    assert ordered_routes(broken, SITE) is None
