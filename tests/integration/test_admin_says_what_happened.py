"""Operations say what really happened (issue 10): per-node delivery, no silent no-ops, and
nothing secret in any answer. A real admin over HTTP, real admin-managed nodes, real backends.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin import ctl
from tests.support.admin import (
    HOST,
    LISTEN,
    NODE_TOKEN,
    TOKENS,
    AdminFactory,
    NodeFactory,
    NodeSite,
    RunningAdmin,
    admin_factory,
    converge,
    node_factory,
    nodes_in_sync,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.client import request
from tests.support.control import ControlClient

__all__ = ["admin_factory", "node_factory"]

BackendFactory = Callable[..., Awaitable[Backend]]


async def start(backend_factory: BackendFactory, node_factory: NodeFactory,
                admin_factory: AdminFactory, dead_node: bool = False) -> NodeSite:
    """Group ``web`` (a, b) on node ``n1``; with ``dead_node`` also ``n2``, whose control port
    nobody listens on."""
    a, b = await backend_factory(name="a"), await backend_factory(name="b")
    node = await node_factory("n1")
    seed = site_seed({"n1": node}, {"web": [a.address, b.address]})
    if dead_node:
        with socket.socket() as probe:  # a port that was free a moment ago: refused
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        seed["nodes"].append({"name": "n2", "cluster": "c1", "token": NODE_TOKEN,
                              "control_url": f"http://127.0.0.1:{port}"})
    admin = await admin_factory(seed=seed)
    site = NodeSite(admin, node, a, b)
    if not dead_node:
        await converge(admin, node, after=0)
    return site


async def test_an_operation_answers_once_every_node_applied_it(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    reply = await site.operator.post(f"/api/v1/groups/web/members/{site.a.address}/pull-out",
                                     json={"reason": "release"})
    assert reply.status_code == 200, reply.text
    [n1] = reply.json()["nodes"]
    assert (n1["node"], n1["cluster"], n1["applied"]) == ("n1", "c1", True)
    # one vocabulary: the node runs the configuration version the operator activated (the
    # snapshot counter is the internal "version")
    active = (await site.viewer.get("/api/v1/versions")).json()["active"]
    assert n1["configuration_version"] == active
    [status] = (await site.viewer.get("/api/v1/nodes")).json()["items"]
    assert (status["configuration_version"], status["desired_configuration_version"]) == (
        active, active)
    # the answer comes after the node applied it: its data plane already holds the change
    assert site.node.node.config.version == n1["version"]
    member = next(m for g in site.node.node.config.groups for m in g.members
                  if m.address == site.a.address)
    assert member.state == "drain"


async def test_a_node_that_does_not_apply_in_time_makes_the_answer_202_naming_it(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory, dead_node=True)
    reply = await site.operator.post(
        f"/api/v1/groups/web/members/{site.a.address}/pull-out?wait=1",
        json={"reason": "release"})
    assert reply.status_code == 202, reply.text
    nodes = {n["node"]: n for n in reply.json()["nodes"]}
    assert nodes["n1"]["applied"] is True
    assert nodes["n2"]["applied"] is False and nodes["n2"]["error"]
    assert reply.json()["complete"] is False
    # stored all the same: the group shows the pull-out
    assert (await site.member("web", site.a.address))["state"] == "drain"
    bad = await site.operator.post(
        f"/api/v1/groups/web/members/{site.a.address}/pull-in?wait=soon",
        json={"reason": "release"})
    assert bad.status_code == 400 and bad.json()["details"][0].startswith("wait:")


async def test_no_silent_no_ops(backend_factory: BackendFactory, node_factory: NodeFactory,
                                admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    reason = {"reason": "release"}
    unknown_ip = await site.operator.post("/api/v1/servers/10.9.9.9/down", json=reason)
    assert unknown_ip.status_code == 404
    assert "10.9.9.9" in unknown_ip.json()["message"]
    assert (await site.operator.post("/api/v1/groups/nope/members/1.2.3.4:80/down",
                                     json=reason)).status_code == 404
    first = await site.operator.post(f"/api/v1/groups/web/members/{site.a.address}/pull-out",
                                     json=reason)
    assert first.status_code == 200
    last = await site.operator.post(f"/api/v1/groups/web/members/{site.b.address}/pull-out",
                                    json=reason)
    assert last.status_code == 409
    assert "web" in last.json()["message"] and "503" in last.json()["message"]
    assert (await site.member("web", site.b.address))["state"] == "up"  # nothing changed
    forced = await site.operator.post(f"/api/v1/groups/web/members/{site.b.address}/pull-out",
                                      json={**reason, "force": True})
    assert forced.status_code == 200
    assert (await site.member("web", site.b.address))["state"] == "drain"


async def test_no_answer_shows_a_node_token_to_any_role(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    edit = await site.ada.put("/api/v1/clusters/c1/nodes/n1", json={
        "control_url": f"http://127.0.0.1:{site.node.control_port}", "row_version": 1,
        "reason": "same node, token left out: kept"})
    assert edit.status_code == 200, edit.text
    assert edit.json()["token_set"] is True
    for client in (site.viewer, site.operator, site.ada):
        for path in ("/api/v1/nodes", "/api/v1/clusters/c1/nodes", "/api/v1/audit"):
            reply = await client.get(path)
            assert reply.status_code == 200, (path, reply.status_code)
            assert NODE_TOKEN not in reply.text, path
    # the token was kept: the node still takes pushes
    reply = await site.operator.post(f"/api/v1/groups/web/members/{site.a.address}/pull-out",
                                     json={"reason": "still pushing"})
    assert reply.status_code == 200 and reply.json()["complete"] is True


async def test_oversized_bodies_and_fields_are_refused_and_nothing_is_stored(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    path = f"/api/v1/groups/web/members/{site.a.address}/pull-out"
    huge = await site.operator.post(path, content=json.dumps({"reason": "x" * (2 << 20)}),
                                    headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"] == "too_large"
    long = await site.operator.post(path, json={"reason": "x" * 1001})
    assert long.status_code == 400
    assert long.json()["details"] == ["reason: at most 1000 characters (1001 given)"]
    name = await site.ada.post("/api/v1/clusters", json={"name": "c" * 254, "reason": "x"})
    assert name.status_code == 400 and name.json()["details"][0].startswith("name:")
    many = await site.ada.post("/api/v1/groups/web/weight", json={
        "addresses": ["10.0.0.1:80"] * 1001, "weight": 1, "row_version": 1, "reason": "x"})
    assert many.status_code == 400
    assert many.json()["details"] == ["addresses: at most 1000 items (1001 given)"]
    audit = (await site.viewer.get("/api/v1/audit")).json()["items"]
    assert [e for e in audit if e["action"] != "create" and e["who"] != "seed"] == []


async def test_the_ui_sends_its_safety_headers(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    async with httpx.AsyncClient(base_url=site.admin.url) as browser:
        page = await browser.get("/ui/login")
    assert page.status_code == 200
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


# -- nodes taken back ---------------------------------------------------------------------------


async def recreated_admin(site: NodeSite, admin_factory: AdminFactory, tmp_path: Path,
                          **settings: Any) -> RunningAdmin:
    """The admin's database lost: a new admin with a new store, the node keeps its state."""
    await site.admin.close()
    seed = site_seed({"n1": site.node}, {"web": [site.a.address]})
    return await admin_factory(seed=seed, store=str(tmp_path / "new.db"), **settings)


