"""The admin's pusher against real in-process admin-managed nodes.

Each node is a real ``Node`` with its control API on a kernel-chosen port (or a fixed one, to
restart it "at the same address"). What a node was sent is observed on the node itself: its
``put_config`` / ``patch_groups`` are wrapped to record each change that passed authentication,
and ``GET /v1/config`` gives its applied version and hash. Traffic is checked through the node's
data port, by the backends' ``X-Backend`` header.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from admin.push.pusher import NodeTarget, Pusher
from slb.model import Config, parse_config
from tests.support.backends import Backend, free_port, named_backends
from tests.support.client import answered_by
from tests.support.control import ControlClient
from tests.support.proxy import RunningProxy, snapshot_data, start_proxy
from tests.support.proxy import member_entry as member

BackendFactory = Callable[..., Awaitable[Backend]]
TOKEN = "t"
LISTEN = "127.0.0.1:0"


# -- helpers ----------------------------------------------------------------------------------


def snapshot(version: int, groups: dict[str, list[dict[str, Any]]],
             settings: dict[str, dict[str, Any]] | None = None) -> Config:
    return parse_config(snapshot_data(version, groups, settings))


def target(name: str, proxy: RunningProxy, token: str | None = TOKEN) -> NodeTarget:
    return NodeTarget(name, f"http://127.0.0.1:{proxy.control_port}", token)


def record_changes(proxy: RunningProxy) -> list[tuple[Any, ...]]:
    """The changes the node is asked to apply, in order: ("PUT", version) and
    ("PATCH", (group, ...), base_version, version): one PATCH /v1/groups each."""
    calls: list[tuple[Any, ...]] = []
    node = proxy.node
    put, patch = node.put_config, node.patch_groups

    # the node hands these the body's bytes (it validates a delta straight from them)
    async def put_config(body: bytes, term: int | None = None, take_over: bool = False
                         ) -> Config:
        calls.append(("PUT", json.loads(body).get("version")))
        return await put(body, term, take_over)

    async def patch_groups(body: bytes, term: int | None = None) -> Config:
        data = json.loads(body)
        calls.append(("PATCH", tuple(g["name"] for g in data["groups"]),
                      data.get("base_version"), data.get("version")))
        return await patch(body, term)

    node.put_config = put_config  # type: ignore[method-assign]
    node.patch_groups = patch_groups  # type: ignore[method-assign]
    return calls


async def node_view(proxy: RunningProxy) -> tuple[int, str]:
    view = await ControlClient(proxy.control_port, TOKEN).config()
    return view["version"], view["hash"]


async def served_by(proxy: RunningProxy, count: int, path: str = "/") -> list[str | None]:
    return await answered_by(proxy.server.listener_port(LISTEN), count, path)


def status_of(pusher: Pusher, name: str) -> dict[str, Any]:
    return next(s for s in pusher.status() if s["name"] == name)


async def publish_synced(pusher: Pusher, config: Config, changed_groups: set[str] | None = None,
                         timeout: float = 2) -> Config:
    """Publish ``config`` and assert every node applied its version within ``timeout``."""
    pusher.publish(config, changed_groups=changed_groups)
    assert await pusher.wait_in_sync(config.version, timeout=timeout)
    return config


async def push_behind_pusher(node: RunningProxy, version: int,
                             groups: dict[str, list[dict[str, Any]]]) -> str:
    """Apply a snapshot straight to the node's control API; its hash."""
    reply = await ControlClient(node.control_port, TOKEN).push(snapshot_data(version, groups))
    assert reply.status == 200, reply.body
    return str(reply.json()["hash"])


