"""The OpenAPI document is complete and its reference pages need nothing from the internet."""

from __future__ import annotations

import re
from typing import Any

import httpx

from admin.app import create_app
from admin.settings import AdminConfig

BODILESS = {"/api/v1/canary/{action}"}  # decides from the path alone: reads no body


def client() -> httpx.AsyncClient:
    app = create_app(AdminConfig(), None)  # type: ignore[arg-type]  # no call reaches a service
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def document() -> dict[str, Any]:
    async with client() as c:
        return (await c.get("/openapi.json")).json()  # type: ignore[no-any-return]


async def test_docs_and_redoc_load_every_asset_from_the_admin_itself() -> None:
    async with client() as c:
        for page in ("/docs", "/redoc"):
            html = (await c.get(page)).text
            assets = re.findall(r'(?:src|href)="([^"]+)"', html)
            assert assets, page
            for asset in assets:
                assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
                reply = await c.get(asset)
                assert reply.status_code == 200 and len(reply.content) > 100, asset
            assert "fonts.googleapis" not in html


async def test_every_api_operation_requires_the_bearer_scheme() -> None:
    doc = await document()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith("/api/"):
                assert op["security"] == [{"bearer": []}], (method, path)
                assert op["responses"]["401"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}


async def test_every_body_and_response_has_a_schema_and_edits_have_examples() -> None:
    doc = await document()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in ("post", "put") and path not in BODILESS:
                media = op["requestBody"]["content"]["application/json"]
                assert media["schema"], (method, path)
            for status, response in op["responses"].items():
                if status != "204":
                    [media] = response["content"].values()
                    assert media["schema"], (method, path, status)
            assert "422" not in op["responses"]  # errors are the API's own 400
    create = doc["paths"]["/api/v1/groups"]["post"]["requestBody"]["content"]
    assert create["application/json"]["example"]["members"]


async def test_each_collection_is_described_with_its_own_object() -> None:
    doc = await document()
    assert "/api/v1/{plural}" not in doc["paths"]
    schema = doc["paths"]["/api/v1/routes"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert {"virtual_server", "path", "group", "reason"} <= set(schema["properties"])