async def node_status(admin: RunningAdmin) -> dict[str, Any]:
    items = (await admin.client("viewer").get("/api/v1/nodes")).json()["items"]
    return next((dict(i) for i in items if i["name"] == "n1"), {"needs_take_over": None,
                                                                "in_sync": False})


async def test_a_node_of_another_store_is_shown_as_such_and_taken_over_on_request(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory, tmp_path: Path) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    old_store = site.node.node.config.store
    assert old_store is not None
    admin = await recreated_admin(site, admin_factory, tmp_path)
    await wait_until(async_true(lambda: node_status(admin),
                                lambda s: s["needs_take_over"] is not None),
                     what="the node shown as another store's")
    status = await node_status(admin)
    assert status["needs_take_over"]["kind"] == "other_store"
    assert status["needs_take_over"]["store"] == old_store
    assert "another admin store" in status["last_error"] and not status["in_sync"]
    assert site.node.node.config.store == old_store  # nothing pushed behind anyone's back

    ada = admin.client("admin")
    assert (await admin.client("operator").post("/api/v1/clusters/c1/nodes/n1/take-over",
                                                json={"reason": "x"})).status_code == 403
    assert (await ada.post("/api/v1/clusters/c1/nodes/n1/take-over",
                           json={})).status_code == 400  # a reason is required
    taken = await ada.post("/api/v1/clusters/c1/nodes/n1/take-over",
                           json={"reason": "admin database recreated"})
    assert taken.status_code == 200, taken.text
    assert taken.json()["was"]["kind"] == "other_store"
    assert [n["applied"] for n in taken.json()["nodes"]] == [True]
    assert site.node.node.config.store != old_store
    assert [m.address for m in site.node.node.config.groups[0].members] == [site.a.address]
    audit = (await ada.get("/api/v1/audit", params={"target": "node/n1"})).json()["items"]
    [entry] = [e for e in audit if e["action"] == "take over"]
    assert (entry["who"], entry["reason"]) == ("ada", "admin database recreated")


