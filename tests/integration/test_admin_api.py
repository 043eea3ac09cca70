"""The admin's REST API over real HTTP, with real admin-managed proxy nodes and real backends.

The admin runs in-process (uvicorn on 127.0.0.1:0, a tmp SQLite store, one token per role:
``vera`` viewer, ``otto`` operator, ``ada`` admin). What an operation does to traffic is checked
through the node's data port: each backend answers with its own name.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.admin import (
    LISTEN,
    AdminFactory,
    NodeFactory,
    NodeSite,
    SiteFactory,
    admin_factory,
    applied_version,
    converge,
    node_body,
    node_factory,
    nodes_in_sync,
    served_by,
    site_factory,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend, ReceivedRequest, default_handler, response

__all__ = ["admin_factory", "node_factory", "site_factory"]  # the fixtures this module uses

class Site(NodeSite):
    """Backends ``a`` and ``b`` in group ``web`` behind node ``n1``, activated from the seed."""

    async def change(self, method: str, path: str, client: httpx.AsyncClient | None = None,
                     **kwargs: Any) -> httpx.Response:
        """A call that changes what the node serves: returns once the node applied it."""
        async with self.node_applies():
            reply = await (client or self.operator).request(method, path, **kwargs)
            assert reply.status_code == 200, reply.text
        return reply


async def start_site(site_factory: SiteFactory, groups: dict[str, list[str]] | None = None,
                     routes: dict[str, str] | None = None, a_handler: Any = None,
                     **group_settings: Any) -> Site:
    site: Site = await site_factory(groups or {"web": ["a", "b"]}, routes, make=Site,
                                    a_handler=a_handler, group_settings=group_settings)
    return site


@pytest.fixture
async def site(site_factory: SiteFactory) -> Site:
    return await start_site(site_factory)


def errors_of(reply: httpx.Response) -> list[str]:
    body = reply.json()
    return list(body.get("details", []))


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    reply = await client.get("/api/v1/audit", params=params)
    assert reply.status_code == 200
    return list(reply.json()["items"])


# -- authentication and roles ------------------------------------------------------------------


async def test_missing_or_wrong_token_is_401(site: Site) -> None:
    url = site.admin.url
    async with httpx.AsyncClient(base_url=url) as anonymous:
        for method, path in (("GET", "/api/v1/groups"), ("GET", "/api/v1/groups/web"),
                             ("GET", "/api/v1/versions"), ("POST", "/api/v1/activate")):
            reply = await anonymous.request(method, path)
            assert reply.status_code == 401, (method, path)
            assert reply.json()["error"] == "unauthorized"
            assert reply.headers["www-authenticate"].startswith("Bearer")
        for header in ("Bearer not-a-token-at-all", "Basic YWRhOmFkYQ==",
                       "admin-token-0123"):
            reply = await anonymous.get("/api/v1/groups", headers={"Authorization": header})
            assert reply.status_code == 401, header


async def test_viewer_reads_but_may_not_operate(site: Site) -> None:
    assert (await site.viewer.get("/api/v1/groups/web")).status_code == 200
    assert (await site.viewer.get("/api/v1/audit")).status_code == 200
    reason = {"reason": "try"}
    for path, body in ((f"/api/v1/groups/web/members/{site.a.address}/pull-out", reason),
                       ("/api/v1/servers/127.0.0.1/down", reason),
                       ("/api/v1/batch", {**reason, "operations": []})):
        reply = await site.viewer.post(path, json=body)
        assert reply.status_code == 403, path
        assert reply.json()["error"] == "forbidden"
    member = await site.member("web", site.a.address)
    assert member["state"] == "up"
    assert await audit(site.viewer, who="vera") == []


async def test_operator_pulls_members_but_may_not_edit_activate_or_roll_back(
        site: Site) -> None:
    group = (await site.viewer.get("/api/v1/groups/web")).json()
    calls = [
        ("POST", "/api/v1/groups", {"name": "new", "reason": "x"}),
        ("PUT", "/api/v1/groups/web", {"row_version": group["row_version"], "reason": "x",
                                       "algorithm": "least_conn"}),
        ("DELETE", "/api/v1/routes/r0", None),
        ("POST", "/api/v1/clusters/c1/nodes", {"name": "n2", "control_url": "http://x:1"}),
        ("POST", "/api/v1/activate", {"reason": "x"}),
        ("POST", "/api/v1/versions/1/rollback", {"reason": "x"}),
    ]
    for method, path, body in calls:
        reply = await site.operator.request(method, path, json=body)
        assert reply.status_code == 403, (method, path)
        assert "admin needed" in reply.json()["message"]
    assert (await site.viewer.get("/api/v1/groups/web")).json()["row_version"] == 1
    assert len((await site.viewer.get("/api/v1/versions")).json()["versions"]) == 1
    reply = await site.operator.post(
        f"/api/v1/groups/web/members/{site.a.address}/pull-out", json={"reason": "deploy"})
    assert reply.status_code == 200


# -- CRUD ----------------------------------------------------------------------------------------


async def test_crud_of_every_kind_with_201_200_and_204(admin_factory: AdminFactory,
                                                       node_factory: NodeFactory) -> None:
    node = await node_factory("n1")
    running = await admin_factory()
    ada = running.client("admin")
    created = await ada.post("/api/v1/clusters", json={"name": "c1", "description": "east",
                                                       "reason": "new cluster"})
    assert created.status_code == 201
    assert created.json() | {"updated_at": 0} == {
        "name": "c1", "description": "east", "row_version": 1, "updated_at": 0,
        "updated_by": "ada", "access_log": {"enabled": False, "path": "-", "format": "text"}}
    reply = await ada.post("/api/v1/clusters/c1/nodes",
                           json={**node_body("n1", node), "reason": "rack 4"})
    assert reply.status_code == 201
    assert reply.json()["cluster"] == "c1"
    bodies = {
        "groups": {"name": "web", "members": [{"address": "127.0.0.1:9"}]},
        "virtual-servers": {"name": "site", "cluster": "c1", "listen": LISTEN,
                            "domains": ["site.test"]},
        "routes": {"name": "root", "virtual_server": "site", "path": "/", "group": "web"},
    }
    for plural, body in bodies.items():
        reply = await ada.post(f"/api/v1/{plural}", json=body)
        assert reply.status_code == 201, reply.text
        reply = await ada.get(f"/api/v1/{plural}/{body['name']}")
        assert reply.status_code == 200
        assert reply.json()["row_version"] == 1
        listed = (await ada.get(f"/api/v1/{plural}")).json()["items"]
        assert [i["name"] for i in listed] == [body["name"]]
    assert [n["name"] for n in (await ada.get("/api/v1/clusters/c1/nodes")).json()["items"]] \
        == ["n1"]
    # update: the row version grows, the change is visible
    reply = await ada.put("/api/v1/groups/web", json={
        "row_version": 1, "reason": "faster", "algorithm": "least_conn",
        "members": [{"address": "127.0.0.1:9", "weight": 3}]})
    assert reply.status_code == 200
    assert (reply.json()["row_version"], reply.json()["algorithm"]) == (2, "least_conn")
    assert (await ada.get("/api/v1/groups/web")).json()["members"][0]["weight"] == 3
    reply = await ada.put("/api/v1/clusters/c1/nodes/n1",
                          json={**node_body("n1", node), "row_version": 1})
    assert (reply.status_code, reply.json()["row_version"]) == (200, 2)
    # delete, users first
    for path in ("/api/v1/routes/root", "/api/v1/virtual-servers/site", "/api/v1/groups/web",
                 "/api/v1/clusters/c1/nodes/n1", "/api/v1/clusters/c1"):
        reply = await ada.delete(path, params={"reason": "tidy"})
        assert reply.status_code == 204, (path, reply.text)
        assert reply.content == b""
    for plural in ("clusters", "groups", "virtual-servers", "routes"):
        assert (await ada.get(f"/api/v1/{plural}")).json()["items"] == []
    assert (await ada.get("/api/v1/groups/web")).status_code == 404
    entries = await audit(ada, who="ada")
    assert [e["action"] for e in entries][-2:] == ["create node", "create cluster"]
    assert entries[-1]["reason"] == "new cluster"
    assert entries[0]["action"] == "delete cluster"


async def test_invalid_body_lists_every_error_with_its_field_path(site: Site) -> None:
    reply = await site.ada.post("/api/v1/groups", json={
        "name": "bad name!", "algorithm": "fifo", "colour": "red",
        "timeouts": {"connect": -1},
        "members": [{"address": "nohost"}, {"address": "127.0.0.1:0"},
                    {"address": "127.0.0.1:80", "weight": -1}]})
    assert reply.status_code == 400
    assert reply.json()["error"] == "bad_request"
    errors = errors_of(reply)
    fields = sorted(e.split(":", 1)[0] for e in errors)
    assert fields == ["algorithm", "colour", "members.0.address", "members.1.address",
                      "members.2.weight", "name", "timeouts.connect"]
    assert "members.0.address: expected host:port" in errors
    assert "members.1.address: invalid port '0': expected 1-65535" in errors
    assert "colour: unknown field" in errors
    # references to missing objects, both listed
    reply = await site.ada.post("/api/v1/routes", json={
        "name": "lost", "virtual_server": "nowhere", "path": "/", "group": "nogroup"})
    assert reply.status_code == 400
    assert errors_of(reply) == ["virtual_server: no virtual server named 'nowhere'",
                                "group: no group named 'nogroup'"]
    # not an object
    reply = await site.ada.post("/api/v1/groups", json=["web"])
    assert reply.status_code == 400
    names = [g["name"] for g in (await site.viewer.get("/api/v1/groups")).json()["items"]]
    assert names == ["web"]


async def test_non_json_body_is_400(site: Site) -> None:
    headers = {"Content-Type": "application/json"}
    calls = [(site.ada, "POST", "/api/v1/groups"), (site.ada, "PUT", "/api/v1/groups/web"),
             (site.ada, "POST", "/api/v1/activate"),
             (site.operator, "POST", f"/api/v1/groups/web/members/{site.a.address}/pull-out"),
             (site.operator, "POST", "/api/v1/batch")]
    for client, method, path in calls:
        reply = await client.request(method, path, content=b"{not json", headers=headers)
        assert reply.status_code == 400, (method, path)
        assert reply.json()["message"].startswith("the body is not JSON"), path
    assert (await site.member("web", site.a.address))["state"] == "up"


async def test_unknown_group_member_version_and_collection_are_404(site: Site) -> None:
    reason = {"reason": "x"}
    calls = [
        (site.viewer, "GET", "/api/v1/groups/nope", None),
        (site.viewer, "GET", "/api/v1/widgets", None),
        (site.viewer, "GET", "/api/v1/widgets/x", None),
        (site.viewer, "GET", "/api/v1/clusters/nope/nodes", None),
        (site.viewer, "GET", "/api/v1/versions/99/diff/1", None),
        (site.viewer, "GET", "/api/v1/routes/nope", None),
        (site.operator, "POST", "/api/v1/groups/nope/members/127.0.0.1:1/pull-out", reason),
        (site.operator, "POST", "/api/v1/groups/web/members/127.0.0.1:1/pull-out", reason),
        (site.operator, "POST", f"/api/v1/groups/web/members/{site.a.address}/explode",
         reason),
        (site.operator, "POST", "/api/v1/servers/127.0.0.1/explode", reason),
        (site.ada, "POST", "/api/v1/versions/99/rollback", reason),
        (site.ada, "PUT", "/api/v1/groups/nope", {"row_version": 1}),
        (site.ada, "DELETE", "/api/v1/groups/nope", None),
    ]
    for client, method, path, body in calls:
        reply = await client.request(method, path, json=body)
        assert reply.status_code == 404, (method, path, reply.text)
        assert reply.json()["error"] == "not_found"


async def test_stale_row_version_is_409_and_the_first_edit_stays(site: Site) -> None:
    first = await site.ada.put("/api/v1/groups/web", json={
        "row_version": 1, "algorithm": "least_conn", "reason": "first",
        "members": [{"address": site.a.address}]})
    assert first.status_code == 200
    second = await site.ada.put("/api/v1/groups/web", json={
        "row_version": 1, "algorithm": "random2", "reason": "second",
        "members": [{"address": site.b.address}]})
    assert second.status_code == 409
    assert second.json()["error"] == "conflict"
    stored = (await site.viewer.get("/api/v1/groups/web")).json()
    assert (stored["row_version"], stored["algorithm"]) == (2, "least_conn")
    reply = await site.ada.delete("/api/v1/routes/r0", params={"row_version": 7})
    assert reply.status_code == 409
    assert (await site.viewer.get("/api/v1/routes/r0")).status_code == 200
    reply = await site.ada.put("/api/v1/groups/web", json={"algorithm": "wrr"})
    assert reply.status_code == 400
    assert errors_of(reply)[0].startswith("row_version: required")
    assert [e["reason"] for e in await audit(site.viewer, target="group/web")][:1] == ["first"]


async def test_duplicate_name_is_409(site: Site) -> None:
    for path, body in (("/api/v1/groups", {"name": "web"}),
                       ("/api/v1/clusters", {"name": "c1"}),
                       ("/api/v1/clusters/c1/nodes", node_body("n1", site.node))):
        reply = await site.ada.post(path, json=body)
        assert reply.status_code == 409, path
        assert "already exists" in reply.json()["message"]
    group = (await site.viewer.get("/api/v1/groups/web")).json()
    assert len(group["members"]) == 2


async def test_objects_still_used_cannot_be_deleted(site: Site) -> None:
    reply = await site.ada.delete("/api/v1/groups/web", params={"reason": "x"})
    assert reply.status_code == 409
    assert "route/r0" in reply.json()["message"]
    reply = await site.ada.delete("/api/v1/clusters/c1")
    assert reply.status_code == 409
    assert "node/n1" in reply.json()["message"]
    assert "virtual_server/site" in reply.json()["message"]
    assert (await site.viewer.get("/api/v1/groups/web")).status_code == 200


# -- member state and operations ---------------------------------------------------------------


async def test_group_view_shows_every_flag_and_the_effective_state(site: Site) -> None:
    started = time.time()
    await site.change("POST", f"/api/v1/groups/web/members/{site.a.address}/down",
                      json={"reason": "disk full"})
    view = (await site.viewer.get("/api/v1/groups/web")).json()
    assert view["name"] == "web"
    assert view["row_version"] == 1
    assert view["health"] == "some down"
    members = {m["address"]: m for m in view["members"]}
    assert set(members) == {site.a.address, site.b.address}
    for member in members.values():
        assert set(member["flags"]) == {"ops", "pull", "server", "health", "maintenance"}
        for value in member["flags"].values():
            assert {"value", "who", "at", "why"} <= set(value)
    held = members[site.a.address]
    assert (held["state"], held["held_by"]) == ("drain", ["ops"])
    ops = held["flags"]["ops"]
    assert (ops["value"], ops["who"], ops["why"]) == (False, "otto", "disk full")
    assert started <= ops["at"] <= time.time()
    assert held["flags"]["pull"] == {"value": True, "who": "system", "at": None, "why": ""}
    free = members[site.b.address]
    assert (free["state"], free["held_by"]) == ("up", [])
    assert free["flags"]["health"]["value"] is True


async def test_pull_out_stops_traffic_and_is_audited_then_pull_in_resumes(site: Site) -> None:
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
    path = f"/api/v1/groups/web/members/{site.a.address}"
    reply = await site.change("POST", f"{path}/pull-out", json={"reason": "deploy 42"})
    assert reply.json()["changed"] == [
        {"group": "web", "address": site.a.address, "flag": "pull", "value": False}]
    assert site.node.member("web", site.a.address).state == "drain"
    before = len(site.a.requests)
    assert set(await served_by(site.node, 6)) == {"b"}
    assert len(site.a.requests) == before
    [entry] = await audit(site.viewer, target=f"member/web/{site.a.address}")
    assert (entry["who"], entry["action"], entry["reason"]) == ("otto", "member pull-out",
                                                                "deploy 42")
    assert entry["before"] is None
    assert entry["after"] == {"value": False, "who": "otto", "why": "deploy 42"}
    member = await site.member("web", site.a.address)
    assert (member["state"], member["held_by"]) == ("drain", ["pull"])

    await site.change("POST", f"{path}/pull-in", json={"reason": "deployed"})
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
    entry = (await audit(site.viewer, target=f"member/web/{site.a.address}"))[0]
    assert entry["action"] == "member pull-in"
    assert entry["before"] == {"value": False, "who": "otto", "why": "deploy 42"}
    assert entry["after"] == {"value": True, "who": "otto", "why": "deployed"}


async def test_member_down_and_up(site: Site) -> None:
    path = f"/api/v1/groups/web/members/{site.b.address}"
    await site.change("POST", f"{path}/down", json={"reason": "oom"})
    assert set(await served_by(site.node)) == {"a"}
    await site.change("POST", f"{path}/up", json={"reason": "restarted"})
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
    actions = [e["action"] for e in await audit(site.viewer, who="otto")]
    assert actions == ["member up", "member down"]


async def test_member_operations_need_a_reason(site: Site) -> None:
    for body in (None, {}, {"reason": ""}, {"reason": "   "}):
        reply = await site.operator.post(
            f"/api/v1/groups/web/members/{site.a.address}/pull-out", json=body)
        assert reply.status_code == 400, body
        assert errors_of(reply) == ["reason: must not be empty"]
    reply = await site.operator.post("/api/v1/servers/127.0.0.1/down", json={})
    assert reply.status_code == 400
    reply = await site.operator.post("/api/v1/batch", json={"operations": [
        {"group": "web", "address": site.a.address, "op": "pull-out"}]})
    assert reply.status_code == 400
    assert (await site.member("web", site.a.address))["state"] == "up"
    assert await audit(site.viewer, target="member/") == []


async def test_server_down_holds_the_ip_in_every_group(site_factory: SiteFactory) -> None:
    site = await start_site(site_factory, groups={"web": ["a"], "api": ["b"]},
                            routes={"/": "web", "/api/": "api"})
    assert await served_by(site.node, 2) == ["a", "a"]
    assert await served_by(site.node, 2, path="/api/x") == ["b", "b"]
    refused = await site.operator.post("/api/v1/servers/127.0.0.1/down",
                                       json={"reason": "kernel patch"})
    assert refused.status_code == 409  # the last member of both groups: 503s without force
    assert "api, web" in refused.json()["message"] and "503" in refused.json()["message"]
    reply = await site.change("POST", "/api/v1/servers/127.0.0.1/down",
                              json={"reason": "kernel patch", "force": True})
    assert {k: v for k, v in reply.json().items() if k not in ("nodes", "complete")} == {
        "ip": "127.0.0.1", "up": False, "groups": ["api", "web"]}
    for group, backend in (("web", site.a), ("api", site.b)):
        member = await site.member(group, backend.address)
        assert member["held_by"] == ["server"]
        assert (member["flags"]["server"]["who"], member["flags"]["server"]["why"]) == (
            "otto", "kernel patch")
    assert await served_by(site.node, 2) == ["503", "503"]
    assert await served_by(site.node, 2, path="/api/x") == ["503", "503"]
    [entry] = await audit(site.viewer, target="server/127.0.0.1")
    assert (entry["action"], entry["who"], entry["after"]["value"]) == ("server down", "otto",
                                                                        False)
    await site.change("POST", "/api/v1/servers/127.0.0.1/up", json={"reason": "patched"})
    assert await served_by(site.node, 2) == ["a", "a"]
    assert await served_by(site.node, 2, path="/api/x") == ["b", "b"]


async def test_batch_is_validated_whole_before_anything_applies(site: Site) -> None:
    bad = await site.operator.post("/api/v1/batch", json={"reason": "release", "operations": [
        {"group": "web", "address": site.a.address, "op": "pull-out"},
        {"group": "web", "address": "127.0.0.1:1", "op": "down"},
        {"group": "nope", "address": site.a.address, "op": "down"},
        {"server": "127.0.0.1", "op": "sideways"}]})
    assert bad.status_code == 400
    assert errors_of(bad) == [
        "operations[1].address: '127.0.0.1:1' is not a member",
        "operations[2].group: no group named 'nope'",
        "operations[3].op: expected up or down"]
    assert (await site.member("web", site.a.address))["state"] == "up"
    reply = await site.operator.post("/api/v1/batch", json={"reason": "release"})
    assert reply.status_code == 400
    assert errors_of(reply) == ["operations: required list"]

    reply = await site.change("POST", "/api/v1/batch", json={"reason": "release", "operations": [
        {"group": "web", "addresses": [site.a.address, site.b.address], "op": "pull-out"},
        {"group": "web", "address": site.b.address, "op": "pull-in"}]})
    assert len(reply.json()["results"]) == 2
    assert set(await served_by(site.node)) == {"b"}
    pulls = [e["after"]["value"] for e in await audit(site.viewer, target="member/web/")]
    assert sorted(pulls) == [False, False, True]


async def test_pull_in_never_sends_traffic_to_a_member_failing_its_check(
        site_factory: SiteFactory) -> None:
    async def sick(request: ReceivedRequest, writer: asyncio.StreamWriter,
                   backend: Backend) -> None:
        if request.path == "/health":
            writer.write(response(500, b"sick\n"))
        else:
            await default_handler(request, writer, backend)

    site = await start_site(site_factory, a_handler=sick,
                            health_check={"path": "/health", "interval": 0.05, "fails": 1})

    async def a_is_down() -> bool:
        return (await site.member("web", site.a.address))["state"] == "down"

    await wait_until(a_is_down, what="the check to mark a down")
    await converge(site.admin, site.node, after=0)
    await wait_until(lambda: site.node.member("web", site.a.address).state == "down",
                     what="the node to hold a")
    path = f"/api/v1/groups/web/members/{site.a.address}"
    await site.change("POST", f"{path}/pull-out", json={"reason": "investigate"})
    await site.change("POST", f"{path}/pull-in", json={"reason": "looks fine"})
    member = await site.member("web", site.a.address)
    assert (member["state"], member["held_by"]) == ("down", ["health"])
    assert member["flags"]["pull"]["value"] is True
    assert member["flags"]["health"]["why"] == "HTTP 500"
    assert set(await served_by(site.node, 4)) == {"b"}


# -- versions: activate, diff, rollback ----------------------------------------------------------


async def test_draft_changes_reach_nodes_only_when_activated(site: Site) -> None:
    reply = await site.ada.put("/api/v1/groups/web", json={
        "row_version": 1, "reason": "retire a", "members": [{"address": site.b.address}]})
    assert reply.status_code == 200
    # something else is published meanwhile: it carries the active version, not the draft
    await site.change("POST", f"/api/v1/groups/web/members/{site.b.address}/up",
                      json={"reason": "nudge"})
    assert [m.address for m in site.node.node.config.groups[0].members] == [
        site.a.address, site.b.address]
    assert sorted(set(await served_by(site.node))) == ["a", "b"]

    reply = await site.change("POST", "/api/v1/activate", client=site.ada,
                              json={"reason": "retire a"})
    assert reply.json()["version"] == 2
    items = (await site.viewer.get("/api/v1/nodes")).json()["items"]
    assert [(i["cluster"], i["name"], i["in_sync"], i["lag"], i["last_error"])
            for i in items] == [("c1", "n1", True, 0, None)]
    assert items[0]["applied_hash"] == items[0]["desired_hash"]
    assert items[0]["applied_version"] == applied_version(site.node)
    assert set(await served_by(site.node)) == {"b"}


async def test_versions_are_listed_and_diffed_including_the_draft(site: Site) -> None:
    await site.ada.put("/api/v1/groups/web", json={
        "row_version": 1, "reason": "x", "algorithm": "least_conn",
        "members": [{"address": site.a.address}, {"address": site.b.address}]})
    await site.change("POST", "/api/v1/activate", client=site.ada,
                      json={"reason": "least conn for web"})
    listed = (await site.viewer.get("/api/v1/versions")).json()
    assert listed["active"] == 2
    assert [(v["version"], v["who"], v["reason"]) for v in listed["versions"]] == [
        (2, "ada", "least conn for web"), (1, "seed", "seeded from the admin's file")]
    changes = (await site.viewer.get("/api/v1/versions/1/diff/2")).json()["changes"]
    assert [(c["kind"], c["name"], c["change"]) for c in changes] == [
        ("group", "web", "changed")]
    assert '+  "algorithm": "least_conn",' in changes[0]["diff"].splitlines()
    assert (await site.viewer.get("/api/v1/versions/2/diff/draft")).json()["changes"] == []
    await site.ada.post("/api/v1/groups", json={"name": "search"})
    changes = (await site.viewer.get("/api/v1/versions/2/diff/draft")).json()["changes"]
    assert [(c["name"], c["change"]) for c in changes] == [("search", "added")]
    changes = (await site.viewer.get("/api/v1/versions/draft/diff/1")).json()["changes"]
    assert sorted((c["name"], c["change"]) for c in changes) == [
        ("search", "removed"), ("web", "changed")]
    assert (await site.viewer.get("/api/v1/versions/latest/diff/1")).status_code == 400


async def test_rollback_restores_the_old_routing_as_a_new_version(site: Site) -> None:
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
    await site.ada.post("/api/v1/groups", json={"name": "only-b",
                                                "members": [{"address": site.b.address}]})
    await site.ada.post("/api/v1/routes", json={"name": "pinned", "virtual_server": "site",
                                                "path": "/", "match": "exact",
                                                "group": "only-b"})
    await site.change("POST", "/api/v1/activate", client=site.ada, json={"reason": "pin /"})
    assert set(await served_by(site.node, 4, path="/")) == {"b"}
    assert sorted(set(await served_by(site.node, 4, path="/x"))) == ["a", "b"]

    reply = await site.change("POST", "/api/v1/versions/1/rollback", client=site.ada,
                              json={"reason": "pinning broke checkout"})
    assert reply.json()["version"] == 3
    assert reply.json()["source_version"] == 1
    assert sorted(set(await served_by(site.node, 4, path="/"))) == ["a", "b"]
    listed = (await site.viewer.get("/api/v1/versions")).json()
    assert listed["active"] == 3
    assert listed["versions"][0]["source_version"] == 1
    assert (await site.viewer.get("/api/v1/versions/1/diff/3")).json()["changes"] == []
    # the draft is the restored content too
    assert (await site.viewer.get("/api/v1/versions/3/diff/draft")).json()["changes"] == []
    entry = (await audit(site.viewer, target="version/"))[0]
    assert (entry["action"], entry["who"], entry["reason"], entry["before"]) == (
        "rollback", "ada", "pinning broke checkout", {"version": 1})
    assert await nodes_in_sync(site.viewer)


async def test_rollback_does_not_let_an_edit_from_before_it_through(site: Site) -> None:
    seen = (await site.viewer.get("/api/v1/groups/web")).json()  # someone opens the editor
    assert seen["row_version"] == 1
    reply = await site.ada.put("/api/v1/groups/web", json={
        "row_version": 1, "reason": "x", "algorithm": "least_conn",
        "members": [{"address": m["address"]} for m in seen["members"]]})
    assert reply.status_code == 200
    assert (await site.ada.post("/api/v1/activate", json={"reason": "lc"})).status_code == 200
    reply = await site.ada.post("/api/v1/versions/1/rollback", json={"reason": "back"})
    assert reply.status_code == 200
    # the editor opened before all of this saves: its row_version 1 is two edits old
    stale = await site.ada.put("/api/v1/groups/web", json={
        "row_version": seen["row_version"], "reason": "old editor", "algorithm": "random2",
        "members": [{"address": site.a.address}]})
    assert stale.status_code == 409


async def test_activate_and_rollback_need_a_reason(site: Site) -> None:
    for body in (None, {}, {"reason": " "}):
        reply = await site.ada.post("/api/v1/activate", json=body)
        assert reply.status_code == 400
        assert errors_of(reply) == ["reason: must not be empty"]
        reply = await site.ada.post("/api/v1/versions/1/rollback", json=body)
        assert reply.status_code == 400
        assert errors_of(reply) == ["reason: must not be empty"]
    assert len((await site.viewer.get("/api/v1/versions")).json()["versions"]) == 1


async def test_invalid_configuration_is_not_activated_and_every_error_is_listed(
        site: Site) -> None:
    version_before = applied_version(site.node)
    reply = await site.ada.post("/api/v1/virtual-servers", json={
        "name": "site2", "cluster": "c1", "listen": LISTEN, "domains": ["other.test"],
        "default": True})
    assert reply.status_code == 201
    # a draft is refused what a node would refuse, at once and next to its field
    reply = await site.ada.post("/api/v1/routes", json={
        "name": "relative", "virtual_server": "site2", "path": "api", "group": "web"})
    assert (reply.status_code, errors_of(reply)) == (400, ["path: must start with '/'"])
    reply = await site.ada.post("/api/v1/routes", json={
        "name": "relative", "virtual_server": "site2", "path": "/api", "group": "web"})
    assert reply.status_code == 201
    reply = await site.ada.post("/api/v1/activate", json={"reason": "add site2"})
    assert reply.status_code == 400
    errors = errors_of(reply)
    assert len(errors) == 1, errors  # what only the whole configuration shows
    assert errors[0].startswith("cluster/c1: virtual_servers[1].default:")
    assert "already the default" in errors[0]
    listed = (await site.viewer.get("/api/v1/versions")).json()
    assert (listed["active"], len(listed["versions"])) == (1, 1)
    entry = (await audit(site.viewer, target="version/"))[0]
    assert (entry["action"], entry["who"]) == ("activate", "ada")
    assert entry["result"].startswith("invalid: ")
    assert applied_version(site.node) == version_before
    assert [v.name for v in site.node.node.config.virtual_servers] == ["site"]


# -- audit, documents, metrics --------------------------------------------------------------------


async def test_audit_api_filters_by_target_who_and_time(site: Site) -> None:
    middle = time.time()
    await site.change("POST", f"/api/v1/groups/web/members/{site.a.address}/pull-out",
                      json={"reason": "one"})
    await site.ada.post("/api/v1/groups", json={"name": "search", "reason": "two"})
    assert [e["reason"] for e in await audit(site.viewer, who="otto")] == ["one"]
    assert [e["reason"] for e in await audit(site.viewer, target="group/")] == [
        "two", "seeded from the admin's file"]
    assert [e["reason"] for e in await audit(site.viewer, since=middle)] == ["two", "one"]
    seeded = await audit(site.viewer, until=middle)
    assert seeded and all(e["who"] == "seed" for e in seeded)
    assert len(await audit(site.viewer, limit=1)) == 1


async def test_openapi_document_is_served(site: Site) -> None:
    reply = await site.viewer.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    assert document["openapi"].startswith("3.")
    for path in ("/api/v1/activate", "/api/v1/groups/{name}",
                 "/api/v1/groups/{name}/members/{address}/{op}",
                 "/api/v1/versions/{number}/rollback", "/api/v1/batch"):
        assert path in document["paths"], path


async def test_metrics_have_push_durations_and_node_lag(site: Site) -> None:
    reply = await site.viewer.get("/metrics")
    assert reply.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    push = families["slb_admin_push_duration_seconds"]
    assert push.type == "histogram"
    counts = [s for s in push.samples if s.name.endswith("_count")]
    assert [(s.labels, s.value >= 1) for s in counts] == [
        ({"cluster": "c1", "node": "n1"}, True)]
    lag = families["slb_admin_node_lag_versions"]
    assert [(s.labels["node"], s.value) for s in lag.samples] == [("n1", 0.0)]
    in_sync = families["slb_admin_node_in_sync"]
    assert [(s.labels["node"], s.value) for s in in_sync.samples] == [("n1", 1.0)]


# -- seeding ---------------------------------------------------------------------------------------


async def test_empty_store_is_seeded_and_activated_but_never_reseeded(
        site_factory: SiteFactory, admin_factory: AdminFactory) -> None:
    site = await start_site(site_factory)
    listed = (await site.viewer.get("/api/v1/versions")).json()
    assert [(v["version"], v["who"]) for v in listed["versions"]] == [(1, "seed")]
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
    await site.ada.post("/api/v1/groups", json={"name": "search", "reason": "draft"})
    await site.admin.close()
    last_push = applied_version(site.node)

    other_seed = site_seed({"n1": site.node}, {"web": [site.b.address], "seeded": []})
    restarted = await admin_factory(seed=other_seed)
    client = restarted.client("viewer")
    listed = (await client.get("/api/v1/versions")).json()
    assert (listed["active"], len(listed["versions"])) == (1, 1)
    groups = [g["name"] for g in (await client.get("/api/v1/groups")).json()["items"]]
    assert groups == ["search", "web"]
    web = (await client.get("/api/v1/groups/web")).json()
    assert [m["address"] for m in web["members"]] == [site.a.address, site.b.address]
    # the restarted admin pushes above what it pushed before, and the node follows
    await converge(restarted, site.node, after=last_push)
    assert sorted(set(await served_by(site.node))) == ["a", "b"]
