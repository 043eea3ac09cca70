"""The control API of an in-process node: full snapshots, pool deltas, status, persistence.

Most tests run an *admin-managed* node (a local config with only ``control`` and ``state_dir``):
it serves nothing until the first ``PUT /v1/config``. Pushed snapshots put their virtual server on
``127.0.0.1:0``; the kernel-chosen port is found through the node's listeners. Which member
answered is read from the backends' ``X-Backend`` header.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from slb.node.files import PERSIST_QUIET
from tests.support.backends import Backend, ReceivedRequest, named_backends, response
from tests.support.client import Connection, answered_by, build_request
from tests.support.control import ControlClient
from tests.support.proxy import RunningProxy, simple_config
from tests.support.proxy import member_entry as member
from tests.support.proxy import snapshot_data as snapshot

BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]

TOKEN = "t"
LISTEN = "127.0.0.1:0"


# -- helpers ----------------------------------------------------------------------------------


def admin_local(state_dir: Path, token: str | None = TOKEN) -> dict[str, Any]:
    """The local file of an admin-managed node."""
    control: dict[str, Any] = {"listen": LISTEN}
    if token is not None:
        control["token"] = token
    return {"control": control, "state_dir": str(state_dir)}


async def admin_node(proxy_factory: ProxyFactory, state_dir: Path,
                     token: str | None = TOKEN) -> tuple[RunningProxy, ControlClient]:
    proxy = await proxy_factory(admin_local(state_dir, token))
    return proxy, ControlClient(proxy.control_port, token)


async def serving_node(proxy_factory: ProxyFactory, state_dir: Path,
                       groups: dict[str, list[dict[str, Any]]]
                       ) -> tuple[RunningProxy, ControlClient, int]:
    """An admin-managed node that applied version 1 with ``groups``; its data port."""
    proxy, control = await admin_node(proxy_factory, state_dir)
    await push(control, snapshot(1, groups))
    return proxy, control, data_port(proxy)


async def push(control: ControlClient, data: dict[str, Any]) -> dict[str, Any]:
    reply = await control.push(data)
    assert reply.status == 200, reply.body
    return reply.json()  # type: ignore[no-any-return]


async def patch(control: ControlClient, group: str, delta: dict[str, Any]) -> dict[str, Any]:
    reply = await control.patch_group(group, delta)
    assert reply.status == 200, reply.body
    return reply.json()  # type: ignore[no-any-return]


def data_port(proxy: RunningProxy) -> int:
    return proxy.server.listener_port(LISTEN)


async def patched_out_of_traffic(backend_factory: BackendFactory, proxy_factory: ProxyFactory,
                                 state_dir: Path, change: Callable[[Backend], dict[str, Any]]
                                 ) -> tuple[Backend, Backend, ControlClient, int]:
    """A node serving members a and b, both seen taking traffic, then the PATCH ``change(b)``
    to version 2: six requests afterwards all go to a and b receives none of them."""
    a, b = await named_backends(backend_factory, "a", "b")
    _, control, port = await serving_node(proxy_factory, state_dir,
                                          {"g": [member(a), member(b)]})
    assert sorted(await answered_by(port, 2)) == ["a", "b"]
    before = len(b.requests)

    await patch(control, "g", {"base_version": 1, "version": 2, **change(b)})
    assert await answered_by(port, 6) == ["a"] * 6
    assert len(b.requests) == before
    return a, b, control, port


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str,
                   timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Holder:
    """Handler: ``/hold`` waits until released (``arrived`` set when it came in)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, req: ReceivedRequest, writer: asyncio.StreamWriter,
                       backend: Backend) -> None:
        if req.path == "/hold":
            self.arrived.set()
            async with asyncio.timeout(5):
                await self.release.wait()
        writer.write(response(200, f"{backend.name} {req.path}".encode(),
                              {"X-Backend": backend.name}))


# -- PUT /v1/config ---------------------------------------------------------------------------


