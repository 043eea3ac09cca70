"""The pusher (admin/push/pusher.py) against nodes whose data plane is a fake: what goes on the
wire per change, and on how many connections.

Each node is a real ``slb.node.node.Node`` (its control API on a loopback port, its rules on
versions and terms) over ``FakePlane``; its requests are recorded by wrapping ``handle``, and
the connections it accepted are counted by its control server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from admin.domain.publisher import Publisher
from admin.push.pusher import NodeTarget, Pusher
from slb.model import Config, parse_config
from slb.node.control import ControlProtocol, Request, Response
from slb.node.node import Node
from tests.support.timing import wait_until
from tests.unit.slb.node.test_node import LOCAL, TOKEN, FakePlane

A, B = "10.0.0.1:80", "10.0.0.2:80"
NAMES = [f"g{i:03d}" for i in range(150)]


class Recorded:
    """A node, the requests it answered and the connections it accepted."""

    def __init__(self, node: Node, plane: FakePlane) -> None:
        self.node = node
        self.plane = plane
        self.requests: list[tuple[str, str]] = []
        self.accepted = 0
        # called with each request; True: the request is lost (never handled, never answered)
        self.on_request: Callable[[Request], bool] | None = None
        self.hold: asyncio.Event | None = None  # set: requests wait for it (a stopped node)
        handle = node.handle

        async def recording(request: Request) -> Response:
            self.requests.append((request.method, request.path))
            if self.on_request is not None and self.on_request(request):
                return Response.error(503, "lost")  # (never written: the connection is gone)
            if self.hold is not None:
                await self.hold.wait()
            return await handle(request)

        node.handle = recording  # type: ignore[method-assign]  (before start: it serves this)

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] != "GET"]

    def drop_connections(self) -> None:
        """What a node's restart does to an admin's pooled connection: it is closed."""
        assert self.node.control is not None
        for connection in list(self.node.control.connections):
            assert connection.transport is not None
            connection.transport.abort()


@pytest.fixture
async def nodes(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[[int],
                                                                          Awaitable[list[Recorded]]]]:
    started: list[Recorded] = []
    by_handler: dict[Any, Recorded] = {}
    made = ControlProtocol.connection_made

    def counting(self: ControlProtocol, transport: Any) -> None:
        owner = by_handler.get(self.handler)
        if owner is not None:
            owner.accepted += 1
        made(self, transport)

    monkeypatch.setattr(ControlProtocol, "connection_made", counting)

    async def make(count: int) -> list[Recorded]:
        for _ in range(count):
            plane = FakePlane()
            node = Node(LOCAL, plane)
            recorded = Recorded(node, plane)
            by_handler[node.handle] = recorded  # (the server calls the node's handle)
            await node.start()
            started.append(recorded)
        return started[-count:]

    yield make
    for recorded in started:
        await recorded.node.close()


def target(i: int, recorded: Recorded) -> NodeTarget:
    return NodeTarget(f"n{i}", f"http://127.0.0.1:{recorded.node.control_port}", TOKEN)


def snapshot(version: int, pulled: set[str] = frozenset()) -> Config:
    return parse_config({"version": version, "groups": [
        {"name": name, "members": [{"address": A}, {"address": B,
                                                   "state": "down" if name in pulled else "up"}]}
        for name in NAMES]})


async def synced(pusher: Pusher, config: Config, changed: set[str] | None = None) -> None:
    pusher.publish(config, changed_groups=changed)
    assert await pusher.wait_in_sync(config.version, timeout=5)


@pytest.fixture
async def pusher() -> AsyncIterator[Pusher]:
    made = Pusher(backoff_max=0.2)
    await made.start()
    yield made
    await made.close()


async def test_a_flip_of_100_groups_is_one_request_per_node_on_one_connection(
        nodes: Callable[[int], Awaitable[list[Recorded]]], pusher: Pusher) -> None:
    recorded = await nodes(3)
    pusher.set_nodes([target(i, r) for i, r in enumerate(recorded)])
    await synced(pusher, snapshot(1))
    flips = [set(NAMES[:100]), set(NAMES[50:150]), set()]
    for version, pulled in enumerate(flips, start=2):
        before = snapshot(version - 1, flips[version - 3] if version > 2 else set())
        changed = {g.name for g, h in zip(before.groups, snapshot(version, pulled).groups,
                                          strict=True) if g != h}
        await synced(pusher, snapshot(version, pulled), changed)
    for r in recorded:
        # one PUT to start, then one PATCH /v1/groups per flip, whatever its size
        assert r.changes == [("PUT", "/v1/config")] + [("PATCH", "/v1/groups")] * 3
        assert r.plane.deltas[0] == NAMES[:100]
        assert r.node.config.version == 4
        assert r.accepted == 1  # every request on the one keep-alive connection
    assert all((s["full_pushes"], s["delta_pushes"], s["failures"]) == (1, 3, 0)
               for s in pusher.status())


async def test_a_pooled_connection_that_breaks_costs_no_push(
        nodes: Callable[[int], Awaitable[list[Recorded]]], pusher: Pusher) -> None:
    [node] = await nodes(1)
    pusher.set_nodes([target(0, node)])
    await synced(pusher, snapshot(1))

    # closed while idle (a restart between two pushes): the next push opens a new one
    node.drop_connections()
    await synced(pusher, snapshot(2, {"g000"}), {"g000"})

    # closed as the request arrives, before any answer: sent again on a new connection
    def lose_once(applied: bool) -> Callable[[Request], bool]:
        def hook(request: Request) -> bool:
            node.on_request = None
            node.drop_connections()
            return not applied
        return hook

    node.on_request = lose_once(applied=False)
    await synced(pusher, snapshot(3), {"g000"})
    # ... and applied before the connection broke: the retry is refused, the node asked
    node.on_request = lose_once(applied=True)
    await synced(pusher, snapshot(4, {"g001"}), {"g001"})

    assert node.node.config.version == 4
    assert node.changes == [("PUT", "/v1/config")] + [("PATCH", "/v1/groups")] * 5
    assert node.plane.deltas == [["g000"], ["g000"], ["g001"]]
    assert node.accepted == 4
    [state] = pusher.status()
    assert (state["failures"], state["last_error"]) == (0, None)
    assert (state["full_pushes"], state["delta_pushes"]) == (1, 3)


async def test_a_stopped_node_delays_no_other(
        nodes: Callable[[int], Awaitable[list[Recorded]]]) -> None:
    recorded = await nodes(3)
    pusher = Pusher(timeout=30, backoff_max=0.2)  # the stopped node would hold 30 s
    pusher.set_nodes([target(i, r) for i, r in enumerate(recorded)])
    await pusher.start()
    try:
        await synced(pusher, snapshot(1))
        stuck = recorded[0].hold = asyncio.Event()  # like SIGSTOP: connected, no answer
        pusher.publish(snapshot(2, {"g001"}), changed_groups={"g001"})
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not all(s["in_sync"] for s in pusher.status()[1:]):
            assert loop.time() - started < 5, "the other nodes waited for the stopped one"
            await asyncio.sleep(0.005)
        assert not pusher.status()[0]["in_sync"]
        stuck.set()
    finally:
        await pusher.close()


async def test_the_full_snapshot_body_is_let_go_once_every_node_has_it_and_made_again(
        nodes: Callable[[int], Awaitable[list[Recorded]]], pusher: Pusher) -> None:
    first, second, late = await nodes(3)
    pusher.set_nodes([target(0, first), target(1, second)])
    config = snapshot(1)
    pusher.publish(config)
    assert await pusher.wait_in_sync(1, timeout=5)
    # (issue 15: 11 MB at 10,000 groups, kept until the next activation before)
    assert pusher._body is None
    # a node added later gets the same snapshot, serialised again
    pusher.set_nodes([target(0, first), target(1, second), target(2, late)])
    assert await pusher.wait_in_sync(1, timeout=5)
    assert late.changes == [("PUT", "/v1/config")]
    assert late.node.config.content_hash() == config.content_hash()
    assert pusher._body is None


async def test_the_node_view_is_made_once_per_change_and_shows_every_change(
        nodes: Callable[[int], Awaitable[list[Recorded]]], pusher: Pusher) -> None:
    recorded = await nodes(2)
    publisher = Publisher(None, lambda content: {})  # type: ignore[arg-type]  (no store read)
    publisher.pushers["c1"] = pusher
    pusher.set_nodes([target(i, r) for i, r in enumerate(recorded)])
    await synced(pusher, snapshot(1))
    seen = publisher.nodes_json()
    assert [(n["cluster"], n["applied_version"], n["in_sync"])
            for n in json.loads(seen)["items"]] == [("c1", 1, True)] * 2
    assert publisher.nodes_json() is seen  # nothing changed: the same bytes, not made again
    pusher.publish(snapshot(2, {NAMES[0]}), changed_groups={NAMES[0]})
    # at once (no await since the publish: no node could apply it yet): both are behind
    assert [(n["desired_version"], n["applied_version"], n["in_sync"])
            for n in json.loads(publisher.nodes_json())["items"]] == [(2, 1, False)] * 2
    assert await pusher.wait_in_sync(2, timeout=5)
    assert [(n["applied_version"], n["in_sync"], n["delta_pushes"])
            for n in json.loads(publisher.nodes_json())["items"]] == [(2, True, 1)] * 2
    assert json.loads(publisher.nodes_json()) == {"items": publisher.nodes()}


async def test_waiting_for_the_nodes_stops_waiting_for_one_that_was_removed(
        nodes: Callable[[int], Awaitable[list[Recorded]]], pusher: Pusher) -> None:
    from tests.support.backends import free_port

    recorded, = await nodes(1)
    gone = NodeTarget("gone", f"http://127.0.0.1:{free_port()}", TOKEN)  # never answers
    pusher.set_nodes([target(0, recorded), gone])
    pusher.publish(snapshot(1))
    waiting = asyncio.create_task(pusher.wait_in_sync(1, timeout=30))
    # the live node applies it; the other never can, so the wait goes on ...
    assert await wait_until(lambda: pusher.applied_version("n0") == 1, timeout=10)
    for _ in range(3):  # (the wait's task has seen that change: it woke with the test)
        await asyncio.sleep(0)
    assert not waiting.done()
    # ... until it is taken out of the cluster: every node left has the version
    pusher.set_nodes([target(0, recorded)])
    assert await asyncio.wait_for(waiting, 10)
