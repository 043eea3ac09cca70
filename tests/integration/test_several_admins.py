"""Several admins on one store and one Consul: one leader, handover, changes from any admin.

Two in-process admins share the test's store (an SQLite file, or a PostgreSQL database: each
test runs on both) and a Consul double with a default agent's settings (``session_ttl_min``
10 s).
Each admin talks to Consul through its own port of the double (``client_port``), standing for
its own local agent, so a fault can cut one admin off while the other still reaches Consul.
Elections use the default settings (a 10 s session TTL bound to a 3 s TTL check, 1 s of
lock-delay) and a 0.1 s store poll. Two nodes (``n1``, ``n2``) serve group ``web`` (static
members ``a`` and ``b``); what reached them is read from their pools.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.consul_double import ConsulDouble
from tests.integration.test_admin_consul import node_state
from tests.support.admin import (
    TOKENS,
    AdminFactory,
    NodeFactory,
    RunningAdmin,
    admin_factory,
    node_factory,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend
from tests.support.proxy import RunningProxy

__all__ = ["admin_factory", "node_factory"]  # the fixtures this module uses

BackendFactory = Callable[..., Awaitable[Backend]]
ELECTION = {"enabled": True, "poll": 0.1}
CHECK_TTL = 3.0  # election.check_ttl's default
# a cut-off leader's check goes critical after its TTL, then lock-delay (1 s); elections take a
# few rounds more
TAKEOVER = CHECK_TTL + 1.0 + 3.0


@pytest.fixture
async def default_double() -> AsyncIterator[ConsulDouble]:
    started = await ConsulDouble.start()
    yield started
    await started.close()


@dataclass
class Cluster:
    double: ConsulDouble
    admins: dict[str, RunningAdmin]
    nodes: list[RunningProxy]
    a: Backend
    b: Backend

    async def leader_view(self, name: str) -> dict[str, Any]:
        reply = await self.admins[name].client("viewer").get("/api/v1/leader")
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    def leaders(self) -> list[str]:
        return [n for n, a in self.admins.items() if not a.closed and a.admin.leading]

    async def one_leader(self, timeout: float = 5.0) -> str:
        await wait_until(lambda: len(self.leaders()) == 1, timeout, "exactly one leader")
        return self.leaders()[0]

    async def pull_out(self, via: str, address: str) -> httpx.Response:
        return await self.admins[via].client("operator").post(
            f"/api/v1/groups/web/members/{address}/pull-out", json={"reason": "deploy"})

    async def nodes_hold(self, address: str, state: str, timeout: float = 5.0) -> None:
        await wait_until(lambda: all(node_state(n, "web", address) == state
                                     for n in self.nodes),
                         timeout, f"both nodes to hold {address} as {state}")


async def start_admin(admin_factory: AdminFactory, double: ConsulDouble, name: str,
                      seed: dict[str, Any] | None) -> RunningAdmin:
    port = await double.client_port(name)  # this admin's own "local agent"
    return await admin_factory(seed=seed, name=name, election=ELECTION,
                               consul={"address": f"127.0.0.1:{port}", "wait": 2})


@pytest.fixture
async def cluster(default_double: ConsulDouble, backend_factory: BackendFactory,
                  node_factory: NodeFactory, admin_factory: AdminFactory) -> Cluster:
    a, b = await backend_factory(name="a"), await backend_factory(name="b")
    nodes = {"n1": await node_factory("n1"), "n2": await node_factory("n2")}
    seed = site_seed(nodes, {"web": [a.address, b.address]})
    # started at once, both with the seed: one seeds, both elect, exactly one leads
    first, second = await asyncio.gather(
        start_admin(admin_factory, default_double, "admin-1", seed),
        start_admin(admin_factory, default_double, "admin-2", seed))
    found = Cluster(default_double, {"admin-1": first, "admin-2": second}, list(nodes.values()),
                    a, b)
    await found.one_leader()
    await found.nodes_hold(a.address, "up")
    return found


async def test_two_admins_started_at_once_elect_exactly_one_leader(cluster: Cluster) -> None:
    leader = await cluster.one_leader()
    follower = next(n for n in cluster.admins if n != leader)
    views = [await cluster.leader_view(n) for n in (leader, follower)]
    assert views[0]["leader"] == views[1]["leader"]
    assert views[0]["leader"]["admin"] == leader
    assert views[0]["leader"]["address"] == cluster.admins[leader].url
    assert (views[0]["leading"], views[1]["leading"]) == (True, False)
    assert views[1]["this_admin"] == follower
    # it stays that way: the follower never leads while the leader renews its session
    for _ in range(20):
        assert cluster.leaders() == [leader]
        await asyncio.sleep(0.05)
    # the nodes took the leader's term
    term = views[0]["leader"]["term"]
    assert all(n.node.term == term for n in cluster.nodes)


async def test_a_pull_out_on_the_follower_reaches_every_node_through_the_leader(
        cluster: Cluster) -> None:
    leader = await cluster.one_leader()
    follower = next(n for n in cluster.admins if n != leader)
    reply = await cluster.pull_out(follower, cluster.a.address)
    assert reply.status_code == 200, reply.text
    await cluster.nodes_hold(cluster.a.address, "drain")
    # the follower pushed nothing itself: it has no pusher running
    assert cluster.admins[follower].admin.service.publisher.pushers == {}


async def test_a_stopped_leader_hands_over_and_the_new_term_fences_the_old(
        cluster: Cluster) -> None:
    old = await cluster.one_leader()
    new = next(n for n in cluster.admins if n != old)
    old_term = (await cluster.leader_view(new))["leader"]["term"]
    assert sorted(e["Service"]["ID"] for e in cluster.double.health("slb-admin")) == [
        "slb-admin-admin-1", "slb-admin-admin-2"]  # each admin's check, passing
    await cluster.admins[old].close()  # releases the lock: no TTL to wait for
    await wait_until(lambda: cluster.leaders() == [new], 3.0, "the follower to lead")
    # and takes its check off its agent: nothing critical is left behind
    assert [e["Service"]["ID"] for e in cluster.double.health("slb-admin")] == [
        f"slb-admin-{new}"]
    view = await cluster.leader_view(new)
    assert view["leader"]["admin"] == new
    assert view["leader"]["term"] > old_term
    reply = await cluster.pull_out(new, cluster.b.address)
    assert reply.status_code == 200, reply.text
    await cluster.nodes_hold(cluster.b.address, "drain")
    assert all(n.node.term == view["leader"]["term"] for n in cluster.nodes)


async def test_a_leader_cut_off_from_consul_steps_down_and_the_nodes_keep_serving(
        cluster: Cluster) -> None:
    old = await cluster.one_leader()
    new = next(n for n in cluster.admins if n != old)
    await cluster.double.stop(client=old)  # only the leader's agent is unreachable
    # it steps down once a check TTL passed without a pass, before Consul can invalidate its
    # session
    await wait_until(lambda: not cluster.admins[old].admin.leading, CHECK_TTL + 2.0,
                     "the cut-off leader to step down")
    for node in cluster.nodes:  # nobody pushed anything away: still serving both members
        assert node_state(node, "web", cluster.a.address) == "up"
    await wait_until(lambda: cluster.leaders() == [new], TAKEOVER, "the other admin to lead")
    reply = await cluster.pull_out(old, cluster.a.address)  # made on the deposed admin
    assert reply.status_code == 200, reply.text
    await cluster.nodes_hold(cluster.a.address, "drain")


async def test_a_leader_whose_check_consul_failed_steps_down_at_once_and_one_leads_again(
        cluster: Cluster) -> None:
    old = await cluster.one_leader()
    old_term = (await cluster.leader_view(old))["leader"]["term"]
    # Consul fails the leader's check (an operator, or a TTL missed during a pause): its session
    # is invalidated and the lock released; the leader sees it on its blocking read of the key,
    # before its next pass or renew could tell it
    cluster.double.set_check(f"slb-admin-{old}", "critical")
    # (within a check TTL: sooner than any expiry could have deposed it; a tighter bound
    # would time the machine, not the mechanism)
    await wait_until(lambda: not cluster.admins[old].admin.leading, CHECK_TTL,
                     "the leader to step down")
    await wait_until(lambda: len(cluster.leaders()) == 1, TAKEOVER, "one admin to lead again")
    leader = cluster.leaders()[0]
    assert (await cluster.leader_view(leader))["leader"]["term"] > old_term


async def test_leader_api_needs_a_token(cluster: Cluster) -> None:
    reply = await cluster.admins["admin-1"].client("none").get("/api/v1/leader")
    assert reply.status_code == 401
    assert TOKENS  # the roles' tokens are the ones the admins were started with


async def test_a_canary_is_refused_on_a_follower_and_names_the_leader(cluster: Cluster) -> None:
    leader = await cluster.one_leader()
    follower = next(n for n in cluster.admins if n != leader)
    reply = await cluster.admins[follower].client("admin").post("/api/v1/activate", json={
        "reason": "canary", "canary": {"nodes": ["n1"], "watch_seconds": 60}})
    assert reply.status_code == 409, reply.text
    assert f"start the canary on {cluster.admins[leader].url}" in reply.json()["message"]
