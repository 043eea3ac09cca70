"""The admin's REST API: JSON over HTTP, FastAPI on uvicorn, OpenAPI at ``/openapi.json``.

Every call needs ``Authorization: Bearer <token>``; the token's role decides what it may do:
``viewer`` reads, ``operator`` also pulls members in and out and sets servers up and down,
``admin`` also edits the configuration, activates and rolls back. Errors are JSON
``{"error", "message", "details": [...]}`` (``slb.errors.error_body``, the shape of the node
control API too) with every problem and its field path; invalid input
is 400, a concurrent edit of the same object is refused with 409.

Each handler parses, names the role it needs (``deps``) and calls one service operation. The
routers are module-level; ``admin.app`` includes them in order: ``router`` (fixed paths)
before ``collections`` (``/{plural}``), so ``/groups/{name}`` and ``/health`` win.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from admin.domain import canary, traffic
from admin.domain.delivery import WAIT_DEFAULT, WAIT_MAX, parse_wait
from admin.domain.service import AdminService
from admin.push.drain import DRAIN_TIMEOUT, TIMEOUT_MAX
from admin.settings import ApiToken
from admin.web.deps import (
    ApiError,
    get_service,
    json_body,
    require_admin,
    require_operator,
    require_viewer,
)

KIND_PATHS = {"clusters": "cluster", "virtual-servers": "virtual_server", "routes": "route",
              "groups": "group"}

router = APIRouter(prefix="/api/v1")
collections = APIRouter(prefix="/api/v1")
system = APIRouter()

Service = Depends(get_service)
Viewer, Operator, Admin = (Depends(require_viewer), Depends(require_operator),
                           Depends(require_admin))


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


def force_of(body: Any) -> bool:
    """``"force": true`` lets an operation take a group's last member out."""
    force = body.get("force", False) if isinstance(body, dict) else False
    if not isinstance(force, bool):
        raise ApiError(400, "force must be true or false", ["force: expected a boolean"])
    return force


async def delivered(request: Request, service: AdminService,
                    change: Callable[[], dict[str, Any]],
                    groups: Callable[[dict[str, Any]], set[str] | None],
                    drains: Callable[[dict[str, Any]], dict[str, set[str]]] | None = None
                    ) -> JSONResponse:
    """Do ``change``, then wait up to ``?wait=`` seconds for every node serving the groups it
    touched: 200 when each applied it, 202 with the same per-node body when some did not in
    time (the change is stored and keeps being pushed). See ``admin.domain.delivery``.

    ``?wait=drained`` (operations that take members out: ``drains`` names them) waits up to
    ``?timeout=`` seconds (default 60) for the nodes to apply it *and* to have no request in
    flight and no idle connection to those members (``admin.push.drain``); the answer adds
    ``"drain": {"drained", "nodes": [per-node counts]}``, and is 202 unless all drained."""
    query = request.query_params
    drain = query.get("wait") == "drained" and drains is not None
    try:
        wait = parse_wait(query.get("timeout") if drain else query.get("wait"),
                          DRAIN_TIMEOUT if drain else WAIT_DEFAULT,
                          TIMEOUT_MAX if drain else WAIT_MAX, "timeout" if drain else "wait")
    except ValueError as exc:
        raise ApiError(400, str(exc), [str(exc)]) from None
    started = time.monotonic()
    taken = service.ticket()
    result = change()
    delivery = await service.confirm(taken, groups(result), wait)
    body, status = {**result, **delivery.to_json()}, delivery.status
    if drain and drains is not None:
        left = max(0.0, wait - (time.monotonic() - started))
        drained, nodes = await service.wait_drained(drains(result), left)
        body["drain"] = {"drained": drained, "nodes": nodes}
        status = 200 if drained and delivery.complete else 202
    return JSONResponse(body, status)


def kind_of(plural: str) -> str:
    kind = KIND_PATHS.get(plural)
    if kind is None:
        raise ApiError(404, f"no such collection: {plural}")
    return kind


# -- leadership (several admins, admin.ha) --------------------------------------------------------


@router.get("/leader")
async def get_leader(token: ApiToken = Viewer, service: AdminService = Service
                     ) -> dict[str, Any]:
    """Who leads (admin, address, since, term), and whether this admin is the leader."""
    return service.leader_status()


# -- groups, members, servers -----------------------------------------------------------------


@router.get("/groups/{name}")
async def get_group(name: str, token: ApiToken = Viewer, service: AdminService = Service
                    ) -> dict[str, Any]:
    return service.group_view(name)


@router.post("/groups/{name}/weight")
async def set_weight(name: str, request: Request, token: ApiToken = Admin,
                     service: AdminService = Service) -> dict[str, Any]:
    """``{"addresses": [...], "weight": 7, "row_version": 3, "reason": ...}``: a draft edit."""
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("addresses"), list):
        raise ApiError(400, 'expected {"addresses": [...], "weight": ..., "row_version": ...}',
                       ["addresses: required list"])
    return service.set_weight(name, [str(a) for a in body["addresses"]], body.get("weight"),
                              body.get("row_version"), token.name, reason_of(body))


