"""The split step and the traffic rules in the web UI, in process (httpx ASGI, a real session):
the virtual server page shows splits, redirects and conditions; the split page changes the
weights and activates, and a refusal is shown on the form with the reason kept."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from admin.domain.service import AdminService
from tests.unit.admin.web.test_api import ADMIN, app_with
from tests.unit.admin.web.test_traffic_api import traffic

__all__ = ["traffic"]  # the fixture, shared with the API tests


def field(html: str, name: str) -> str:
    found = re.search(rf'name="{re.escape(name)}"[^>]*value="([^"]*)"', html)
    assert found is not None, f"no field {name}"
    return found.group(1)


@pytest.fixture
async def browser(traffic: tuple[httpx.AsyncClient, AdminService]
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, AdminService]]:
    """A client logged in to the UI as an admin (the login form, as a browser sends it)."""
    _, service = traffic
    async with app_with(service) as client:
        page = await client.get("/ui/login")
        reply = await client.post("/ui/login", data={
            "csrf": field(page.text, "csrf"), "token": ADMIN.token, "next": ""})
        assert reply.status_code == 303, reply.text
        yield client, service


async def test_the_virtual_server_page_shows_splits_redirects_and_conditions(
        browser: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, _ = browser
    page = (await client.get("/ui/virtual-servers/site")).text
    assert 'href="/ui/routes/api/split"' in page
    assert "redirect 301 to <code>https://new.shop.test/</code>" in page
    assert "x-canary" in page


async def test_the_split_page_changes_the_weights_and_activates(
        browser: tuple[httpx.AsyncClient, AdminService]) -> None:
    client, service = browser
    form = (await client.get("/ui/routes/api/split")).text
    data = {"csrf": field(form, "csrf"), "row_version": field(form, "row_version"),
            "weight.v2": "30", "weight.v1": "70", "reason": "canary step: 30%"}
    missing_reason = await client.post("/ui/routes/api/split", data={**data, "reason": ""})
    assert missing_reason.status_code == 400 and "reason: must not be empty" in \
        missing_reason.text
    done = await client.post("/ui/routes/api/split", data=data)
    assert done.status_code == 303 and done.headers["location"] == "/ui/virtual-servers/site"
    version = service.store.active_version()
    assert version == 2
    route = next(r for r in service.store.version(version)["content"]["route"]
                 if r["name"] == "api")
    assert route["split"] == [{"group": "v2", "weight": 30}, {"group": "v1", "weight": 70}]
    assert "Split of api is now v2 30, v1 70: version 2 activated." in \
        (await client.get("/ui/virtual-servers/site")).text
