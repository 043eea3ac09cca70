"""Consul-backed groups end to end: Consul double -> admin watch -> pushes -> two real nodes.

The admin runs in-process with ``consul: {address: <double>, wait: 2}``; group ``web`` takes
its members from Consul service ``web``, whose instances are two real backends (``a``, ``b``)
registered with their 127.0.0.1 ports. Each node (``n1``, ``n2``) is an admin-managed proxy with
its own listener; what a Consul change does is checked through both nodes' traffic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.consul_double import ConsulDouble
from tests.support.admin import (
    HOST,
    LISTEN,
    AdminClients,
    AdminFactory,
    NodeFactory,
    RunningAdmin,
    admin_factory,
    applied_version,
    node_body,
    node_factory,
    nodes_in_sync,
    served_by,
    wait_until,
)
from tests.support.backends import Backend, free_port
from tests.support.proxy import RunningProxy

__all__ = ["admin_factory", "node_factory"]  # the fixtures this module uses

BackendFactory = Callable[..., Awaitable[Backend]]
ERRORS = "slb_admin_consul_watch_errors"
STALE = "slb_admin_group_stale"
CONTACT = "slb_admin_consul_last_contact_seconds"
SETTLE = 5.0  # a Consul change reaches both nodes well within this (watch rate: 1/s, burst 2)


@dataclass
class ConsulSite(AdminClients):
    admin: RunningAdmin
    double: ConsulDouble
    nodes: list[RunningProxy]
    a: Backend
    b: Backend

    async def op(self, address: str, op: str, group: str = "web") -> None:
        reply = await self.operator.post(f"/api/v1/groups/{group}/members/{address}/{op}",
                                         json={"reason": f"test {op}"})
        assert reply.status_code == 200, reply.text

    async def metrics(self, *families: str, group: str = "web") -> list[float | None]:
        """The value of each metric family for ``group`` in the admin's /metrics."""
        text = (await self.viewer.get("/metrics")).text
        return [metric(text, family, group) for family in families]

    async def served(self, path: str = "/", count: int = 4) -> list[set[str]]:
        """Per node, the backends (or error statuses) that answered ``count`` requests."""
        return [set(await served_by(node, count, path=path)) for node in self.nodes]

    async def nodes_hold(self, address: str, state: str | None, group: str = "web") -> None:
        """Wait until every node has ``address`` in ``state`` (None: not a member)."""
        await wait_until(lambda: all(node_state(n, group, address) == state
                                     for n in self.nodes),
                         SETTLE, f"both nodes to hold {address} as {state}")


def metric(text: str, family: str, group: str) -> float | None:
    for found in text_string_to_metric_families(text):
        if found.name == family:
            for sample in found.samples:
                if sample.labels.get("group") == group:
                    return float(sample.value)
    return None


def node_state(node: RunningProxy, group: str, address: str) -> str | None:
    pool = node.server.ctx.runtime.pools.get(group)
    member = pool.members.get(address) if pool is not None else None
    return None if member is None else str(member.state)


async def start_consul_site(backend_factory: BackendFactory, node_factory: NodeFactory,
                            admin_factory: AdminFactory, double: ConsulDouble, *,
                            register: tuple[str, ...] = ("a", "b"),
                            groups: list[dict[str, Any]] | None = None,
                            routes: dict[str, str] | None = None, wait_up: bool = True,
                            ) -> ConsulSite:
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    backends = {"a": a, "b": b}
    for name in register:
        double.register("web", f"web-{name}", "127.0.0.1", backends[name].port)
    nodes = [await node_factory("n1"), await node_factory("n2")]
    groups = groups or [{"name": "web", "consul": {"service": "web"}}]
    routes = routes or {"/": "web"}
    seed = {
        "clusters": [{"name": "c1"}],
        "nodes": [node_body(f"n{i + 1}", node) for i, node in enumerate(nodes)],
        "groups": groups,
        "virtual_servers": [{"name": "site", "cluster": "c1", "listen": LISTEN,
                             "domains": [HOST], "default": True}],
        "routes": [{"name": f"r{i}", "virtual_server": "site", "path": path, "group": group}
                   for i, (path, group) in enumerate(routes.items())],
    }
    admin = await admin_factory(seed=seed, consul={"address": double.address, "wait": 2})
    site = ConsulSite(admin, double, nodes, a, b)
    if wait_up:
        for name in register:
            await site.nodes_hold(backends[name].address, "up")
    return site


