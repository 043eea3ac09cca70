"""Taking a node back: ``GET /ui/nodes/{cluster}/{node}/take-over`` says what the node runs and
asks for a reason; the POST calls the same service operation as the REST API
(``AdminService.take_over``), waits for the node and goes back to the overview. The overview
links here for a node shown as needing a take-over; admin role only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import AdminError, NotFound
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.ui.pages import PagesDep, Posted
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def node_context(service: AdminService, cluster: str, node: str) -> dict[str, Any]:
    found = next((n for n in service.node_rows()
                  if n["cluster"] == cluster and n["name"] == node), None)
    if found is None:
        raise NotFound(f"cluster {cluster!r} has no node named {node!r}")
    return {"node": found, "held": found.get("needs_take_over")}


@router.get("/nodes/{cluster}/{node}/take-over")
async def take_over_form(request: Request, cluster: str, node: str, session: PageSession,
                         service: ServiceDep, pages: PagesDep) -> Response:
    return pages.admin_form(request, session, "take_over.html", "overview",
                            "take a node over", lambda: node_context(service, cluster, node))


@router.post("/nodes/{cluster}/{node}/take-over")
async def take_over(request: Request, cluster: str, node: str, service: ServiceDep,
                    pages: PagesDep) -> Response:
    def act(post: Posted) -> str:
        service.take_over(cluster, node, post.session.name, post.reason)
        return f"Node {node} of {cluster} is taken over: it gets this admin's snapshot."

    def failed(post: Posted, exc: AdminError) -> Response:
        return pages.form_again(request, "take_over.html", "overview", post, exc,
                                node_context(service, cluster, node))

    return await pages.change(request, "admin", f"{PREFIX}/", act, failed,
                              touches=lambda post: None)
