"""The admin's REST API: JSON over HTTP, FastAPI on uvicorn, OpenAPI at ``/openapi.json``.

Every call needs ``Authorization: Bearer <token>``; the token's role decides what it may do:
``viewer`` reads, ``operator`` also pulls members in and out and sets servers up and down,
``admin`` also edits the configuration, activates and rolls back. Errors are JSON
``{"error", "message", "errors": [...]}`` with every problem and its field path; a concurrent
edit of the same object is refused with 409.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from admin.config import AdminConfig, ApiToken
from admin.service import AdminService, Invalid
from admin.store import StoreError
from admin.ui import mount_ui

ROLES = {"viewer": 0, "operator": 1, "admin": 2}
KIND_PATHS = {"clusters": "cluster", "virtual-servers": "virtual_server", "routes": "route",
              "groups": "group"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers


def error_body(status: int, message: str, errors: list[str]) -> dict[str, Any]:
    names = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
             409: "conflict", 422: "invalid"}
    body: dict[str, Any] = {"error": names.get(status, "error"), "message": message}
    if errors:
        body["errors"] = errors
    return body


def authenticate(tokens: list[ApiToken], header: str) -> ApiToken | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    for token in tokens:
        if hmac.compare_digest(token.token.encode(), value.strip().encode()):
            return token
    return None


def create_app(config: AdminConfig, service: AdminService, metrics: Any = None) -> FastAPI:
    app = FastAPI(title="SLB admin", version="1", docs_url="/docs")
    app.state.service = service
    app.state.config = config

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.status, exc.message, exc.errors), exc.status,
                            headers=exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        errors = exc.errors if isinstance(exc, Invalid) else []
        status = 400 if isinstance(exc, Invalid) else exc.status
        return JSONResponse(error_body(status, str(exc), errors), status)

    def caller(role: str) -> Any:
        def check(request: Request) -> ApiToken:
            token = getattr(request.state, "token", None) or authenticate(
                config.tokens, request.headers.get("authorization", ""))
            if token is None:
                raise ApiError(401, "a valid 'Authorization: Bearer <token>' is required",
                               headers={"WWW-Authenticate": 'Bearer realm="slb-admin"'})
            if ROLES[token.role] < ROLES[role]:
                raise ApiError(403, f"role {token.role!r} may not do this: {role} needed")
            return token
        return Depends(check)

    viewer, operator, admin = caller("viewer"), caller("operator"), caller("admin")

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None

    async def object_body(request: Request) -> tuple[dict[str, Any], int | None, str]:
        """An edit's body without what is not the object: (object, row_version, reason)."""
        body = await json_body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        row_version = body.pop("row_version", None)
        reason = str(body.pop("reason", ""))
        return body, row_version, reason

    def reason_of(body: Any) -> str:
        return str(body.get("reason", "")) if isinstance(body, dict) else ""

    api = APIRouter(prefix="/api/v1")

    # -- model objects (generic CRUD) ------------------------------------------------------

    def kind_of(plural: str) -> str:
        kind = KIND_PATHS.get(plural)
        if kind is None:
            raise ApiError(404, f"no such collection: {plural}")
        return kind

    @api.get("/groups/{name}")
    async def get_group(name: str, token: ApiToken = viewer) -> dict[str, Any]:
        return service.group_view(name)

    # nodes live under their cluster
    @api.get("/clusters/{cluster}/nodes")
    async def list_nodes(cluster: str, token: ApiToken = viewer) -> dict[str, Any]:
        service.store.get("cluster", cluster)
        return {"items": [r.to_json() for r in service.store.objects("node")
                          if r.body["cluster"] == cluster]}

    @api.post("/clusters/{cluster}/nodes", status_code=201)
    async def create_node(cluster: str, request: Request, token: ApiToken = admin
                          ) -> dict[str, Any]:
        body, _, reason = await object_body(request)
        return service.create("node", {**body, "cluster": cluster}, token.name, reason)

    @api.put("/clusters/{cluster}/nodes/{name}")
    async def update_node(cluster: str, name: str, request: Request,
                          token: ApiToken = admin) -> dict[str, Any]:
        body, row_version, reason = await object_body(request)
        return service.update("node", name, {**body, "cluster": cluster}, row_version,
                              token.name, reason)

    @api.delete("/clusters/{cluster}/nodes/{name}", status_code=204)
    async def delete_node(cluster: str, name: str, row_version: int | None = None,
                          reason: str = "", token: ApiToken = admin) -> Response:
        service.delete("node", name, row_version, token.name, reason)
        return Response(status_code=204)

    # -- member and server operations ------------------------------------------------------

    @api.post("/groups/{name}/members/{address}/{op}")
    async def member_op(name: str, address: str, op: str, request: Request,
                        token: ApiToken = operator) -> dict[str, Any]:
        body = await json_body(request)
        return service.member_op(name, [address], op, token.name, reason_of(body))

    @api.post("/servers/{ip}/{op}")
    async def server_op(ip: str, op: str, request: Request, token: ApiToken = operator
                        ) -> dict[str, Any]:
        if op not in ("up", "down"):
            raise ApiError(404, f"no server operation {op!r}: expected up or down")
        body = await json_body(request)
        return service.server_op(ip, op == "up", token.name, reason_of(body))

    @api.post("/batch")
    async def batch(request: Request, token: ApiToken = operator) -> dict[str, Any]:
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("operations"), list):
            raise ApiError(400, "expected {\"reason\": ..., \"operations\": [...]}",
                           ["operations: required list"])
        return service.batch(body["operations"], token.name, reason_of(body))

    # -- versions ---------------------------------------------------------------------------

    @api.post("/activate")
    async def activate(request: Request, token: ApiToken = admin) -> dict[str, Any]:
        body = await json_body(request)
        reason = reason_of(body)
        if not reason.strip():
            raise ApiError(400, "a reason is required", ["reason: must not be empty"])
        return service.activate(token.name, reason)

    @api.get("/versions")
    async def versions(token: ApiToken = viewer) -> dict[str, Any]:
        return service.versions()

    @api.get("/versions/{a}/diff/{b}")
    async def version_diff(a: str, b: str, token: ApiToken = viewer) -> dict[str, Any]:
        for ref in (a, b):
            if ref != "draft" and not ref.isdigit():
                raise ApiError(400, f"{ref!r} is not a version number or 'draft'")
        return service.diff(a, b)

    @api.post("/versions/{number}/rollback")
    async def rollback(number: int, request: Request, token: ApiToken = admin
                       ) -> dict[str, Any]:
        body = await json_body(request)
        reason = reason_of(body)
        if not reason.strip():
            raise ApiError(400, "a reason is required", ["reason: must not be empty"])
        return service.rollback(number, token.name, reason)

    # -- status -----------------------------------------------------------------------------

    @api.get("/nodes")
    async def nodes(token: ApiToken = viewer) -> dict[str, Any]:
        return {"items": service.nodes()}

    @api.get("/audit")
    async def audit(target: str | None = None, who: str | None = None,
                    since: float | None = None, until: float | None = None, limit: int = 200,
                    token: ApiToken = viewer) -> dict[str, Any]:
        return {"items": service.store.audit(target, who, since, until, min(limit, 1000))}

    # generic collections last: the fixed paths above must win over "/{plural}"
    @api.get("/{plural}")
    async def list_objects(plural: str, token: ApiToken = viewer) -> dict[str, Any]:
        kind = kind_of(plural)
        return {"items": [r.to_json() for r in service.store.objects(kind)]}

    @api.post("/{plural}", status_code=201)
    async def create_object(plural: str, request: Request, token: ApiToken = admin
                            ) -> dict[str, Any]:
        body = await json_body(request)
        reason = reason_of(body)
        body = {k: v for k, v in body.items() if k != "reason"} if isinstance(body, dict) \
            else body
        return service.create(kind_of(plural), body, token.name, reason)

    @api.get("/{plural}/{name}")
    async def get_object(plural: str, name: str, token: ApiToken = viewer) -> dict[str, Any]:
        return service.store.get(kind_of(plural), name).to_json()

    @api.put("/{plural}/{name}")
    async def update_object(plural: str, name: str, request: Request,
                            token: ApiToken = admin) -> dict[str, Any]:
        body, row_version, reason = await object_body(request)
        return service.update(kind_of(plural), name, body, row_version, token.name, reason)

    @api.delete("/{plural}/{name}", status_code=204)
    async def delete_object(plural: str, name: str, row_version: int | None = None,
                            reason: str = "", token: ApiToken = admin) -> Response:
        service.delete(kind_of(plural), name, row_version, token.name, reason)
        return Response(status_code=204)

    app.include_router(api)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        registry = metrics.registry if metrics is not None else None
        body = generate_latest(registry) if registry is not None else b""
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    mount_ui(app, config, service)  # the web UI under /ui/ (admin/ui.py)
    return app