@pytest.fixture
async def site(double: ConsulDouble, backend_factory: BackendFactory,
               node_factory: NodeFactory, admin_factory: AdminFactory) -> ConsulSite:
    # the double first: it is torn down last, after the admin stopped watching it
    return await start_consul_site(backend_factory, node_factory, admin_factory, double)


async def test_both_nodes_serve_the_instances_registered_in_consul(site: ConsulSite) -> None:
    assert await site.served() == [{"a", "b"}, {"a", "b"}]
    view = await site.group()
    assert sorted((m["address"], m["state"], m["flags"]["health"]["who"])
                  for m in view["members"]) == sorted([(site.a.address, "up", "consul"),
                                                       (site.b.address, "up", "consul")])
    assert view["stale"] is None
    assert view["last_contact"] is not None


async def test_member_critical_in_consul_stops_traffic_on_both_nodes_and_passing_resumes(
        site: ConsulSite) -> None:
    site.double.set_check("web-a", "critical", "HTTP GET /health: 500")
    await site.nodes_hold(site.a.address, "down")
    assert await site.served() == [{"b"}, {"b"}]
    member = await site.find_member("web", site.a.address)
    assert member is not None
    assert (member["state"], member["held_by"]) == ("down", ["health"])
    assert member["flags"]["health"]["status"] == "critical"
    assert member["flags"]["health"]["at"] is not None  # the group page's "since"

    site.double.set_check("web-a", "passing")
    await site.nodes_hold(site.a.address, "up")
    assert await site.served() == [{"a", "b"}, {"a", "b"}]
    assert await nodes_in_sync(site.viewer)
    # each change once in the audit log, by consul, with its check's output
    changes = [e for e in (await site.viewer.get("/api/v1/audit", params={
        "target": f"member/web/{site.a.address}"})).json()["items"]
        if e["action"] == "health change"]
    assert [(e["who"], e["before"], e["after"]) for e in reversed(changes)] == [
        ("consul", {"health": "passing"}, {"health": "critical"}),
        ("consul", {"health": "critical"}, {"health": "passing"})]
    assert "critical" in changes[-1]["reason"]  # what Consul said about the check


async def test_consul_maintenance_holds_the_member_out_with_its_reason(
        site: ConsulSite) -> None:
    site.double.maintenance("web-b", True, "kernel upgrade")
    await site.nodes_hold(site.b.address, "down")
    assert await site.served() == [{"a"}, {"a"}]
    member = await site.find_member("web", site.b.address)
    assert member is not None
    assert member["held_by"] == ["maintenance"]
    assert (member["flags"]["maintenance"]["value"], member["flags"]["maintenance"]["why"]) \
        == (True, "kernel upgrade")

    site.double.maintenance("web-b", False)
    await site.nodes_hold(site.b.address, "up")
    assert await site.served() == [{"a", "b"}, {"a", "b"}]


async def test_instance_deregistered_in_consul_leaves_both_nodes(site: ConsulSite) -> None:
    site.double.deregister("web-b")
    await site.nodes_hold(site.b.address, None)
    assert await site.served() == [{"a"}, {"a"}]
    assert await site.find_member("web", site.b.address) is None


