"""The REST API's edges (admin/web/api.py, deps.py) in-process through httpx's ASGI transport:
routers are module-level, so ``app.dependency_overrides`` swaps the service and the caller."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from admin.app import create_app
from admin.domain.errors import Invalid
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.settings import AdminConfig, ApiToken
from admin.web import deps

ADMIN = ApiToken(name="ada", token="admin-token-0123", role="admin")
VIEWER = ApiToken(name="vera", token="viewer-token-0123", role="viewer")
SEED: dict[str, list[dict[str, Any]]] = {
    "cluster": [{"name": "c1"}],
    "group": [{"name": "web", "members": [{"address": "10.0.0.1:80"},
                                          {"address": "10.0.0.2:80"}]}],
    "virtual_server": [{"name": "site", "cluster": "c1", "listen": "127.0.0.1:8080",
                        "domains": ["shop.test", "*.shop.test"]}],
    "route": [{"name": "r1", "virtual_server": "site", "path": "/api", "group": "web"}],
}


class FakeService:
    """Records what the edge asked for; answers like the service."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def group_view(self, name: str) -> dict[str, Any]:
        self.calls.append(("group_view", name))
        return {"name": name, "members": [], "health": "no members"}

    def activate(self, who: str, reason: str) -> dict[str, Any]:
        raise Invalid("a reason is required", ["reason: must not be empty"])

    def ticket(self) -> None:  # confirmed delivery: nothing to wait for here
        return None


def app_with(service: Any, caller: ApiToken | None = None) -> httpx.AsyncClient:
    app = create_app(AdminConfig(tokens=[ADMIN, VIEWER]), service)
    app.dependency_overrides[deps.get_service] = lambda: service
    if caller is not None:
        app.dependency_overrides[deps.api_caller] = lambda: caller
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_dependency_overrides_replace_the_service_and_the_caller() -> None:
    fake = FakeService()
    async with app_with(fake, caller=VIEWER) as client:  # no Authorization header at all
        reply = await client.get("/api/v1/groups/web")
    assert reply.status_code == 200, reply.text
    assert reply.json()["health"] == "no members"
    assert fake.calls == [("group_view", "web")]


async def test_the_role_is_checked_after_an_overridden_caller() -> None:
    async with app_with(FakeService(), caller=VIEWER) as client:
        reply = await client.post("/api/v1/activate", json={"reason": "try"})
    assert reply.status_code == 403
    assert reply.json()["error"] == "forbidden"


async def test_a_refusal_of_the_service_is_400_with_every_error() -> None:
    async with app_with(FakeService(), caller=ADMIN) as client:
        reply = await client.post("/api/v1/activate", json={})
    assert reply.status_code == 400
    assert reply.json()["details"] == ["reason: must not be empty"]


async def test_without_an_override_a_token_is_required() -> None:
    async with app_with(FakeService()) as client:
        reply = await client.get("/api/v1/groups/web")
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")


# -- the endpoints of what only the UI had, on a real service --------------------------------


@contextlib.asynccontextmanager
async def seeded_api(target: str, seed: dict[str, list[dict[str, Any]]]
                     ) -> AsyncIterator[tuple[httpx.AsyncClient, AdminService]]:
    """A real service on the store ``target``, ``seed`` activated as its first version, and a
    client of its API calling as ADMIN."""
    store = Store(target)
    try:
        service = AdminService(store)
        for kind in ("cluster", "group", "virtual_server", "route"):
            for body in seed[kind]:
                service.create(kind, body, "seed", "seed")
        service.activate("seed", "first")
        async with app_with(service, caller=ADMIN) as client:
            yield client, service
    finally:
        store.close()


@pytest.fixture
async def admin_client(store_target: str
                       ) -> AsyncIterator[tuple[httpx.AsyncClient, AdminService]]:
    async with seeded_api(store_target, SEED) as seeded:
        yield seeded


async def test_weight_edit_changes_the_draft_and_drafts_are_then_pending(
        admin_client: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = admin_client
    assert (await client.get("/api/v1/draft")).json()["pending"] is False
    row = (await client.get("/api/v1/groups/web")).json()
    reply = await client.post("/api/v1/groups/web/weight", json={
        "addresses": ["10.0.0.2:80"], "weight": 7, "row_version": row["row_version"],
        "reason": "bigger box"})
    assert reply.status_code == 200, reply.text
    assert [m["weight"] for m in reply.json()["members"]] == [1, 7]
    draft = (await client.get("/api/v1/draft")).json()
    assert draft["pending"] is True and draft["active"] == 1
    assert [c["name"] for c in draft["changes"]] == ["web"]


async def test_weight_edit_refuses_a_stale_row_version_bad_weight_and_no_reason(
        admin_client: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = admin_client
    body = {"addresses": ["10.0.0.1:80"], "weight": 3, "row_version": 1, "reason": "x"}
    assert (await client.post("/api/v1/groups/web/weight",
                              json={**body, "row_version": 99})).status_code == 409
    assert (await client.post("/api/v1/groups/web/weight",
                              json={**body, "weight": "heavy"})).status_code == 400
    reply = await client.post("/api/v1/groups/web/weight", json={**body, "reason": " "})
    assert (reply.status_code, reply.json()["details"]) == (400, ["reason: must not be empty"])


async def test_resolve_names_the_group_and_how_the_host_matched(
        admin_client: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = admin_client
    reply = await client.get("/api/v1/resolve", params={"url": "http://a.shop.test:8080/api/x"})
    assert reply.status_code == 200, reply.text
    [answer] = reply.json()["answers"]
    assert (answer["virtual_server"], answer["matched_by"], answer["group"]) == (
        "site", "wildcard *.shop.test", "web")
    bad = await client.get("/api/v1/resolve", params={"url": "ftp://"})
    assert bad.status_code == 400


async def test_health_rolls_up_groups_and_members(
        admin_client: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = admin_client
    await client.post("/api/v1/groups/web/members/10.0.0.1:80/down", json={"reason": "deploy"})
    health = (await client.get("/api/v1/health")).json()
    assert health["groups"][0]["health"] == "some down"
    assert health["member_counts"] == {"up": 1, "drain": 1, "down": 0}
    assert health["group_counts"]["some down"] == 1


@pytest.mark.parametrize(("path", "caller", "status", "code"), [
    ("/api/v1/audit?since=yesterday", VIEWER, 400, "bad_request"),  # a malformed parameter
    ("/api/v2/groups", VIEWER, 404, "not_found"),  # no such route at all
    ("/api/v1/groups/web", None, 401, "unauthorized"),  # no token
])
async def test_every_api_error_has_the_shape_shared_with_the_node_control_api(
        path: str, caller: ApiToken | None, status: int, code: str) -> None:
    async with app_with(FakeService(), caller) as client:
        reply = await client.get(path)
    assert reply.status_code == status
    body = reply.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == code and isinstance(body["details"], list)
