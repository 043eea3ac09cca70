"""Canary activation (issue 13) with an admin and two real nodes: the draft goes to the canary
node first; a member that answers 500 there rolls it back automatically, with the figures in the
audit log; a canary that stays well is promoted to every node."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from admin.app import create_app
from tests.support.admin import (
    TOKENS,
    RunningAdmin,
    admin_factory,
    applied_version,
    converge,
    node_factory,
    served_by,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.proxy import RunningProxy

__all__ = ["admin_factory", "node_factory"]  # the fixtures


async def failing(req: ReceivedRequest, writer: asyncio.StreamWriter, backend: Backend) -> None:
    writer.write(response(500, b"bad broken\n"))


async def site(backend_factory: Any, node_factory: Any, admin_factory: Any
               ) -> tuple[RunningAdmin, RunningProxy, RunningProxy]:
    good = await backend_factory(name="good")
    bad = await backend_factory(name="bad", handler=failing)
    n1, n2 = await node_factory("n1"), await node_factory("n2")
    admin = await admin_factory(seed=site_seed(
        {"n1": n1, "n2": n2},
        {"web": [good.address], "broken": [bad.address], "web2": [good.address]}))
    await converge(admin, n1, n2, after=0)
    return admin, n1, n2


async def route_to(admin: RunningAdmin, group: str) -> None:
    client = admin.client("admin")
    route = (await client.get("/api/v1/routes/r0")).json()
    reply = await client.put("/api/v1/routes/r0", json={
        **{k: v for k, v in route.items() if k not in ("updated_at", "updated_by")},
        "group": group, "reason": f"route to {group}"})
    assert reply.status_code == 200, reply.text


async def canary_state(admin: RunningAdmin) -> str | None:
    view = (await admin.client("viewer").get("/api/v1/canary")).json()["canary"]
    return view["state"] if view else None


async def test_a_canary_answering_500_is_rolled_back_with_its_figures(
        backend_factory: Any, node_factory: Any, admin_factory: Any) -> None:
    admin, n1, n2 = await site(backend_factory, node_factory, admin_factory)
    active = (await admin.client("viewer").get("/api/v1/versions")).json()
    await route_to(admin, "broken")
    before = applied_version(n1)
    reply = await admin.client("admin").post("/api/v1/activate", json={
        "reason": "try broken", "canary": {"nodes": ["n1"], "watch_seconds": 60,
                                           "max_error_ratio": 0.02}})
    assert reply.status_code == 200, reply.text
    assert applied_version(n1) > before  # the canary node has the draft ...
    assert set(await served_by(n2, 4)) == {"good"}  # ... the others do not
    assert set(await served_by(n1, 25)) == {"500"}

    await wait_until(lambda: _is(admin, "rolled_back"), timeout=10, what="automatic rollback")
    await wait_until(lambda: _serves(n1, "good"), timeout=10, what="n1 back on the active one")
    assert (await admin.client("viewer").get("/api/v1/versions")).json() == active
    audit = (await admin.client("viewer").get("/api/v1/audit",
                                              params={"target": "version/canary"})).json()
    decision = next(item for item in audit["items"] if item["action"] == "canary rollback")
    assert decision["result"].startswith("failed: automatic")
    assert decision["after"]["canary"]["errors"] >= 20
    assert decision["after"]["canary"]["error_ratio"] == 1.0
    assert (await admin.client("viewer").get("/api/v1/draft")).json()["pending"] is True


async def test_a_canary_that_stays_well_is_promoted_to_every_node(
        backend_factory: Any, node_factory: Any, admin_factory: Any) -> None:
    admin, n1, n2 = await site(backend_factory, node_factory, admin_factory)
    await route_to(admin, "web2")
    reply = await admin.client("admin").post("/api/v1/activate", json={
        "reason": "move to web2", "canary": {"percent": 50, "watch_seconds": 1}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["nodes"] == ["n1"]
    assert set(await served_by(n1, 4)) == {"good"}
    await wait_until(lambda: _is(admin, "promoted"), timeout=10, what="promotion")
    view = (await admin.client("viewer").get("/api/v1/canary")).json()["canary"]
    await converge(admin, n1, n2, after=0)
    assert n1.node.config.content_hash() == n2.node.config.content_hash()
    versions = (await admin.client("viewer").get("/api/v1/versions")).json()
    assert view["version"] == versions["active"] == 2


async def test_a_bad_canary_request_is_refused_with_every_mistake(
        backend_factory: Any, node_factory: Any, admin_factory: Any) -> None:
    admin, _, _ = await site(backend_factory, node_factory, admin_factory)
    reply = await admin.client("admin").post("/api/v1/activate", json={
        "reason": "x", "canary": {"nodes": ["n9"], "percent": 10, "watch_seconds": 0}})
    assert reply.status_code == 400
    assert reply.json()["details"] == ["canary: expected exactly one of nodes, percent",
                                      "canary.watch_seconds: expected seconds, above 0"]
    every = await admin.client("admin").post("/api/v1/activate", json={
        "reason": "x", "canary": {"nodes": ["n1", "n2"]}})
    assert every.status_code == 400


async def _is(admin: RunningAdmin, state: str) -> bool:
    return await canary_state(admin) == state


async def _serves(node: RunningProxy, name: str) -> bool:
    return set(await served_by(node, 2)) == {name}


async def test_the_ui_starts_a_canary_shows_its_ratios_live_and_aborts_it(
        backend_factory: Any, node_factory: Any, admin_factory: Any) -> None:
    admin, n1, _ = await site(backend_factory, node_factory, admin_factory)
    await route_to(admin, "broken")
    # the admin's own service behind an in-process app: on 127.0.0.1 the session cookie is
    # Secure (as browsers treat loopback), which httpx would not send over plain HTTP
    app = create_app(admin.admin.config, admin.admin.service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 timeout=5.0) as browser:
        login = await browser.get("/ui/login")
        await browser.post("/ui/login", data={"csrf": _field(login.text, "csrf"),
                                              "token": TOKENS["admin"], "next": ""})
        page = await browser.get("/ui/canary")
        assert page.status_code == 200 and 'id="canary-form"' in page.text
        started = await browser.post("/ui/canary/start", data={
            "csrf": _field(page.text, "csrf"), "nodes": "n1", "percent": "",
            "watch_seconds": "60", "max_error_ratio": "0.5", "reason": "canary by hand"})
        assert started.status_code == 303, started.text
        await served_by(n1, 5)  # five 500s: below MIN_REQUESTS, no automatic verdict
        live = await browser.get("/ui/canary")
        assert live.headers["refresh"] == "2"  # reloads itself while watching
        assert 'id="abort"' in live.text and 'id="promote"' in live.text
        await wait_until(lambda: _shows(browser, "5 of 5 requests (100.00%)"), timeout=10,
                         what="the canary's live ratio")
        aborted = await browser.post("/ui/canary/abort", data={"csrf": _field(live.text,
                                                                                "csrf")})
        assert aborted.status_code == 303
        final = (await browser.get("/ui/canary")).text
        assert "rolled back" in final and "aborted by ada" in final
    await wait_until(lambda: _serves(n1, "good"), timeout=10, what="n1 back on the active one")


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no {name} field"
    return found.group(1)


async def _shows(browser: httpx.AsyncClient, text: str) -> bool:
    return text in (await browser.get("/ui/canary")).text