async def test_pull_out_holds_a_member_out_while_consul_says_passing_and_flapping(
        site: ConsulSite) -> None:
    await site.op(site.a.address, "pull-out")
    await site.nodes_hold(site.a.address, "drain")
    assert await site.served() == [{"b"}, {"b"}]

    # pulled out and failing is "down", pulled out and passing is "drain": never "up"
    for status, state in (("critical", "down"), ("passing", "drain"), ("critical", "down"),
                          ("passing", "drain")):
        site.double.set_check("web-a", status)
        await site.nodes_hold(site.a.address, state)
        assert await site.served() == [{"b"}, {"b"}], status
    member = await site.find_member("web", site.a.address)
    assert member is not None
    assert (member["state"], member["held_by"]) == ("drain", ["pull"])
    assert member["flags"]["health"]["status"] == "passing"

    await site.op(site.a.address, "pull-in")
    await site.nodes_hold(site.a.address, "up")
    assert await site.served() == [{"a", "b"}, {"a", "b"}]


async def test_consul_going_down_keeps_the_last_members_and_shows_the_group_stale(
        site: ConsulSite) -> None:
    versions = [applied_version(n) for n in site.nodes]
    await site.double.stop()

    async def stale() -> bool:
        return bool((await site.group())["stale"])

    await wait_until(stale, SETTLE, "the group to be shown stale")
    view = await site.group()
    assert sorted((m["address"], m["state"]) for m in view["members"]) == sorted([
        (site.a.address, "up"), (site.b.address, "up")])
    assert await site.served() == [{"a", "b"}, {"a", "b"}]
    assert [applied_version(n) for n in site.nodes] == versions  # nothing was pushed

    await site.double.restart()
    site.double.touch_service("web")  # an answer now rather than at the end of the wait

    async def current() -> bool:
        return (await site.group())["stale"] is None

    await wait_until(current, SETTLE, "the group to be current again")


async def test_admin_restarted_while_consul_is_down_keeps_the_last_known_members(
        site: ConsulSite, admin_factory: AdminFactory) -> None:
    site.double.set_check("web-b", "critical")
    await site.nodes_hold(site.b.address, "down")
    await site.double.stop()
    await site.admin.close()
    before = [applied_version(n) for n in site.nodes]

    restarted = await admin_factory(consul={"address": site.double.address, "wait": 2})
    site.admin = restarted
    await wait_until(lambda: all(applied_version(n) > v for n, v in zip(site.nodes, before,
                                                                        strict=True)),
                     SETTLE, "the restarted admin to push")
    await wait_until(lambda: nodes_in_sync(site.viewer), SETTLE, "nodes in sync")
    assert [node_state(n, "web", site.a.address) for n in site.nodes] == ["up", "up"]
    assert [node_state(n, "web", site.b.address) for n in site.nodes] == ["down", "down"]
    assert await site.served() == [{"a"}, {"a"}]

    async def stale() -> bool:
        return bool((await site.group())["stale"])

    await wait_until(stale, SETTLE, "the group to be shown stale")


