"""Member actions: pull in/out, mark up/down, server up/down, set weight.

``GET /ui/groups/{name}/act?op=...&address=...`` shows what the action will do to the selected
members and asks for a reason; the POST does it through the service (which requires the reason
and decides what the action changes) and goes back to the group page with a flash message.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import AdminError, Invalid
from admin.domain.members import member_ip
from admin.domain.operations import MEMBER_OPS
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.sessions import Session
from admin.web.ui.groups import group_context
from admin.web.ui.pages import ACTIONS, Forbidden, Form, PagesDep, Posted
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def act_context(service: AdminService, name: str, op: str, addresses: list[str],
                session: Session) -> dict[str, Any]:
    """The action's page: the group, the selected members, what the action does."""
    if op not in ACTIONS:
        raise Invalid(f"there is no action {op!r}", [f"op: expected one of {list(ACTIONS)}"])
    label, role, effect = ACTIONS[op]
    if not session.may(role):
        raise Forbidden(f"Your role ({session.role}) may not {label.lower()}: {role} is "
                        "needed.")
    context = group_context(service, name)
    known = {m["address"]: m for m in context["members"]}
    if not addresses:
        raise Invalid("no member selected", ["Select at least one member first."])
    missing = [a for a in addresses if a not in known]
    if missing:
        raise Invalid(f"group {name!r} has no member " + ", ".join(missing),
                      [f"{a}: not a member of {name}" for a in missing])
    if op == "weight":
        service.check_weight_editable(context["group"])
    selected = [known[a] for a in addresses]
    return {**context, "op": op, "label": label, "effect": effect, "selected": selected,
            "ips": sorted({m["ip"] for m in selected})}


def posted_addresses(form: Form) -> list[str]:
    return [str(a) for a in form.get("address") or []]


@router.get("/groups/{name}/act")
async def act_form(request: Request, name: str, session: PageSession, service: ServiceDep,
                   pages: PagesDep, op: str = "") -> Response:
    addresses = request.query_params.getlist("address")
    try:
        context = act_context(service, name, op, addresses, session)
    except Forbidden as exc:
        return pages.error_page(request, session, 403, "Not allowed", exc.message)
    return pages.render(request, "act.html", session, nav="groups", error=None, errors=[],
                        reason="", weight="", **context)


@router.post("/groups/{name}/act")
async def act(request: Request, name: str, service: ServiceDep, pages: PagesDep) -> Response:
    def prepare(session: Session, form: Form) -> dict[str, Any]:
        context = act_context(service, name, str(form.get("op") or ""),
                              posted_addresses(form), session)
        return {**context, "weight": str(form.get("weight") or "").strip()}

    def failed(post: Posted, exc: AdminError) -> Response:
        return pages.form_again(request, "act.html", "groups", post, exc, post.context)

    def touches(post: Posted) -> set[str]:
        """The groups whose nodes the action reaches (a weight edit is a draft: none)."""
        op = post.context["op"]
        if op in MEMBER_OPS:
            return {name}
        if op in ("server-up", "server-down"):
            return {group for ip in post.context["ips"]
                    for group in service.members_with_ip(ip)}
        return set()

    return await pages.change(request, "operator", f"{PREFIX}/groups/{name}",
                              lambda post: perform(service, name, post), failed, prepare,
                              touches)


def perform(service: AdminService, name: str, post: Posted) -> str:
    """Does the member action ``post`` asks for (``act_context`` checked it); the flash."""
    op, who, reason = post.context["op"], post.session.name, post.reason
    addresses = posted_addresses(post.form)
    count = f"{len(addresses)} member{'s' if len(addresses) != 1 else ''}"
    force = post.form.get("force") == "1"
    if op in MEMBER_OPS:
        service.member_op(name, addresses, op, who, reason, force)
        return f"{ACTIONS[op][0]}: {count} of {name} ({', '.join(addresses)})."
    if op in ("server-up", "server-down"):
        ips = sorted({member_ip(a) for a in addresses})
        service.batch([{"server": ip, "op": op.removeprefix("server-")} for ip in ips],
                      who, reason, force)
        return f"{ACTIONS[op][0]}: {', '.join(ips)} (every group with these servers)."
    service.set_weight(name, addresses, post.context["weight"],
                       post.form.get("row_version") or "", who, reason)
    return (f"Weight {int(post.context['weight'])} saved to the draft for {count} of {name}. "
            "It takes effect when a new version is activated (Versions → Activate).")
