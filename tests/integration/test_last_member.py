"""Taking out a group's last usable member needs an explicit ``force``: it makes the site 503.

Group ``web`` has one member (backend ``a``) behind node ``n1``. The API refuses to pull it out
or mark it down without ``"force": true``, naming the consequence; with it, the member goes
and the node answers 503, as promised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.support.admin import (
    AdminFactory,
    NodeFactory,
    admin_factory,
    applied_version,
    converge,
    node_factory,
    served_by,
    site_seed,
)
from tests.support.backends import Backend

__all__ = ["admin_factory", "node_factory"]  # the fixtures this module uses

BackendFactory = Callable[..., Awaitable[Backend]]


async def test_last_member_needs_force_and_then_the_site_answers_503(
        backend_factory: BackendFactory, node_factory: NodeFactory,
        admin_factory: AdminFactory) -> None:
    a = await backend_factory(name="a")
    node = await node_factory("n1")
    admin = await admin_factory(site_seed({"n1": node}, {"web": [a.address]}))
    await converge(admin, node, after=0)
    operator = admin.client("operator")
    path = f"/api/v1/groups/web/members/{a.address}"

    for op in ("pull-out", "down"):
        refused = await operator.post(f"{path}/{op}", json={"reason": "deploy"})
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "conflict"
        assert "last usable member of group 'web'" in body["message"]
        assert "answered 503" in body["message"]
    batch = await operator.post("/api/v1/batch", json={"reason": "deploy", "operations": [
        {"group": "web", "address": a.address, "op": "pull-out"}]})
    assert batch.status_code == 400 and "answered 503" in batch.json()["details"][0]
    assert await served_by(node, count=2) == ["a", "a"]  # nothing was taken out

    before = applied_version(node)
    forced = await operator.post(f"{path}/pull-out", json={"reason": "deploy", "force": True})
    assert forced.status_code == 200, forced.text
    await converge(admin, node, after=before)
    assert await served_by(node, count=2) == ["503", "503"]
