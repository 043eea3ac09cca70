"""Traffic seen by the admin: a real node's /metrics sampled into ``GET /api/v1/stats``.

An admin-managed node serves group ``web`` (backends ``a`` and ``b``); the admin samples it
every second. Requests sent through the node must show up as rates in the site's, the
group's and each member's series; a cluster's access log settings must reach the node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.admin import (
    AdminFactory,
    NodeFactory,
    NodeSite,
    SiteFactory,
    admin_factory,
    converge,
    node_factory,
    served_by,
    site_factory,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend

__all__ = ["admin_factory", "node_factory", "site_factory"]  # the fixtures this module uses

BackendFactory = Callable[..., Awaitable[Backend]]
FAST = {"stats": {"interval": 1, "window": 60}}


async def test_requests_through_a_node_become_rates_per_site_group_and_member(
        site_factory: SiteFactory) -> None:
    site: NodeSite = await site_factory({"web": ["a", "b"]}, **FAST)
    admin, node, a, b = site.admin, site.node, site.a, site.b
    viewer = admin.client("viewer")

    async def group_has_traffic() -> dict[str, Any] | None:
        await served_by(node, count=4)  # keep traffic flowing while the sampler ticks
        answer = (await viewer.get("/api/v1/stats", params={"scope": "group/web"})).json()
        rates = [r for r in answer["series"]["rps"] if r]
        members = answer.get("members", {})
        seen = all(any(r for r in members.get(m, {}).get("rps", []) if r)
                   for m in (a.address, b.address))
        return answer if rates and seen else None

    await wait_until(group_has_traffic, timeout=15.0, what="the group's rates")
    answer = await group_has_traffic()
    assert answer is not None
    assert answer["interval"] == 1 and len(answer["times"]) == len(answer["series"]["rps"])
    assert any(p is not None and p > 0 for p in answer["series"]["p99"])
    site = (await viewer.get("/api/v1/stats")).json()
    assert any(r for r in site["series"]["rps"] if r)
    later = (await viewer.get("/api/v1/stats",
                              params={"since": str(site["times"][-1])})).json()
    assert all(t > site["times"][-1] for t in later["times"])


async def test_stats_refuse_a_malformed_scope_and_an_unauthenticated_call(
        node_factory: NodeFactory, admin_factory: AdminFactory) -> None:
    admin = await admin_factory()
    reply = await admin.client("viewer").get("/api/v1/stats", params={"scope": "nodes"})
    assert reply.status_code == 400
    assert "expected site, cluster/<name>" in reply.json()["message"]
    assert (await admin.client("none").get("/api/v1/stats")).status_code == 401


async def test_a_clusters_access_log_reaches_its_admin_managed_node(
        tmp_path: Path, backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    a = await backend_factory(name="a")
    node = await node_factory("n1")
    path = tmp_path / "access.log"
    seed = site_seed({"n1": node}, {"web": [a.address]})
    seed["clusters"] = [{"name": "c1", "access_log": {"enabled": True, "path": str(path),
                                                      "format": "json"}}]
    admin = await admin_factory(seed)
    await converge(admin, node, after=0)
    assert await served_by(node, count=2) == ["a", "a"]

    def logged() -> bool:
        return path.exists() and len(path.read_text().splitlines()) >= 2

    await wait_until(logged, what="access log lines")
    assert '"group": "web"' in path.read_text().splitlines()[0]
