"""The overview page: clusters and their nodes (push status, polled live), group and member
counts, stale groups, the latest audit rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from admin.web.deps import JsonSession, PageSession, ServiceDep
from admin.web.ui.pages import PagesDep
from admin.web.ui.text import DASH, PREFIX, audit_change, fmt_ago, target_link

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def node_live(node: dict[str, Any]) -> dict[str, Any]:
    """A node's push status as the page shows it."""
    lag = node.get("lag")
    held = node.get("needs_take_over")
    if held:
        what = "another admin store" if held["kind"] == "other_store" else "ahead of this one"
        sync, sync_class = f"needs take-over ({what})", "bad"
    elif node.get("last_error"):
        sync, sync_class = "error", "bad"
    elif node.get("in_sync"):
        sync, sync_class = "in sync", "good"
    elif node.get("applied_version") is None:
        sync, sync_class = "not contacted yet", "warn"
    else:
        sync, sync_class = f"behind by {lag}" if lag else "applying", "warn"
    runs, wanted = node.get("configuration_version"), node.get("desired_configuration_version")
    return {"configuration": DASH if runs is None else runs,
            "configuration_class": "good" if runs is not None and runs == wanted else "warn",
            "desired": node.get("desired_version") or DASH,
            "applied": node.get("applied_version") or DASH,
            "lag": DASH if lag is None else lag,
            "sync": sync, "sync_class": sync_class,
            "contact": fmt_ago(node.get("last_contact")) if node.get("last_contact")
            else "never",
            "error": node.get("last_error") or ""}


@router.get("/")
async def overview(request: Request, session: PageSession, service: ServiceDep,
                   pages: PagesDep) -> Response:
    health = service.health()
    nodes = service.node_rows()
    clusters = [{"name": c["name"], "description": c.get("description", ""),
                 "nodes": [{**n, "live": node_live(n)} for n in nodes
                           if n["cluster"] == c["name"]]}
                for c in service.objects("cluster")]
    stale = [{"group": g, "error": e, "last_contact": service.last_contact.get(g)}
             for g, e in sorted(service.stale.items())]
    return pages.render(request, "overview.html", session, nav="overview", clusters=clusters,
                        group_counts=health["group_counts"],
                        member_counts=health["member_counts"],
                        group_total=len(health["groups"]), stale=stale,
                        audit=service.audit(limit=10), audit_change=audit_change,
                        target_link=target_link,
                        active_version=service.versions()["active"],
                        leadership=service.leader_status(),
                        live_url=f"{PREFIX}/api/nodes")


@router.get("/api/nodes")
async def nodes_live(session: JsonSession, service: ServiceDep) -> Response:
    rows = {f"{n['cluster']}/{n['name']}": node_live(n) for n in service.node_rows()}
    return JSONResponse({"rows": rows}, headers={"Cache-Control": "no-store"})
