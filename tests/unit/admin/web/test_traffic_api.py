"""Routes with conditions, splits and rules through the API (issue 13): edited as drafts,
checked with the data plane's own schema, resolved by the URL tool with request facts, and a
split's weights changed and activated in one audited step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin.domain.service import AdminService
from admin.domain.snapshots import build_snapshot
from tests.unit.admin.web.test_api import seeded_api

SEED: dict[str, list[dict[str, Any]]] = {
    "cluster": [{"name": "c1"}],
    "group": [{"name": n, "members": [{"address": f"10.0.0.{i}:80"}]}
              for i, n in enumerate(("v1", "v2", "canary"), start=1)],
    "virtual_server": [{"name": "site", "cluster": "c1", "listen": "127.0.0.1:8080",
                        "domains": ["shop.test"]}],
    "route": [
        {"name": "api", "virtual_server": "site", "path": "/api/",
         "split": [{"group": "v2", "weight": 10}, {"group": "v1", "weight": 90}],
         "sticky_cookie": "slb_split"},
        {"name": "api-canary", "virtual_server": "site", "path": "/api/", "group": "canary",
         "when": {"headers": {"x-canary": "1"}, "client_ips": ["10.0.0.0/8"]}},
        {"name": "old", "virtual_server": "site", "path": "/old/",
         "redirect": {"to": "https://new.shop.test/", "status": 301, "keep_path": True}},
    ],
}


@pytest.fixture
async def traffic(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AdminService]]:
    async with seeded_api(str(tmp_path / "admin.db"), SEED) as seeded:
        yield seeded


async def test_routes_with_traffic_rules_reach_the_snapshot(
        traffic: tuple[httpx.AsyncClient, AdminService]) -> None:
    _, service = traffic
    config = build_snapshot(service.draft_content(), "c1", 2,
                            service.members_for(service.draft_content()))
    routes = config.virtual_servers[0].routes
    assert [share.group for share in routes[0].split or []] == ["v2", "v1"]
    assert routes[0].sticky_cookie == "slb_split"
    assert routes[1].when is not None and routes[1].group == "canary"
    assert routes[2].redirect is not None and routes[2].group is None
    assert {g.name for g in config.groups} == {"v1", "v2", "canary"}  # split groups included


@pytest.mark.parametrize(("route", "error"), [
    ({"path": "/x", "group": "v1", "redirect": {"to": "https://x/"}},
     "a route needs exactly one of group, split, redirect (it has group and redirect)"),
    ({"path": "/x", "split": [{"group": "v1", "weight": 1}, {"group": "gone", "weight": 1}]},
     "split[1].group: no group named 'gone'"),
    ({"path": "/x", "group": "v1", "allow": ["10.0.0.0/33"]},
     "allow.0: invalid CIDR '10.0.0.0/33': expected an address or address/prefix"),
])
async def test_a_bad_route_draft_is_refused_with_its_field(
        traffic: tuple[httpx.AsyncClient, AdminService], route: dict[str, Any],
        error: str) -> None:
    client, _ = traffic
    reply = await client.post("/api/v1/routes", json={
        "name": "bad", "virtual_server": "site", **route, "reason": "try"})
    assert reply.status_code == 400, reply.text
    assert any(error in line for line in reply.json()["details"]), reply.json()


async def test_a_group_in_a_split_cannot_be_deleted(
        traffic: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = traffic
    reply = await client.delete("/api/v1/groups/v2", params={"reason": "cleanup"})
    assert reply.status_code == 409
    assert "route/api" in reply.json()["message"]


async def test_the_url_tool_takes_headers_cookies_and_client_ip_and_says_why(
        traffic: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = traffic
    url = "http://shop.test:8080/api/cart"
    plain = (await client.get("/api/v1/resolve", params={"url": url})).json()["answers"][0]
    assert plain["route"]["name"] == "api" and plain["groups"] == ["v2", "v1"]
    assert plain["passed_over"] == ["routes[1]: header x-canary is not '1'"]
    canary = (await client.get("/api/v1/resolve", params={
        "url": url, "header": ["X-Canary: 1"], "client_ip": "10.9.9.9"})).json()["answers"][0]
    assert (canary["route"]["name"], canary["group"]) == ("api-canary", "canary")
    outside = (await client.get("/api/v1/resolve", params={
        "url": url, "header": ["X-Canary: 1"], "client_ip": "192.168.0.1"})).json()
    assert outside["answers"][0]["passed_over"] == [
        "routes[1]: client address 192.168.0.1 is not in client_ips"]
    bad = await client.get("/api/v1/resolve", params={"url": url, "header": ["no colon"],
                                                      "client_ip": "x"})
    assert bad.status_code == 400
    assert bad.json()["details"] == ["header[0]: expected 'name: value', got 'no colon'",
                                    "client_ip: 'x' is not an IP address"]


async def test_a_split_step_changes_the_weights_and_activates_with_its_reason(
        traffic: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, service = traffic
    row = (await client.get("/api/v1/routes/api")).json()
    reply = await client.post("/api/v1/routes/api/split", json={
        "weights": {"v2": 50, "v1": 50}, "row_version": row["row_version"],
        "reason": "canary step 2: 50%"})
    assert reply.status_code == 200, reply.text
    version = reply.json()["version"]
    assert version == 2 and (await client.get("/api/v1/draft")).json()["pending"] is False
    active = service.store.version(version)
    assert [r["split"] for r in active["content"]["route"] if r["name"] == "api"] == [
        [{"group": "v2", "weight": 50}, {"group": "v1", "weight": 50}]]
    assert active["reason"] == "canary step 2: 50%"
    audit = (await client.get("/api/v1/audit", params={"target": "route/api"})).json()
    assert audit["items"][0]["reason"] == "canary step 2: 50%"


async def test_a_split_step_refuses_bad_weights_and_other_pending_drafts(
        traffic: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = traffic
    row = (await client.get("/api/v1/routes/api")).json()
    body = {"row_version": row["row_version"], "reason": "step"}
    bad = await client.post("/api/v1/routes/api/split",
                            json={**body, "weights": {"v2": -1, "v9": 1}})
    assert bad.status_code == 400
    assert bad.json()["details"] == ["weights.v9: not a group of the split",
                                    "weights.v1: missing",
                                    "weights.v2: expected a whole number 0-10000"]
    no_split = await client.post("/api/v1/routes/api-canary/split",
                                 json={**body, "weights": {"canary": 1}})
    assert no_split.status_code == 400
    group = (await client.get("/api/v1/groups/v1")).json()
    await client.post("/api/v1/groups/v1/weight", json={
        "addresses": ["10.0.0.1:80"], "weight": 3, "row_version": group["row_version"],
        "reason": "unrelated"})
    pending = await client.post("/api/v1/routes/api/split",
                                json={**body, "weights": {"v2": 20, "v1": 80}})
    assert pending.status_code == 409