@router.post("/groups/{name}/members/{address}/{op}")
async def member_op(name: str, address: str, op: str, request: Request,
                    token: ApiToken = Operator, service: AdminService = Service
                    ) -> JSONResponse:
    body = await json_body(request)
    return await delivered(request, service, lambda: service.member_op(
        name, [address], op, token.name, reason_of(body), force_of(body)), lambda _: {name},
        lambda _: {name: {address}} if op in ("pull-out", "down") else {})


@router.post("/servers/{ip}/{op}")
async def server_op(ip: str, op: str, request: Request, token: ApiToken = Operator,
                    service: AdminService = Service) -> JSONResponse:
    if op not in ("up", "down"):
        raise ApiError(404, f"no server operation {op!r}: expected up or down")
    body = await json_body(request)
    return await delivered(request, service, lambda: service.server_op(
        ip, op == "up", token.name, reason_of(body), force_of(body)),
        lambda result: set(result["groups"]),
        lambda _: service.members_with_ip(ip) if op == "down" else {})


@router.post("/batch")
async def batch(request: Request, token: ApiToken = Operator,
                service: AdminService = Service) -> JSONResponse:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("operations"), list):
        raise ApiError(400, "expected {\"reason\": ..., \"operations\": [...]}",
                       ["operations: required list"])

    def touched(result: dict[str, Any]) -> set[str]:
        return {group for one in result["results"]
                for group in one.get("groups", [one.get("group")]) if group}

    return await delivered(request, service, lambda: service.batch(
        body["operations"], token.name, reason_of(body), force_of(body)), touched)


@router.post("/routes/{name}/split")
async def set_split(name: str, request: Request, token: ApiToken = Admin,
                    service: AdminService = Service) -> dict[str, Any]:
    """``{"weights": {"api-v2": 20, "api-v1": 80}, "row_version": 3, "reason": ...}``: the
    split's weights changed and activated in one audited step (a canary rollout step)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        raise ApiError(400, 'expected {"weights": {...}, "row_version": ..., "reason": ...}',
                       ["body: expected an object"])
    return traffic.set_split(service, name, body.get("weights"), body.get("row_version"),
                             token.name, reason_of(body))


# -- nodes (under their cluster) ----------------------------------------------------------------


@router.get("/clusters/{cluster}/nodes")
async def list_nodes(cluster: str, token: ApiToken = Viewer, service: AdminService = Service
                     ) -> dict[str, Any]:
    return {"items": service.nodes_of(cluster)}


@router.post("/clusters/{cluster}/nodes", status_code=201)
async def create_node(cluster: str, request: Request, token: ApiToken = Admin,
                      service: AdminService = Service) -> dict[str, Any]:
    body, _, reason = await object_body(request)
    return service.create("node", {**body, "cluster": cluster}, token.name, reason)


@router.put("/clusters/{cluster}/nodes/{name}")
async def update_node(cluster: str, name: str, request: Request, token: ApiToken = Admin,
                      service: AdminService = Service) -> dict[str, Any]:
    body, row_version, reason = await object_body(request)
    return service.update("node", name, {**body, "cluster": cluster}, row_version,
                          token.name, reason)


@router.post("/clusters/{cluster}/nodes/{name}/take-over")
async def take_over(cluster: str, name: str, request: Request, token: ApiToken = Admin,
                    service: AdminService = Service) -> JSONResponse:
    """The node applies this admin's full snapshot whatever it runs (another store's, or a
    version ahead of ours): ``{"reason": ...}``, audited; answered like every push."""
    reason = reason_of(await json_body(request))
    return await delivered(request, service, lambda: service.take_over(
        cluster, name, token.name, reason), lambda _: None)


@router.delete("/clusters/{cluster}/nodes/{name}", status_code=204)
async def delete_node(cluster: str, name: str, row_version: int | None = None,
                      reason: str = "", token: ApiToken = Admin,
                      service: AdminService = Service) -> Response:
    service.delete("node", name, row_version, token.name, reason)
    return Response(status_code=204)


# -- versions -----------------------------------------------------------------------------------


@router.post("/activate", response_model=None)
async def activate(request: Request, token: ApiToken = Admin, service: AdminService = Service
                   ) -> dict[str, Any] | JSONResponse:
    """``{"reason": ...}``: activated and pushed, answered with what each node did (``?wait=``,
    ``delivered``); with ``"canary": {"nodes": [...] | "percent": n, "watch_seconds",
    "max_error_ratio"}`` the draft goes to the canary nodes first (admin.domain.canary)."""
    body = await json_body(request)
    if isinstance(body, dict) and "canary" in body:
        return await canary.start(service, body["canary"], token.name, reason_of(body))
    return await delivered(request, service, lambda: service.activate(token.name,
                                                                      reason_of(body)),
                           lambda _: None)


@router.get("/canary")
async def canary_status(token: ApiToken = Viewer, service: AdminService = Service
                        ) -> dict[str, Any]:
    return canary.status(service)


@router.post("/canary/{action}")
async def canary_decide(action: str, token: ApiToken = Admin,
                        service: AdminService = Service) -> dict[str, Any]:
    if action not in ("promote", "abort"):
        raise ApiError(404, f"no canary action {action!r}: expected promote or abort")
    return canary.decide(service, action, token.name)


@router.get("/versions")
async def versions(token: ApiToken = Viewer, service: AdminService = Service
                   ) -> dict[str, Any]:
    return service.versions()


@router.get("/versions/{a}/diff/{b}")
async def version_diff(a: str, b: str, token: ApiToken = Viewer,
                       service: AdminService = Service) -> dict[str, Any]:
    return service.diff(a, b)


@router.post("/versions/{number}/rollback")
async def rollback(number: int, request: Request, token: ApiToken = Admin,
                   service: AdminService = Service) -> JSONResponse:
    reason = reason_of(await json_body(request))
    return await delivered(request, service, lambda: service.rollback(number, token.name,
                                                                      reason),
                           lambda _: None)


@router.get("/draft")
async def drafts_pending(token: ApiToken = Viewer, service: AdminService = Service
                         ) -> dict[str, Any]:
    """Whether activating would change anything, and the changes from the active version."""
    return service.pending()


# -- status -------------------------------------------------------------------------------------


@router.get("/health")
async def health(token: ApiToken = Viewer, service: AdminService = Service) -> dict[str, Any]:
    """Every group's health roll-up and member counts, and the totals."""
    return service.health()