async def test_take_over_automatic_replaces_another_stores_snapshot_without_asking(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory, tmp_path: Path) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    old_store = site.node.node.config.store
    admin = await recreated_admin(site, admin_factory, tmp_path, take_over="automatic")
    await wait_until(lambda: site.node.node.config.store not in (None, old_store),
                     what="the node taken over")
    await wait_until(lambda: nodes_in_sync(admin.client("viewer")), what="nodes in sync")


async def test_a_node_ahead_of_this_store_is_taken_over_above_its_version(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    applied = site.node.node.config
    by_hand = {**applied.to_json(), "version": applied.version + 100, "groups": [],
               "virtual_servers": []}
    control = ControlClient(site.node.control_port, NODE_TOKEN)
    assert (await control.push(by_hand)).status == 200
    ada = site.ada
    await ada.post("/api/v1/clusters/c1/nodes/n1/take-over", json={"reason": "warm-up"})
    await wait_until(async_true(lambda: node_status(site.admin),
                                lambda s: s["needs_take_over"] is None and s["in_sync"]),
                     what="the node back in sync")
    assert site.node.node.config.version > applied.version + 100
    assert [g.name for g in site.node.node.config.groups] == ["web"]


def async_true(get: Callable[[], Awaitable[Any]], test: Callable[[Any], bool]
               ) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return test(await get())
    return check


# -- drain and wait -----------------------------------------------------------------------------


async def test_pull_out_wait_drained_answers_when_the_request_in_flight_finished(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: ReceivedRequest, writer: asyncio.StreamWriter,
                   backend: Backend) -> None:
        arrived.set()
        await release.wait()
        writer.write(response(200, b"a slow\n"))

    a = await backend_factory(name="a", handler=slow)
    b = await backend_factory(name="b")
    node = await node_factory("n1")
    admin = await admin_factory(seed=site_seed({"n1": node}, {"web": [a.address, b.address]}))
    await converge(admin, node, after=0)
    site = NodeSite(admin, node, a, b)
    base = f"/api/v1/groups/web/members/{b.address}"
    assert (await site.operator.post(f"{base}/pull-out", json={"reason": "b first"})
            ).status_code == 200
    in_flight = asyncio.create_task(request(node.port_of(LISTEN), "GET", "/", host=HOST))
    await asyncio.wait_for(arrived.wait(), 5)

    pull_a = f"/api/v1/groups/web/members/{a.address}/pull-out?wait=drained"
    body = {"reason": "deploy a", "force": True}
    early = await site.operator.post(pull_a + "&timeout=0.3", json=body)
    assert early.status_code == 202, early.text  # applied, not drained: the counts say why
    assert early.json()["complete"] is True
    [seen] = early.json()["drain"]["nodes"]
    assert seen["drained"] is False and seen["members"][f"web/{a.address}"]["active"] == 1

    waiting = asyncio.create_task(site.operator.post(pull_a + "&timeout=10", json=body))
    release.set()
    assert (await in_flight).status == 200  # the request in flight finished normally
    done = await waiting
    assert done.status_code == 200, done.text
    assert done.json()["drain"]["drained"] is True
    assert (await site.operator.post(pull_a.replace("drained", "later"), json=body)
            ).status_code == 400


async def test_the_ctl_client_exits_0_only_when_done_everywhere(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    monkeypatch.setenv("SLB_ADMIN_TOKEN", TOKENS["operator"])

    async def ctl_run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        code = await asyncio.to_thread(ctl.main, ["--admin", site.admin.url, *argv], out)
        return code, out.getvalue()

    a, b = site.a.address, site.b.address
    code, text = await ctl_run("pull-out", "web", a, "--reason", "deploy a", "--wait")
    assert code == 0, text
    assert "n1: applied" in text and "n1: drained" in text
    assert site.node.node.config.groups[0].members[0].state == "drain"
    code, _ = await ctl_run("pull-out", "web", b, "--reason", "deploy b", "--wait")
    assert code == 1  # the last member: refused without --force
    code, text = await ctl_run("status", "web")
    assert code == 0 and f"{a}  drain" in text and "node n1 (c1): in sync" in text
    code, _ = await ctl_run("pull-in", "web", a, "--reason", "a is back", "--wait")
    assert code == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert await asyncio.to_thread(ctl.main, ["--admin", nobody, "status", "web"]) == 3


async def ui_login(client: httpx.AsyncClient, token: str) -> str:
    """A web UI session cookie (sent by hand: it is Secure, and this is http on loopback)."""
    form = await client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    cookie = re.search(r"slb_login=([^;]+)", form.headers["set-cookie"])
    assert csrf is not None and cookie is not None
    reply = await client.post("/ui/login", data={"csrf": csrf.group(1), "token": token},
                              headers={"Cookie": f"slb_login={cookie.group(1)}"})
    session = re.search(r"slb_session=([^;]+)", reply.headers["set-cookie"])
    assert reply.status_code == 303 and session is not None
    return f"slb_session={session.group(1)}"


async def test_the_overview_offers_the_take_over_and_the_form_does_it(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory, tmp_path: Path) -> None:
    site = await start(backend_factory, node_factory, admin_factory)
    old_store = site.node.node.config.store
    admin = await recreated_admin(site, admin_factory, tmp_path)
    await wait_until(async_true(lambda: node_status(admin),
                                lambda s: s["needs_take_over"] is not None),
                     what="the node shown as another store's")
    async with httpx.AsyncClient(base_url=admin.url) as browser:
        cookie = {"Cookie": await ui_login(browser, TOKENS["admin"])}
        overview = await browser.get("/ui/", headers=cookie)
        assert "needs take-over (another admin store)" in overview.text
        assert "/ui/nodes/c1/n1/take-over" in overview.text
        form = await browser.get("/ui/nodes/c1/n1/take-over", headers=cookie)
        assert old_store is not None and old_store in form.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        done = await browser.post("/ui/nodes/c1/n1/take-over", headers=cookie,
                                  data={"csrf": csrf.group(1), "reason": "database recreated"})
        assert done.status_code == 303
        page = await browser.get("/ui/", headers=cookie)
    assert "Applied by every node: n1" in page.text
    assert site.node.node.config.store not in (None, old_store)
