"""A node with tens of thousands of members: its counters are read without deafening it.

``/metrics`` names every member (its in-flight gauge) whether or not it saw a request; at this
size the text takes a noticeable time to render. The control API (what the admin's reconcile
loop and pushes use) must keep answering meanwhile, and the compact ``/v1/stats`` the admin's
sampler reads carries only what has counts.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import slb.node.node as node_module
from tests.support.backends import response
from tests.support.client import Connection, request

GROUPS, MEMBERS = 5000, 10
DEADLINE = 30.0  # seconds any one step may take on a busy machine


def big_config(live: str) -> dict[str, Any]:
    """Group ``g`` routes to ``live``; thousands of other groups have members that never serve."""
    groups = [{"name": f"idle{i:05d}", "members": [{"address": f"10.{i // 256}.{i % 256}.{m}:80"}
                                                    for m in range(MEMBERS)]}
              for i in range(GROUPS)]
    return {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "vs", "listen": "127.0.0.1:0", "domains": ["example.com"],
                             "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": live}]}, *groups],
    }


async def test_a_big_node_answers_its_control_api_while_metrics_render(backend_factory,
                                                                       proxy_factory,
                                                                       monkeypatch):
    backend = await backend_factory()
    proxy = await proxy_factory(big_config(backend.address))
    port = proxy.control_port

    # The render is held open until the control API has answered, so "meanwhile" does not
    # depend on how long rendering takes on this machine. A render on the event loop would
    # hold the loop too: the control API could not answer and the test fails on its timeout.
    rendering, answered = threading.Event(), threading.Event()
    released: list[bool] = []  # whether the control API's answer released the render
    render = node_module.generate_latest

    def held_render(registry: Any) -> bytes:
        rendering.set()
        released.append(answered.wait(DEADLINE))
        return render(registry)

    monkeypatch.setattr(node_module, "generate_latest", held_render)
    scrape = asyncio.ensure_future(request(port, "GET", "/metrics", host="127.0.0.1",
                                           timeout=60.0))
    try:
        assert await asyncio.to_thread(rendering.wait, DEADLINE), "the scrape never rendered"
        reply = await request(port, "GET", "/v1/config?summary=1", host="127.0.0.1",
                              timeout=DEADLINE / 2)
        assert reply.status == 200
    finally:
        answered.set()
    metrics = await scrape
    assert released == [True], "the render held the event loop: no answer while it ran"

    assert metrics.status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    assert len(families["slb_member_active_requests"].samples) == GROUPS * MEMBERS + 1


async def test_the_compact_stats_of_a_big_node_carry_only_what_has_counts(backend_factory,
                                                                           proxy_factory):
    backend = await backend_factory()
    proxy = await proxy_factory(big_config(backend.address))
    conn = await Connection.open(proxy.port)
    try:
        for _ in range(3):
            assert (await conn.request("GET", "/")).status == 200
    finally:
        await conn.close()

    reply = await request(proxy.control_port, "GET", "/v1/stats", host="127.0.0.1")
    assert reply.status == 200
    stats = json.loads(reply.body)
    assert stats["requests"] == [["vs", "g", backend.address, "2xx", 3]]
    assert [row[:2] for row in stats["latency"]] == [["vs", "g"]]
    assert stats["latency"][0][2][-1] == 3  # cumulative: the +Inf bucket counts every request
    assert stats["active"] == []  # nothing in flight: no member named, of 50,000
    assert len(reply.body) < 2000


async def test_the_compact_stats_name_the_member_with_a_request_in_flight(backend_factory,
                                                                          proxy_factory):
    release = asyncio.Event()

    async def slow(request: Any, writer: asyncio.StreamWriter, backend: Any) -> None:
        await release.wait()
        writer.write(response(200, b"late"))

    backend = await backend_factory(handler=slow)
    proxy = await proxy_factory(big_config(backend.address))
    held = asyncio.ensure_future(request(proxy.port, "GET", "/"))
    try:
        await backend.request_arrived()
        reply = await request(proxy.control_port, "GET", "/v1/stats", host="127.0.0.1")
        assert json.loads(reply.body)["active"] == [["g", backend.address, 1]]
    finally:
        release.set()
        assert (await held).status == 200
    reply = await request(proxy.control_port, "GET", "/v1/stats", host="127.0.0.1")
    assert json.loads(reply.body)["active"] == []