@router.get("/resolve")
async def resolve(url: str, token: ApiToken = Viewer, service: AdminService = Service,
                  header: Annotated[list[str] | None, Query()] = None,
                  cookie: Annotated[list[str] | None, Query()] = None,
                  client_ip: str = "") -> dict[str, Any]:
    """Which group serves ``url``, per listener of every cluster; ``header`` ("name: value"),
    ``cookie`` ("name=value") and ``client_ip`` decide routes with conditions."""
    answers, notes = service.resolve(url, header, cookie, client_ip)
    return {"url": url, "answers": [a.to_json() for a in answers], "notes": notes}


@router.get("/nodes")
async def nodes(token: ApiToken = Viewer, service: AdminService = Service) -> Response:
    # (made once per change of the nodes' state: Publisher.nodes_json)
    return Response(service.publisher.nodes_json(), media_type="application/json")


@router.get("/audit")
async def audit(target: str | None = None, who: str | None = None, since: float | None = None,
                until: float | None = None, limit: int = 200, token: ApiToken = Viewer,
                service: AdminService = Service) -> dict[str, Any]:
    return {"items": service.audit(target, who, since, until, limit)}


# -- generic collections (included last: the fixed paths above win over "/{plural}") -----------


@collections.get("/{plural}")
async def list_objects(plural: str, token: ApiToken = Viewer, service: AdminService = Service
                       ) -> dict[str, Any]:
    return {"items": service.objects(kind_of(plural))}


@collections.post("/{plural}", status_code=201)
async def create_object(plural: str, request: Request, token: ApiToken = Admin,
                        service: AdminService = Service) -> dict[str, Any]:
    body = await json_body(request)
    reason = reason_of(body)
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "reason"}
    return service.create(kind_of(plural), body, token.name, reason)


@collections.get("/{plural}/{name}")
async def get_object(plural: str, name: str, token: ApiToken = Viewer,
                     service: AdminService = Service) -> dict[str, Any]:
    return service.get(kind_of(plural), name)


@collections.put("/{plural}/{name}")
async def update_object(plural: str, name: str, request: Request, token: ApiToken = Admin,
                        service: AdminService = Service) -> dict[str, Any]:
    body, row_version, reason = await object_body(request)
    return service.update(kind_of(plural), name, body, row_version, token.name, reason)


@collections.delete("/{plural}/{name}", status_code=204)
async def delete_object(plural: str, name: str, row_version: int | None = None,
                        reason: str = "", token: ApiToken = Admin,
                        service: AdminService = Service) -> Response:
    service.delete(kind_of(plural), name, row_version, token.name, reason)
    return Response(status_code=204)


# -- outside the API: liveness and the admin's own metrics --------------------------------------


@system.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@system.get("/metrics")
async def metrics_endpoint(request: Request) -> Response:
    metrics = getattr(request.app.state, "metrics", None)
    body = generate_latest(metrics.registry) if metrics is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
