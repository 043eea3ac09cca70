"""The keys of issue 13 as ``slb check`` sees them: every mistake reported with its field path."""

from __future__ import annotations

from typing import Any

import pytest

from slb.model import ConfigErrors, parse_config


def document(route: dict[str, Any], **group: Any) -> dict[str, Any]:
    return {
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:8080",
                             "routes": [{"path": "/", "group": "web"}, route]}],
        "groups": [{"name": "web", **group}, {"name": "canary"}],
    }


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(data)
    return info.value.lines()


ROUTE = "virtual_servers[0].routes[1]"


@pytest.mark.parametrize(("route", "expected"), [
    ({"path": "/a", "split": [{"group": "web", "weight": 1}, {"group": "nope", "weight": 1}]},
     f"{ROUTE}.split[1].group: unknown group 'nope'"),
    ({"path": "/a", "split": [{"group": "web", "weight": 0}, {"group": "canary", "weight": 0}]},
     f"{ROUTE}: split weights sum to 0: no group would take traffic"),
    ({"path": "/a", "split": [{"group": "web", "weight": -1}]},
     f"{ROUTE}.split[0].weight: Input should be greater than or equal to 0"),
    ({"match": "regex", "path": "^/(a", "group": "web"},
     f"{ROUTE}.path: invalid regular expression: missing ), unterminated subpattern at "
     "position 2"),
    ({"path": "/a", "group": "web", "when": {"client_ips": ["10.0.0.0/8", "10.0.0.300/8"]}},
     f"{ROUTE}.when.client_ips[1]: invalid CIDR '10.0.0.300/8': expected an address or "
     "address/prefix"),
    ({"path": "/a", "group": "web", "allow": ["nonsense"]},
     f"{ROUTE}.allow[0]: invalid CIDR 'nonsense': expected an address or address/prefix"),
    ({"path": "/a", "group": "web", "redirect": {"to": "https://x/"}},
     f"{ROUTE}: a route needs exactly one of group, split, redirect (it has group and "
     "redirect)"),
    ({"path": "/a"}, f"{ROUTE}: a route needs exactly one of group, split, redirect"),
    ({"path": "/a", "group": "web", "sticky_cookie": "s"},
     f"{ROUTE}: sticky_cookie is used with split only"),
    ({"path": "/a", "group": "web", "when": {}},
     f"{ROUTE}.when: an empty `when` always holds: remove it or name a condition"),
    ({"path": "/a", "group": "web", "when": {"headers": {"bad name": "1"}}},
     f"{ROUTE}.when.headers: invalid field name 'bad name'"),
    ({"path": "/a", "group": "web", "request_headers": {"set": {"Host": "x"}}},
     f"{ROUTE}.request_headers: 'Host' is set by the proxy and cannot be changed"),
    ({"path": "/a", "group": "web", "rewrite": {"strip_prefix": "/a",
                                               "replace_prefix": {"from": "/a", "to": "/b"}}},
     f"{ROUTE}.rewrite: expected exactly one of strip_prefix, replace_prefix"),
    ({"path": "/a", "group": "web", "rate_limit": {"requests_per_second": 0}},
     f"{ROUTE}.rate_limit.requests_per_second: Input should be greater than 0"),
    ({"path": "/a", "group": "web", "rate_limit": {"requests_per_second": 1, "key": "ip"}},
     f"{ROUTE}.rate_limit.key: invalid key 'ip': expected client_ip, header:NAME or route"),
    ({"path": "/a", "group": "web", "redirect_to": "x"}, f"{ROUTE}.redirect_to: unknown field"),
])
def test_each_mistake_is_reported_at_its_field(route: dict[str, Any], expected: str) -> None:
    assert expected in errors_of(document(route))


@pytest.mark.parametrize(("group", "expected"), [
    ({"algorithm": "hash"}, "groups[0]: algorithm hash needs a hash_key"),
    ({"algorithm": "hash", "hash_key": "cookie"}, "groups[0].hash_key: invalid hash_key"),
    ({"algorithm": "wrr", "hash_key": "path"},
     "groups[0]: hash_key is used by algorithm hash only, not wrr"),
])
def test_hash_settings_are_checked(group: dict[str, Any], expected: str) -> None:
    assert any(line.startswith(expected)
               for line in errors_of(document({"path": "/a", "group": "web"}, **group)))


def test_the_issues_example_is_valid() -> None:
    config = parse_config({
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:8080", "routes": [
            {"match": "prefix", "path": "/api/", "group": "api-canary",
             "when": {"headers": {"x-canary": "1"}, "cookies": {"canary": "1"},
                      "query": {"beta": "1"}, "client_ips": ["10.0.0.0/8"]}},
            {"match": "prefix", "path": "/api/", "sticky_cookie": "slb_split",
             "split": [{"group": "api-v2", "weight": 10}, {"group": "api-v1", "weight": 90}]},
            {"match": "prefix", "path": "/old/",
             "redirect": {"to": "https://new.example.com/", "status": 301, "keep_path": True}},
            {"match": "prefix", "path": "/svc/", "group": "svc",
             "rewrite": {"strip_prefix": "/svc"},
             "request_headers": {"set": {"x-env": "prod"}, "remove": ["x-debug"]},
             "response_headers": {"set": {"strict-transport-security": "max-age=31536000"}},
             "allow": ["10.0.0.0/8", "127.0.0.1/32"],
             "rate_limit": {"requests_per_second": 100, "burst": 200, "key": "client_ip"},
             "timeouts": {"read": 5}},
        ]}],
        "groups": [{"name": n} for n in ("api-canary", "api-v1", "api-v2", "svc")] + [
            {"name": "carts", "algorithm": "hash", "hash_key": "cookie:session"},
            {"name": "legacy", "algorithm": "ip_hash"}],
    })
    assert config.virtual_servers[0].routes[1].groups() == ["api-v2", "api-v1"]
    assert config.virtual_servers[0].routes[3].rewrite is not None
    assert config.virtual_servers[0].routes[3].rewrite.apply("/svc/items") == "/items"