async def until(condition: Callable[[], bool], what: str, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


NodeFactory = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """``await node_factory(name, port=0)``: an admin-managed node with state in tmp/name."""
    started: list[RunningProxy] = []

    async def make(name: str, port: int = 0) -> RunningProxy:
        proxy = await start_proxy({"control": {"listen": f"127.0.0.1:{port}", "token": TOKEN},
                                   "state_dir": str(tmp_path / name)})
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()


PusherFactory = Callable[..., Awaitable[Pusher]]


@pytest.fixture
async def pusher_factory() -> AsyncIterator[PusherFactory]:
    made: list[Pusher] = []

    async def make(nodes: list[NodeTarget], **options: Any) -> Pusher:
        pusher = Pusher(**options)
        pusher.set_nodes(nodes)
        await pusher.start()
        made.append(pusher)
        return pusher

    yield make
    for pusher in made:
        await pusher.close()


async def recorded_nodes(node_factory: NodeFactory, pusher_factory: PusherFactory, *names: str
                         ) -> tuple[list[RunningProxy], list[list[tuple[Any, ...]]], Pusher]:
    """Nodes NAMES with their changes recorded, and a pusher aimed at all of them."""
    nodes = [await node_factory(name) for name in names]
    calls = [record_changes(node) for node in nodes]
    pusher = await pusher_factory([target(name, node) for name, node in zip(names, nodes,
                                                                            strict=True)])
    return nodes, calls, pusher


# -- full snapshots and deltas ----------------------------------------------------------------


async def test_full_snapshot_reaches_every_node_and_traffic_follows(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    (n1, n2), (calls1, calls2), pusher = await recorded_nodes(node_factory, pusher_factory,
                                                             "n1", "n2")

    first = await publish_synced(pusher, snapshot(1, {"g": [member(b1)]}))
    for proxy in (n1, n2):
        assert await node_view(proxy) == (1, first.content_hash())
        assert await served_by(proxy, 3) == ["b1"] * 3

    second = await publish_synced(pusher, snapshot(2, {"g": [member(b2)]}))
    for proxy in (n1, n2):
        assert await node_view(proxy) == (2, second.content_hash())
        assert await served_by(proxy, 3) == ["b2"] * 3
    assert calls1 == calls2 == [("PUT", 1), ("PUT", 2)]
    assert all(s["in_sync"] and s["full_pushes"] == 2 for s in pusher.status())


async def test_member_change_of_one_group_is_sent_as_a_patch(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    (n1, n2), (calls1, calls2), pusher = await recorded_nodes(node_factory, pusher_factory,
                                                             "n1", "n2")
    await publish_synced(pusher, snapshot(1, {"g": [member(b1), member(b2)]}))

    drained = snapshot(2, {"g": [member(b1), member(b2, state="down")]})
    await publish_synced(pusher, drained, changed_groups={"g"})

    assert calls1 == calls2 == [("PUT", 1), ("PATCH", ("g",), 1, 2)]
    for proxy in (n1, n2):
        assert await node_view(proxy) == (2, drained.content_hash())
        assert await served_by(proxy, 4) == ["b1"] * 4
    assert [(s["full_pushes"], s["delta_pushes"]) for s in pusher.status()] == [(1, 1), (1, 1)]


async def test_changes_in_several_groups_are_one_batch_whatever_the_version_gap(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2, b3 = await named_backends(backend_factory, "b1", "b2", "b3")
    (node,), (calls,), pusher = await recorded_nodes(node_factory, pusher_factory, "n1")
    await publish_synced(pusher, snapshot(1, {"g": [member(b1)], "h": [member(b2)]}))

    # two groups changed and the version moved by two: one PATCH, 1 -> 3
    third = snapshot(3, {"g": [member(b1, weight=2)], "h": [member(b2), member(b3)]})
    await publish_synced(pusher, third, changed_groups={"g", "h"})
    assert calls[1:] == [("PATCH", ("g", "h"), 1, 3)]
    assert await node_view(node) == (3, third.content_hash())

    # two groups changed and the version moved by one: still one PATCH, 3 -> 4
    fourth = snapshot(4, {"g": [member(b1, weight=3)], "h": [member(b3)]})
    await publish_synced(pusher, fourth, changed_groups={"g", "h"})
    assert calls[2:] == [("PATCH", ("g", "h"), 3, 4)]
    assert await node_view(node) == (4, fourth.content_hash())
    assert await served_by(node, 3, "/h/") == ["b3"] * 3


async def test_a_health_flip_of_100_groups_reaches_each_node_as_one_request(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    names = [f"g{i:03d}" for i in range(120)]
    both = [member(b1), member(b2)]
    nodes, calls, pusher = await recorded_nodes(node_factory, pusher_factory, "n1", "n2", "n3")
    await publish_synced(pusher, snapshot(1, dict.fromkeys(names, both)))

    # one admin operation pulls b2 out of 100 groups: one snapshot version later
    flipped = names[:100]
    pulled = snapshot(2, {n: [member(b1), member(b2, state="down")] if n in flipped else both
                          for n in names})
    await publish_synced(pusher, pulled, changed_groups=set(flipped))

    for node, made in zip(nodes, calls, strict=True):
        assert made == [("PUT", 1), ("PATCH", tuple(flipped), 1, 2)]
        assert await node_view(node) == (2, pulled.content_hash())
        assert await served_by(node, 3, "/g099/") == ["b1"] * 3  # flipped: b2 is out
        assert sorted(set(await served_by(node, 6, "/g100/"))) == ["b1", "b2"]  # untouched
    assert all((s["full_pushes"], s["delta_pushes"]) == (1, 1) for s in pusher.status())


async def test_change_beyond_the_named_groups_members_is_sent_as_a_full_snapshot(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2, b3 = await named_backends(backend_factory, "b1", "b2", "b3")
    (node,), (calls,), pusher = await recorded_nodes(node_factory, pusher_factory, "n1")
    await publish_synced(pusher, snapshot(1, {"g": [member(b1)], "h": [member(b2)]}))

    # the hint names g, but h changed too: a delta on g alone would leave h wrong
    await publish_synced(pusher, snapshot(2, {"g": [member(b1), member(b3)], "h": [member(b3)]}),
                         changed_groups={"g"})
    # a group setting of g changed: not something a pool delta carries
    third = snapshot(3, {"g": [member(b1)], "h": [member(b3)]},
                     settings={"g": {"timeouts": {"read": 7}}})
    await publish_synced(pusher, third, changed_groups={"g"})
    # the members of g reordered: a delta would append b1 after b3, not put it first
    fourth = snapshot(4, {"g": [member(b3), member(b1)], "h": [member(b3)]},
                      settings={"g": {"timeouts": {"read": 7}}})
    pusher.publish(third, changed_groups={"g"})
    await publish_synced(pusher, fourth, changed_groups={"g"})

    assert calls == [("PUT", 1), ("PUT", 2), ("PUT", 3), ("PUT", 4)]
    assert await node_view(node) == (4, fourth.content_hash())
    assert await served_by(node, 3, "/h/") == ["b3"] * 3


async def test_burst_of_publishes_coalesces_into_few_pushes_per_node(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    (n1, n2), (calls1, calls2), pusher = await recorded_nodes(node_factory, pusher_factory,
                                                             "n1", "n2")
    await publish_synced(pusher, snapshot(1, {"g": [member(b1), member(b2)]}))

    configs = [snapshot(v, {"g": [member(b1, weight=v), member(b2)]}) for v in range(2, 22)]
    for config in configs[:10]:  # a burst in one turn of the loop: one push
        pusher.publish(config, changed_groups={"g"})
    await asyncio.sleep(0)  # the node tasks start their pushes of version 11
    for config in configs[10:]:  # published while those are in flight: one more at most
        pusher.publish(config, changed_groups={"g"})
    assert await pusher.wait_in_sync(21, timeout=3)

    for proxy, calls in ((n1, calls1), (n2, calls2)):
        later = calls[1:]
        assert 1 <= len(later) <= 2, later  # not one push per publish
        assert later[-1] == ("PATCH", ("g",), later[-1][2], 21)
        assert await node_view(proxy) == (21, configs[-1].content_hash())


# -- failures ---------------------------------------------------------------------------------


async def test_down_node_is_retried_and_catches_up_without_delaying_the_other(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    up = await node_factory("up")
    down = await node_factory("down", port=free_port())
    port = down.control_port
    pusher = await pusher_factory([target("up", up), target("down", down)], backoff_max=0.2)
    await publish_synced(pusher, snapshot(1, {"g": [member(b1)]}))

    await down.close()
    second = snapshot(2, {"g": [member(b2)]})
    pusher.publish(second)
    await until(lambda: status_of(pusher, "up")["in_sync"], "the node that is up")
    await until(lambda: status_of(pusher, "down")["failures"] >= 3, "retries of the down node")
    state = status_of(pusher, "down")
    assert "ConnectError" in state["last_error"]
    assert (state["in_sync"], state["applied_version"], state["lag"]) == (False, 1, 1)
    assert not await pusher.wait_in_sync(2, timeout=0.05)

    back = await node_factory("down", port=port)  # restarts with its persisted version 1
    assert await pusher.wait_in_sync(2, timeout=2)
    assert await node_view(back) == (2, second.content_hash())
    assert await served_by(back, 2) == ["b2"] * 2
    state = status_of(pusher, "down")
    assert (state["in_sync"], state["lag"], state["last_error"]) == (True, 0, None)


async def test_unresponsive_node_times_out_without_delaying_the_others(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1 = await backend_factory(name="b1")
    node = await node_factory("n1")
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # accepts, reads, never answers
        writer.close()

    hung = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        hung_url = f"http://127.0.0.1:{hung.sockets[0].getsockname()[1]}"
        pusher = await pusher_factory([NodeTarget("hung", hung_url, TOKEN), target("n1", node)],
                                      timeout=0.3, backoff_max=0.2)
        pusher.publish(snapshot(1, {"g": [member(b1)]}))
        await until(lambda: status_of(pusher, "n1")["in_sync"], "the node that answers")
        # n1 got there before the silent node's first request even timed out
        assert status_of(pusher, "hung")["failures"] == 0
        await until(lambda: "timed out" in (status_of(pusher, "hung")["last_error"] or ""),
                    "the silent node's timeout")
        assert status_of(pusher, "hung")["applied_version"] is None
        assert not await pusher.wait_in_sync(1, timeout=0.05)
        await pusher.close()
    finally:
        for writer in writers:
            writer.close()
        hung.close()
        await hung.wait_closed()


async def test_delta_refused_with_base_mismatch_falls_back_to_a_full_snapshot(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    (node,), (calls,), pusher = await recorded_nodes(node_factory, pusher_factory, "n1")
    await publish_synced(pusher, snapshot(1, {"g": [member(b1)]}))

    # someone changes the node behind the pusher's back
    await push_behind_pusher(node, 5, {"g": [member(b2)]})

    sixth = snapshot(6, {"g": [member(b1, weight=3)]})
    await publish_synced(pusher, sixth, changed_groups={"g"})
    assert calls == [("PUT", 1), ("PUT", 5), ("PATCH", ("g",), 1, 6), ("PUT", 6)]
    assert await node_view(node) == (6, sixth.content_hash())
    assert await served_by(node, 3) == ["b1"] * 3
    state = status_of(pusher, "n1")
    # the fallback is immediate: a refused delta is not a failure to retry later
    assert (state["in_sync"], state["last_error"], state["failures"]) == (True, None, 0)


async def test_reconcile_repairs_a_node_restarted_with_an_older_snapshot(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory, tmp_path: Path) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    node = await node_factory("n1", port=free_port())
    port = node.control_port
    pusher = await pusher_factory([target("n1", node)], reconcile_interval=0.2)
    await publish_synced(pusher, snapshot(1, {"g": [member(b1)]}))
    state_file = tmp_path / "n1" / "snapshot.json"
    old = state_file.read_bytes()
    assert json.loads(old)["version"] == 1

    second = await publish_synced(pusher, snapshot(2, {"g": [member(b2)]}))
    await node.close()
    state_file.write_bytes(old)  # the node comes back from an old backup
    restarted = await node_factory("n1", port=port)
    calls = record_changes(restarted)
    assert (await node_view(restarted))[0] == 1
    started = time.monotonic()

    async def repaired() -> bool:
        return await node_view(restarted) == (2, second.content_hash())

    while not await repaired():
        assert time.monotonic() - started < 2, "drift not repaired"
        await asyncio.sleep(0.02)
    assert calls == [("PUT", 2)]
    assert await served_by(restarted, 2) == ["b2"] * 2
    assert status_of(pusher, "n1")["in_sync"]


async def test_wrong_token_is_reported_as_401_and_a_corrected_token_recovers(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1 = await backend_factory(name="b1")
    node = await node_factory("n1")
    pusher = await pusher_factory([target("n1", node, token="wrong")], backoff_max=0.2)
    first = snapshot(1, {"g": [member(b1)]})
    pusher.publish(first)
    await until(lambda: "401" in (status_of(pusher, "n1")["last_error"] or ""), "the 401")
    assert (await node_view(node))[0] == 0
    assert status_of(pusher, "n1")["failures"] >= 1
    assert not status_of(pusher, "n1")["in_sync"]

    pusher.set_nodes([target("n1", node)])
    assert await pusher.wait_in_sync(1, timeout=2)
    assert await node_view(node) == (1, first.content_hash())
    assert status_of(pusher, "n1")["last_error"] is None


async def test_node_with_a_newer_version_is_reported_and_left_alone(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1, b2 = await named_backends(backend_factory, "b1", "b2")
    node = await node_factory("n1")
    ahead = await push_behind_pusher(node, 10, {"g": [member(b2)]})
    calls = record_changes(node)

    pusher = await pusher_factory([target("n1", node)], backoff_max=0.2)
    pusher.publish(snapshot(3, {"g": [member(b1)]}))
    await until(lambda: status_of(pusher, "n1")["last_error"] is not None, "the report")
    state = status_of(pusher, "n1")
    assert state["last_error"].startswith("node runs version 10 of this store, ahead of the "
                                          "admin's 3")
    assert state["needs_take_over"]["kind"] == "ahead"
    assert (state["applied_version"], state["lag"], state["in_sync"]) == (10, -7, False)
    assert not await pusher.wait_in_sync(3, timeout=0.3)
    assert calls == []  # nothing was sent that the node would refuse
    assert await node_view(node) == (10, ahead)

    await publish_synced(pusher, snapshot(11, {"g": [member(b1)]}))
    assert calls == [("PUT", 11)]
    assert status_of(pusher, "n1")["last_error"] is None


# -- status -----------------------------------------------------------------------------------


async def test_status_reports_versions_lag_contact_and_push_durations(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        pusher_factory: PusherFactory) -> None:
    b1 = await backend_factory(name="b1")
    n1, n2 = await node_factory("n1"), await node_factory("n2")
    before = time.time()
    pusher = await pusher_factory([target("n1", n1), target("n2", n2)])
    await until(lambda: all(s["applied_version"] == 0 for s in pusher.status()), "first contact")
    state = status_of(pusher, "n1")
    assert state["control_url"] == f"http://127.0.0.1:{n1.control_port}"
    assert (state["desired_version"], state["in_sync"], state["lag"], state["pushes"]) == \
        (None, False, None, 0)

    config = await publish_synced(pusher, snapshot(4, {"g": [member(b1)]}))
    after = time.time()
    for name in ("n1", "n2"):
        state = status_of(pusher, name)
        assert state["desired_version"] == state["applied_version"] == 4
        assert state["applied_hash"] == config.content_hash()
        assert (state["in_sync"], state["lag"], state["last_error"]) == (True, 0, None)
        assert before <= state["last_contact"] <= after
        assert (state["pushes"], state["failures"]) == (1, 0)
        assert 0 < state["last_push_seconds"] < after - before
        histogram = pusher.push_durations[name]
        assert histogram.count == 1
        assert histogram.sum == pytest.approx(state["last_push_seconds"])
        assert histogram.cumulative()[-1] == (float("inf"), 1)

    pusher.set_nodes([target("n2", n2)])
    assert [s["name"] for s in pusher.status()] == ["n2"]
    assert set(pusher.push_durations) == {"n2"}
