"""PostgreSQL restarted under a running admin: operations during the outage are refused whole
(503, nothing applied), and the admin reconnects by itself once the server is back.

Runs on the session's PostgreSQL server only (SQLite has no server to restart); the server is
stopped and started again inside the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.support.admin import (
    AdminFactory,
    NodeFactory,
    admin_factory,
    node_factory,
    site_seed,
    wait_until,
)
from tests.support.backends import Backend
from tests.support.postgres import PostgresServer

__all__ = ["admin_factory", "node_factory"]  # the fixtures this module uses

BackendFactory = Callable[..., Awaitable[Backend]]


@pytest.mark.store_engines("postgresql")
async def test_postgresql_restart_refuses_whole_operations_then_the_admin_reconnects(
        postgres_server: PostgresServer, backend_factory: BackendFactory,
        node_factory: NodeFactory, admin_factory: AdminFactory) -> None:
    a, b = await backend_factory(name="a"), await backend_factory(name="b")
    node = await node_factory("n1")
    running = await admin_factory(seed=site_seed({"n1": node}, {"web": [a.address, b.address]}))
    operator = running.client("operator")
    batch = {"reason": "deploy", "force": True, "operations": [
        {"group": "web", "address": a.address, "op": "pull-out"},
        {"group": "web", "address": b.address, "op": "pull-out"}]}
    before = (await running.client("viewer").get("/api/v1/audit")).json()
    postgres_server.halt()
    try:
        refused = await operator.post("/api/v1/batch", json=batch)
        assert refused.status_code == 503, refused.text
        assert "the store is unavailable, nothing was changed" in refused.json()["message"]
    finally:
        postgres_server.resume()
    # the pool's dead connections are replaced: the first operation after the restart works
    done = await operator.post("/api/v1/batch", json=batch)
    assert done.status_code == 200, done.text
    after = (await running.client("viewer").get("/api/v1/audit")).json()
    added = after["items"][:len(after["items"]) - len(before["items"])]
    assert sorted(e["target"] for e in added) == sorted(
        [f"member/web/{a.address}", f"member/web/{b.address}"])  # each once: none half-applied
    await wait_until(lambda: all(
        str(node.server.ctx.runtime.pools["web"].members[m.address].state) == "drain"
        for m in (a, b)), 5.0, "both members drained on the node")
