"""A canary rollout step in the UI: one route's split weights, changed and activated at once.

``GET /ui/routes/{name}/split`` shows the split's groups with their weights and health and
asks for the new weights and a reason; the POST hands them to ``admin.domain.traffic.set_split``
(which refuses while other drafts are pending) and goes back to the route's virtual server with
the version it activated.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain import traffic
from admin.domain.errors import AdminError, Invalid
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.sessions import Session
from admin.web.ui.pages import Form, PagesDep, Posted
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def split_context(service: AdminService, name: str) -> dict[str, Any]:
    row = service.store.get("route", name)
    if not row.body.get("split"):
        raise Invalid(f"route {name!r} has no split", ["split: the route sends to one group"])
    health = {g["name"]: g["health"] for g in service.health()["groups"]}
    return {"route": row.to_json(), "shares": row.body["split"], "health": health}


def posted_weights(form: Form, shares: list[dict[str, Any]]) -> dict[str, Any]:
    """The form's ``weight.<group>`` fields as whole numbers (set_split words any mistake)."""
    weights: dict[str, Any] = {}
    for share in shares:
        text = str(form.get(f"weight.{share['group']}") or "").strip()
        weights[share["group"]] = int(text) if text.isdigit() else text
    return weights


@router.get("/routes/{name}/split")
async def split_form(request: Request, name: str, session: PageSession, service: ServiceDep,
                     pages: PagesDep) -> Response:
    try:
        context = split_context(service, name)
    except AdminError as exc:
        return pages.refused(request, session, exc, "No split to change")
    return pages.render(request, "split.html", session, nav="vs", error=None, errors=[],
                        reason="", **context)


@router.post("/routes/{name}/split")
async def split_step(request: Request, name: str, service: ServiceDep,
                     pages: PagesDep) -> Response:
    def prepare(session: Session, form: Form) -> dict[str, Any]:
        return split_context(service, name)

    def failed(post: Posted, exc: AdminError) -> Response:
        return pages.form_again(request, "split.html", "vs", post, exc, post.context)

    def perform(post: Posted) -> str:
        weights = posted_weights(post.form, post.context["shares"])
        done = traffic.set_split(service, name, weights, post.form.get("row_version") or "",
                                 post.session.name, post.reason)
        shares = ", ".join(f"{g} {w}" for g, w in weights.items())
        return f"Split of {name} is now {shares}: version {done['version']} activated."

    vs = service.store.get("route", name).body["virtual_server"]
    return await pages.change(request, "admin", f"{PREFIX}/virtual-servers/{vs}", perform,
                              failed, prepare)