async def test_new_instance_of_a_wait_for_pull_in_group_gets_no_traffic_until_pulled_in(
        double: ConsulDouble, backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start_consul_site(
        backend_factory, node_factory, admin_factory, double, register=("a",),
        groups=[{"name": "web", "consul": {"service": "web"},
                 "new_members": "wait_for_pull_in"}], wait_up=False)
    await site.nodes_hold(site.a.address, "drain")  # even the first one waits
    await site.op(site.a.address, "pull-in")
    await site.nodes_hold(site.a.address, "up")
    assert await site.served() == [{"a"}, {"a"}]

    double.register("web", "web-b", "127.0.0.1", site.b.port)
    await site.nodes_hold(site.b.address, "drain")
    member = await site.find_member("web", site.b.address)
    assert member is not None
    assert (member["held_by"], member["flags"]["health"]["status"]) == (["pull"], "passing")
    assert await site.served(count=6) == [{"a"}, {"a"}]
    assert site.b.requests == []

    await site.op(site.b.address, "pull-in")
    await site.nodes_hold(site.b.address, "up")
    assert await site.served() == [{"a", "b"}, {"a", "b"}]


async def test_passing_or_warning_policy_keeps_a_warning_member_and_passing_does_not(
        double: ConsulDouble, backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    site = await start_consul_site(
        backend_factory, node_factory, admin_factory, double,
        groups=[{"name": "web", "consul": {"service": "web"}},
                {"name": "lenient", "consul": {"service": "web"},
                 "health_policy": "passing_or_warning"}],
        routes={"/": "web", "/lenient": "lenient"})
    await site.nodes_hold(site.b.address, "up", group="lenient")
    double.set_check("web-b", "warning", "slow disk")
    await site.nodes_hold(site.b.address, "down", group="web")
    await site.nodes_hold(site.b.address, "up", group="lenient")
    assert await site.served("/") == [{"a"}, {"a"}]
    assert await site.served("/lenient") == [{"a", "b"}, {"a", "b"}]

    double.set_check("web-b", "critical")
    await site.nodes_hold(site.b.address, "down", group="lenient")
    assert await site.served("/lenient") == [{"a"}, {"a"}]


async def test_metrics_show_consul_watch_errors_stale_groups_and_last_contact(
        site: ConsulSite) -> None:
    errors, stale, fresh = await site.metrics(ERRORS, STALE, CONTACT)
    assert errors in (None, 0.0)
    assert stale == 0.0
    assert fresh is not None and fresh < SETTLE

    site.double.fail_with(500, path="/v1/health/service/web")
    site.double.set_check("web-a", "warning")  # ends the parked query; the next ones fail

    async def errors_counted() -> bool:
        errors, = await site.metrics(ERRORS)
        return (errors or 0) >= 1

    await wait_until(errors_counted, SETTLE, "a watch error in /metrics")

    async def contact_ages() -> bool:
        since, = await site.metrics(CONTACT)
        return since is not None and since >= 1.0

    await wait_until(contact_ages, SETTLE, "the last contact to age while Consul fails")
    assert await site.metrics(STALE) == [1.0]

    site.double.clear_faults()
    site.double.touch_service("web")

    async def contact_again() -> bool:
        since, stale = await site.metrics(CONTACT, STALE)
        return since is not None and since < 1.0 and stale == 0.0

    await wait_until(contact_again, SETTLE, "Consul to answer again")


async def test_health_change_reaches_the_nodes_as_a_pool_delta_not_a_full_snapshot(
        double: ConsulDouble, backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    # a cluster of two groups: a health change in one must travel as a PATCH of that group,
    # not as the whole snapshot (what a cluster of 10,000 groups could not afford per change)
    site = await start_consul_site(
        backend_factory, node_factory, admin_factory, double,
        groups=[{"name": "web", "consul": {"service": "web"}},
                {"name": "static", "members": [{"address": "127.0.0.1:9"}]}],
        routes={"/": "web", "/static": "static"})
    await wait_until(lambda: nodes_in_sync(site.viewer), SETTLE, "nodes in sync")
    before = {i["name"]: i for i in (await site.viewer.get("/api/v1/nodes")).json()["items"]}
    double.set_check("web-a", "critical")
    await site.nodes_hold(site.a.address, "down")
    await wait_until(lambda: nodes_in_sync(site.viewer), SETTLE, "nodes in sync")
    after = {i["name"]: i for i in (await site.viewer.get("/api/v1/nodes")).json()["items"]}
    assert {name: (i["delta_pushes"] - before[name]["delta_pushes"],
                   i["full_pushes"] - before[name]["full_pushes"]) for name, i in after.items()} \
        == {"n1": (1, 0), "n2": (1, 0)}


async def test_consul_weight_above_the_proxy_limit_does_not_freeze_the_cluster(
        site: ConsulSite) -> None:
    # Consul accepts any positive weight; the data plane takes at most 10000. One such
    # registration must not stop every other change of the cluster from reaching the nodes.
    site.double.register("web", "web-heavy", "127.0.0.1", free_port(),
                         weights={"Passing": 20000, "Warning": 1})
    site.double.set_check("web-a", "critical")
    await site.nodes_hold(site.a.address, "down")
    assert await site.served() == [{"b"}, {"b"}]