async def test_put_applies_the_snapshot_and_traffic_follows(backend_factory, proxy_factory,
                                                             tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    assert await control.ready_status() == 503  # admin-managed, nothing pushed yet
    assert proxy.server.listeners == {}

    answer = await push(control, snapshot(1, {"g": [member(a)]}))
    assert answer["version"] == 1
    assert len(answer["hash"]) == 64
    port = data_port(proxy)
    assert await answered_by(port, 3) == ["a", "a", "a"]
    assert await control.ready_status() == 200

    view = await control.config()
    assert (view["version"], view["hash"], view["managed_by"]) == (1, answer["hash"], "admin")
    assert view["applied"] is True
    assert [m["address"] for m in view["snapshot"]["groups"][0]["members"]] == [a.address]

    assert (await push(control, snapshot(2, {"g": [member(b)]})))["version"] == 2
    assert await answered_by(port, 3) == ["b", "b", "b"]
    assert (await control.config())["version"] == 2


async def test_equal_content_with_a_higher_version_has_the_same_hash(backend_factory,
                                                                     proxy_factory, tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    _, control = await admin_node(proxy_factory, tmp_path)
    first = await push(control, snapshot(1, {"g": [member(a)]}))
    second = await push(control, snapshot(2, {"g": [member(a)]}))
    assert second["version"] == 2
    assert second["hash"] == first["hash"]
    view = await control.config()
    assert (view["version"], view["hash"]) == (2, first["hash"])
    third = await push(control, snapshot(3, {"g": [member(a), member(b)]}))
    assert third["hash"] != first["hash"]


async def test_stale_snapshot_is_refused_with_409_and_changes_nothing(backend_factory,
                                                                      proxy_factory, tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    applied = await push(control, snapshot(5, {"g": [member(a)]}))
    for version in (5, 3):
        reply = await control.push(snapshot(version, {"g": [member(b)]}))
        assert reply.status == 409
        assert reply.json()["error"] == "stale"
    view = await control.config()
    assert (view["version"], view["hash"]) == (5, applied["hash"])
    assert await answered_by(data_port(proxy), 3) == ["a", "a", "a"]
    assert b.requests == []


async def test_invalid_snapshot_lists_every_error_and_changes_nothing(backend_factory,
                                                                      proxy_factory, tmp_path):
    a = await backend_factory(name="a")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    applied = await push(control, snapshot(1, {"g": [member(a)]}))
    bad = snapshot(2, {"g": [member(a), {"address": "no-port"}]})
    bad["groups"][0]["algorithm"] = "fastest"
    bad["virtual_servers"][0]["routes"].append({"path": "no-slash", "group": "g"})

    reply = await control.push(bad)
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == "invalid"
    errors = "\n".join(body["details"])
    assert "groups[0].members[1].address" in errors
    assert "groups[0].algorithm" in errors
    assert "virtual_servers[0].routes[1].path" in errors
    assert len(body["details"]) == 3, body["details"]

    view = await control.config()
    assert (view["version"], view["hash"]) == (1, applied["hash"])
    assert await answered_by(data_port(proxy), 2) == ["a", "a"]


async def test_invalid_snapshot_reports_an_unknown_group_beside_field_errors(backend_factory,
                                                                            proxy_factory,
                                                                            tmp_path):
    a = await backend_factory(name="a")
    _, control = await admin_node(proxy_factory, tmp_path)
    bad = snapshot(1, {"g": [member(a), {"address": "no-port"}]})
    bad["virtual_servers"][0]["routes"].append({"path": "/x/", "group": "missing"})
    reply = await control.push(bad)
    assert reply.status == 400
    errors = reply.json()["details"]
    assert any("groups[0].members[1].address" in line for line in errors), errors
    assert any("virtual_servers[0].routes[1].group" in line and "missing" in line
               for line in errors), errors
    assert (await control.config())["version"] == 0


async def test_changes_without_the_right_bearer_token_get_401_and_change_nothing(
        backend_factory, proxy_factory, tmp_path):
    a = await backend_factory(name="a")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    data = snapshot(1, {"g": [member(a)]})
    for authorization in (None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"):
        anonymous = ControlClient(proxy.control_port)
        if authorization is None:
            reply = await anonymous.push(data)
        else:
            reply = await anonymous.push(data, authorization=authorization)
        assert reply.status == 401, authorization
        assert reply.response.header("www-authenticate") is not None
        delta = {"base_version": 0, "version": 1, "upsert": [member(a)]}
        assert (await anonymous.patch_group("g", delta, token="wrong")).status == 401
    view = await control.config()
    assert view["version"] == 0
    assert proxy.server.listeners == {}
    assert await control.ready_status() == 503
    assert not (tmp_path / "snapshot.json").exists()


async def test_node_without_a_token_refuses_every_change_with_403(backend_factory,
                                                                  proxy_factory, tmp_path):
    a = await backend_factory(name="a")
    proxy, _ = await admin_node(proxy_factory, tmp_path, token=None)
    control = ControlClient(proxy.control_port, token="anything")
    assert (await control.push(snapshot(1, {"g": [member(a)]}))).status == 403
    delta = {"base_version": 0, "version": 1, "upsert": [member(a)]}
    assert (await control.patch_group("g", delta)).status == 403
    assert (await ControlClient(proxy.control_port).push(snapshot(1, {"g": []}))).status == 403
    assert (await control.config())["version"] == 0
    assert proxy.server.listeners == {}


async def test_malformed_json_is_refused_with_400(backend_factory, proxy_factory, tmp_path):
    a = await backend_factory(name="a")
    _, control, port = await serving_node(proxy_factory, tmp_path, {"g": [member(a)]})
    for raw in (b'{"version": 2, "groups": [', b"not json", b"\xff\xfe"):
        reply = await control.put("/v1/config", raw=raw)
        assert reply.status == 400, raw
    reply = await control.patch("/v1/groups/g", raw=b'{"base_version": 1,')
    assert reply.status == 400
    assert (await control.config())["version"] == 1
    assert await answered_by(port, 2) == ["a", "a"]


async def test_file_managed_node_refuses_put_and_patch_with_409(backend_factory, proxy_factory):
    a, b = await named_backends(backend_factory, "a", "b")
    config = simple_config([a.address])
    config["control"]["token"] = TOKEN
    proxy = await proxy_factory(config)
    control = ControlClient(proxy.control_port, TOKEN)
    assert await control.ready_status() == 200

    reply = await control.push(snapshot(5, {"g": [member(b)]}))
    assert reply.status == 409
    assert reply.json()["error"] == "file_managed"
    delta = {"base_version": 0, "version": 1, "upsert": [member(b)]}
    reply = await control.patch_group("g", delta)
    assert reply.status == 409
    assert reply.json()["error"] == "file_managed"

    view = await control.config()
    assert (view["managed_by"], view["version"]) == ("file", 0)
    assert await answered_by(proxy.port, 3) == ["a", "a", "a"]
    assert b.requests == []


# -- PATCH /v1/groups/{name} ------------------------------------------------------------------


async def test_patch_adds_a_member_that_then_gets_traffic(backend_factory, proxy_factory,
                                                          tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    _, control, port = await serving_node(proxy_factory, tmp_path, {"g": [member(a)]})
    assert await answered_by(port, 2) == ["a", "a"]

    answer = await patch(control, "g", {"base_version": 1, "version": 2,
                                        "upsert": [member(b)]})
    assert answer["version"] == 2
    assert sorted(await answered_by(port, 4)) == ["a", "a", "b", "b"]
    view = await control.config()
    assert view["version"] == 2
    assert [m["address"] for m in view["snapshot"]["groups"][0]["members"]] == [a.address,
                                                                                b.address]


async def test_patch_removes_a_member_that_then_gets_no_traffic(backend_factory, proxy_factory,
                                                                tmp_path):
    a, _, control, _ = await patched_out_of_traffic(backend_factory, proxy_factory, tmp_path,
                                                    lambda b: {"remove": [b.address]})
    status = await control.status()
    assert list(status["groups"]["g"]) == [a.address]


async def test_patch_reweight_changes_the_wrr_sequence_from_the_next_pick(backend_factory,
                                                                          proxy_factory,
                                                                          tmp_path):
    a, b, c = await named_backends(backend_factory, "a", "b", "c")
    _, control, port = await serving_node(proxy_factory, tmp_path,
                                          {"g": [member(a), member(b), member(c)]})
    assert await answered_by(port, 3) == ["a", "b", "c"]  # a full round: current weights at 0

    await patch(control, "g", {"base_version": 1, "version": 2,
                               "upsert": [member(a, weight=5)]})
    assert await answered_by(port, 7) == ["a", "a", "b", "a", "c", "a", "a"]
    status = await control.status()
    assert status["groups"]["g"][a.address]["weight"] == 5


async def test_patch_drain_sends_no_new_request_to_the_member(backend_factory, proxy_factory,
                                                              tmp_path):
    _, b, control, port = await patched_out_of_traffic(
        backend_factory, proxy_factory, tmp_path, lambda b: {"upsert": [member(b, state="drain")]})
    status = await control.status()
    assert status["groups"]["g"][b.address]["state"] == "drain"

    await patch(control, "g", {"base_version": 2, "version": 3, "upsert": [member(b)]})
    assert sorted(await answered_by(port, 4)) == ["a", "a", "b", "b"]


async def test_patch_on_a_stale_base_version_is_refused_as_base_mismatch(backend_factory,
                                                                         proxy_factory,
                                                                         tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    _, control, port = await serving_node(proxy_factory, tmp_path, {"g": [member(a)]})
    applied = await push(control, snapshot(2, {"g": [member(a)]}))

    reply = await control.patch_group("g", {"base_version": 1, "version": 3,
                                            "upsert": [member(b)]})
    assert reply.status == 409
    assert reply.json()["error"] == "base_mismatch"
    view = await control.config()
    assert (view["version"], view["hash"]) == (2, applied["hash"])
    assert await answered_by(port, 3) == ["a", "a", "a"]
    assert b.requests == []


async def test_patch_of_an_unknown_group_is_404(backend_factory, proxy_factory, tmp_path):
    a = await backend_factory(name="a")
    _, control = await admin_node(proxy_factory, tmp_path)
    applied = await push(control, snapshot(1, {"g": [member(a)]}))
    reply = await control.patch_group("nope", {"base_version": 1, "version": 2,
                                               "upsert": [member(a)]})
    assert reply.status == 404
    assert reply.json()["error"] == "not_found"
    view = await control.config()
    assert (view["version"], view["hash"]) == (1, applied["hash"])


async def test_patch_removing_a_non_member_is_400_and_changes_nothing(backend_factory,
                                                                      proxy_factory, tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    _, control, port = await serving_node(proxy_factory, tmp_path, {"g": [member(a)]})
    reply = await control.patch_group("g", {"base_version": 1, "version": 2,
                                            "upsert": [member(b)], "remove": ["127.0.0.1:1"]})
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == "invalid"
    assert any("127.0.0.1:1" in line for line in body["details"])
    assert (await control.config())["version"] == 1
    assert await answered_by(port, 3) == ["a", "a", "a"]  # b was not added either


# -- state carried over a change --------------------------------------------------------------


async def test_wrr_sequence_carries_over_a_snapshot_changing_another_group(backend_factory,
                                                                           proxy_factory,
                                                                           tmp_path):
    a, b, c, d = await named_backends(backend_factory, "a", "b", "c", "d")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    weighted = [member(a, weight=5), member(b), member(c)]
    await push(control, snapshot(1, {"g": weighted, "h": [member(d)]}))
    port = data_port(proxy)
    conn = await Connection.open(port)
    try:
        names = []
        for _ in range(3):
            names.append((await conn.request("GET", "/")).header("x-backend"))
        await push(control, snapshot(2, {"g": weighted, "h": [member(d, weight=3)]}))
        for _ in range(4):
            names.append((await conn.request("GET", "/")).header("x-backend"))
    finally:
        await conn.close()
    assert names == ["a", "a", "b", "a", "c", "a", "a"]
    assert await answered_by(port, 1, "/h/") == ["d"]


async def test_in_flight_count_carries_over_a_snapshot(backend_factory, proxy_factory,
                                                       tmp_path):
    holder = Holder()
    a = await backend_factory(name="a", handler=holder)
    d = await backend_factory(name="d")
    _, control, port = await serving_node(proxy_factory, tmp_path,
                                          {"g": [member(a)], "h": [member(d)]})
    conn = await Connection.open(port)
    try:
        conn.send(build_request("GET", "/hold"))
        async with asyncio.timeout(3):
            await holder.arrived.wait()
        assert (await control.status())["groups"]["g"][a.address]["active"] == 1

        await push(control, snapshot(2, {"g": [member(a)], "h": [member(d, weight=2)]}))
        status = await control.status()
        assert status["version"] == 2
        assert status["groups"]["g"][a.address]["active"] == 1

        holder.release.set()
        reply = await conn.read_response(timeout=5)
        assert (reply.status, reply.body) == (200, b"a /hold")
    finally:
        holder.release.set()
        await conn.close()

    async def idle() -> bool:
        return (await control.status())["groups"]["g"][a.address]["active"] == 0  # type: ignore[no-any-return]

    await wait_for(idle, "the in-flight count to return to 0")


async def test_streaming_response_of_a_member_removed_by_patch_completes(backend_factory,
                                                                         proxy_factory,
                                                                         tmp_path):
    chunks = [bytes([ord("A") + i]) * 20_000 for i in range(10)]
    first_sent = asyncio.Event()
    finished = asyncio.Event()

    async def streaming(req: ReceivedRequest, writer: asyncio.StreamWriter,
                        backend: Backend) -> None:
        if req.path != "/slow":
            writer.write(response(200, b"a", {"X-Backend": backend.name}))
            return
        total = sum(len(chunk) for chunk in chunks)
        writer.write(response(200, b"", {"Content-Length": str(total),
                                         "X-Backend": backend.name}))
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            first_sent.set()
            await asyncio.sleep(0.1)
        finished.set()

    a = await backend_factory(name="a", handler=streaming)
    b = await backend_factory(name="b")
    _, control, port = await serving_node(proxy_factory, tmp_path,
                                          {"g": [member(a), member(b, weight=0)]})
    conn = await Connection.open(port)
    try:
        conn.send(build_request("GET", "/slow"))
        async with asyncio.timeout(3):
            await first_sent.wait()
        await patch(control, "g", {"base_version": 1, "version": 2, "remove": [a.address],
                                   "upsert": [member(b)]})
        assert not finished.is_set()  # removed mid-way through the body
        assert list((await control.status())["groups"]["g"]) == [b.address]
        reply = await conn.read_response(timeout=5)
    finally:
        await conn.close()
    assert reply.status == 200
    assert reply.body == b"".join(chunks)
    assert await answered_by(port, 3) == ["b", "b", "b"]
    assert len(a.requests) == 1


# -- /v1/status, /ready -----------------------------------------------------------------------


async def test_status_shows_per_member_requests_active_weight_and_state(backend_factory,
                                                                        proxy_factory,
                                                                        tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    _, control, port = await serving_node(proxy_factory, tmp_path,
                                          {"g": [member(a, weight=2), member(b)]})
    assert sorted(await answered_by(port, 6)) == ["a"] * 4 + ["b"] * 2

    status = await control.status()
    assert status["version"] == 1
    assert status["applied_at"] > 0
    members = status["groups"]["g"]
    assert set(members) == {a.address, b.address}
    assert {k: members[a.address][k] for k in ("weight", "state", "active", "requests",
                                                "failures", "ejected")} == {
        "weight": 2, "state": "up", "active": 0, "requests": 4, "failures": 0,
        "ejected": False}
    assert (members[b.address]["weight"], members[b.address]["requests"]) == (1, 2)


async def test_ready_is_503_while_the_node_drains(backend_factory, proxy_factory, tmp_path):
    holder = Holder()
    a = await backend_factory(name="a", handler=holder)
    proxy, control, port = await serving_node(proxy_factory, tmp_path, {"g": [member(a)]})
    assert await control.ready_status() == 200
    assert (await control.get("/healthz")).status == 200
    conn = await Connection.open(port)
    drain: asyncio.Task[None] | None = None
    try:
        conn.send(build_request("GET", "/hold"))
        async with asyncio.timeout(3):
            await holder.arrived.wait()
        drain = asyncio.get_running_loop().create_task(proxy.node.drain())

        async def not_ready() -> bool:
            return await control.ready_status() == 503

        await wait_for(not_ready, "/ready to answer 503 while draining")
        assert (await control.get("/healthz")).status == 200
        assert not drain.done()  # a request is in flight
        holder.release.set()
        reply = await conn.read_response(timeout=5)
        assert (reply.status, reply.body) == (200, b"a /hold")
        async with asyncio.timeout(5):
            await drain
    finally:
        holder.release.set()
        await conn.close()
        if drain is not None and not drain.done():
            drain.cancel()


# -- persistence in state_dir -----------------------------------------------------------------


async def test_applied_changes_are_persisted_and_served_by_a_restarted_node(backend_factory,
                                                                            proxy_factory,
                                                                            tmp_path):
    a, b = await named_backends(backend_factory, "a", "b")
    first, control = await admin_node(proxy_factory, tmp_path)
    applied = await push(control, snapshot(1, {"g": [member(a)]}))
    saved = json.loads((tmp_path / "snapshot.json").read_bytes())
    assert saved["version"] == 1
    assert [m["address"] for m in saved["groups"][0]["members"]] == [a.address]

    applied = await patch(control, "g", {"base_version": 1, "version": 2,
                                         "upsert": [member(b, weight=0)]})

    # pool deltas are written coalesced, once they stop for PERSIST_QUIET
    async def delta_saved() -> bool:
        return json.loads((tmp_path / "snapshot.json").read_bytes())["version"] == 2

    await wait_for(delta_saved, "the delta to be persisted", PERSIST_QUIET + 5)
    saved = json.loads((tmp_path / "snapshot.json").read_bytes())
    assert [m["address"] for m in saved["groups"][0]["members"]] == [a.address, b.address]
    assert [p.name for p in tmp_path.iterdir()] == ["snapshot.json"]  # no temporary left
    await first.close()

    second, control = await admin_node(proxy_factory, tmp_path)
    assert await control.ready_status() == 200  # no push needed
    view = await control.config()
    assert (view["version"], view["hash"]) == (2, applied["hash"])
    assert await answered_by(data_port(second), 3) == ["a", "a", "a"]


@pytest.mark.parametrize("content", [
    pytest.param(b'{"version": 3, "virtual_servers": [{"name": "vs", "listen"', id="truncated"),
    pytest.param(b"\x00\x00\x00\x00", id="garbage"),
])
async def test_corrupt_snapshot_file_is_ignored(backend_factory, proxy_factory, tmp_path,
                                                content, caplog):
    a = await backend_factory(name="a")
    (tmp_path / "snapshot.json").write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="slb.state"):
        proxy, control = await admin_node(proxy_factory, tmp_path)
    assert "ignoring state file" in caplog.text
    assert await control.ready_status() == 503
    assert (await control.config())["version"] == 0
    assert proxy.server.listeners == {}

    await push(control, snapshot(1, {"g": [member(a)]}))  # the next push replaces it
    assert json.loads((tmp_path / "snapshot.json").read_bytes())["version"] == 1
    assert await answered_by(data_port(proxy), 1) == ["a"]


async def test_snapshot_file_with_one_invalid_part_is_never_half_loaded(backend_factory,
                                                                        proxy_factory,
                                                                        tmp_path):
    a = await backend_factory(name="a")
    content = snapshot(4, {"g": [member(a)], "h": [{"address": "no-port"}]})
    (tmp_path / "snapshot.json").write_text(json.dumps(content), encoding="utf-8")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    assert await control.ready_status() == 503
    view = await control.config()
    assert view["version"] == 0
    assert view["snapshot"]["groups"] == []
    assert view["snapshot"]["virtual_servers"] == []
    assert proxy.server.listeners == {}
    assert a.requests == []


# -- many changes under load ------------------------------------------------------------------

MemberPlan = dict[str, tuple[int, str]]  # backend name -> (weight, state); absent: removed


def _taking(plan: MemberPlan) -> frozenset[str]:
    return frozenset(n for n, (weight, state) in plan.items() if weight > 0 and state == "up")


def _next_plan(plan: MemberPlan, step: int) -> MemberPlan:
    """The cycle of changes: remove, add, re-weight, drain, back to up, on rotating members."""
    new = dict(plan)
    op = step % 10
    if op == 0:
        del new["c"]
    elif op == 1:
        new["c"] = (2, "up")
    elif op == 2:
        new["a"] = (3, "up")
    elif op == 3:
        new["b"] = (new["b"][0], "drain")
    elif op == 4:
        new["b"] = (new["b"][0], "up")
    elif op == 5:
        del new["a"]
    elif op == 6:
        new["a"] = (1, "up")
    elif op == 7:
        new["c"] = (1, "up")
    elif op == 8:
        new["c"] = (new["c"][0], "drain")
    else:
        new["c"] = (new["c"][0], "up")
    return new


async def test_200_changes_under_continuous_load_fail_no_request(backend_factory, proxy_factory,
                                                                 tmp_path):
    backends = {name: await backend_factory(name=name) for name in "abc"}
    proxy, control = await admin_node(proxy_factory, tmp_path)

    def members_of(plan: MemberPlan) -> list[dict[str, Any]]:
        return [member(backends[n], weight, state) for n, (weight, state) in sorted(plan.items())]

    plan: MemberPlan = {"a": (1, "up"), "b": (1, "up"), "c": (1, "up")}
    await push(control, snapshot(1, {"g": members_of(plan)}))
    port = data_port(proxy)
    version = 1
    history = [_taking(plan)]  # history[k]: who takes traffic after k changes
    # changes acknowledged so far, and changes sent so far: a request sent after change k was
    # acknowledged and answered before change m was sent saw one of the configs k..m
    epoch = [0, 0]
    records: list[tuple[int, int, str | None]] = []  # (acked at send, sent at answer, member)
    failures: list[str] = []
    stop = asyncio.Event()

    async def load(index: int) -> None:
        conn = await Connection.open(port)
        try:
            while not stop.is_set():
                sent = epoch[0]
                try:
                    reply = await conn.request("GET", f"/load/{index}", timeout=5)
                except (OSError, TimeoutError) as exc:
                    failures.append(f"connection {index}: {exc!r}")
                    await conn.close()
                    conn = await Connection.open(port)
                    continue
                if reply.status != 200:
                    failures.append(f"connection {index}: {reply.status} {reply.body!r}")
                records.append((sent, epoch[1], reply.header("x-backend")))
                await asyncio.sleep(0.004)
        finally:
            await conn.close()

    async def sent_since(k: int, count: int, name: str | None = None) -> None:
        async def enough() -> bool:
            return sum(1 for s, _, n in records if s >= k and (name is None or n == name)) \
                >= count

        await wait_for(enough, f"{count} requests {'to ' + name if name else ''} after change "
                               f"{k}", timeout=3)

    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks = [loop.create_task(load(i)) for i in range(3)]
    try:
        for step in range(200):
            new = _next_plan(plan, step)
            history.append(_taking(new))
            epoch[1] = step + 1
            if (step + step // 10) % 2 == 0:
                removed = [backends[n].address for n in plan if n not in new]
                upsert = [member(backends[n], *new[n]) for n in new if plan.get(n) != new[n]]
                reply = await control.patch_group("g", {"base_version": version,
                                                        "version": version + 1,
                                                        "upsert": upsert, "remove": removed})
            else:
                reply = await control.push(snapshot(version + 1, {"g": members_of(new)}))
            assert reply.status == 200, (step, reply.body)
            version += 1
            plan = new
            epoch[0] = step + 1
            assert not failures, failures[:5]
            await sent_since(step + 1, 6)
            for name in history[-1] - history[-2]:  # back in: it gets traffic again
                await sent_since(step + 1, 1, name)
    finally:
        stop.set()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = loop.time() - started

    assert [e for e in ended if e is not None] == []

    assert failures == []
    strays = [(s, r, n) for s, r, n in records
              if n not in frozenset().union(*history[s:r + 1])]
    assert strays == [], f"requests reached members out of traffic: {strays[:5]}"
    assert (await control.config())["version"] == 201
    assert len(records) > 1000
    assert elapsed < 15
