"""Canary activation in the UI (``admin.domain.canary``): start one, watch it, decide now.

``GET /ui/canary`` shows the canary in progress (or the last one) with the error ratios of the
canary nodes and of the others since it started; while it is watching, the page reloads every
2 s (a refresh header: no script needed) and offers Promote now and Abort now. Without a canary
in progress it offers the form that starts one from the draft. The POSTs check the session,
the CSRF token and the admin role as every action does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain import canary
from admin.domain.errors import AdminError
from admin.web.deps import PageSession, ServiceDep, session_of
from admin.web.ui.pages import Forbidden, PagesDep, checked_form, redirect
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)
REFRESH = "2"  # seconds between reloads while a canary is watching


@router.get("/canary")
async def canary_page(request: Request, session: PageSession, service: ServiceDep,
                      pages: PagesDep) -> Response:
    view = canary.status(service)["canary"]
    reply = pages.render(request, "canary.html", session, nav="versions", canary=view,
                         nodes=sorted(r.name for r in service.store.objects("node")),
                         error=None, errors=[], form={})
    if view is not None and view["state"] == "watching":
        reply.headers["Refresh"] = REFRESH
    return reply


@router.post("/canary/{action}")
async def canary_action(request: Request, action: str, service: ServiceDep,
                        pages: PagesDep) -> Response:
    session = session_of(request)
    if session is None:
        return pages.to_login(request)
    try:
        form = await checked_form(request, session, "admin")
    except Forbidden as exc:
        return pages.error_page(request, session, 403, "Refused", exc.message)
    try:
        if action == "start":
            spec = spec_of(form)
            await canary.start(service, spec, session.name, str(form.get("reason") or ""))
            message = "The canary started: the draft is on the canary nodes."
        elif action in ("promote", "abort"):
            done = canary.decide(service, action, session.name)
            message = (f"Promoted: version {done['version']} is active on every node."
                       if action == "promote" else
                       "Aborted: the canary nodes are going back to the active version.")
        else:
            return pages.error_page(request, session, 404, "Not found",
                                    f"There is no canary action {action!r}.")
    except AdminError as exc:
        return pages.render(request, "canary.html", session, status=exc.status, nav="versions",
                            canary=canary.status(service)["canary"],
                            nodes=sorted(r.name for r in service.store.objects("node")),
                            error=str(exc), errors=exc.errors, form=dict(form))
    session.flashes.append(("ok", message))
    return redirect(f"{PREFIX}/canary")


def spec_of(form: dict[str, Any]) -> dict[str, Any]:
    """The start form as the API's ``canary`` object (``parse_spec`` words any mistake)."""
    def number(key: str) -> Any:
        text = str(form.get(key) or "").strip()
        try:
            return float(text)
        except ValueError:
            return text
    spec: dict[str, Any] = {"watch_seconds": number("watch_seconds"),
                            "max_error_ratio": number("max_error_ratio")}
    nodes = [n.strip() for n in str(form.get("nodes") or "").split(",") if n.strip()]
    if nodes:
        spec["nodes"] = nodes
    else:
        spec["percent"] = number("percent")
    return spec
