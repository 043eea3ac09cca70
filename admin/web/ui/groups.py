"""Groups: the searchable list with each group's health roll-up, and one group's members with
every flag (who set it, when, why), polled live figures, and the draft weight beside the
served one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from admin.domain.members import MemberView, member_ip, rollup
from admin.domain.objects import route_groups
from admin.domain.service import AdminService
from admin.web.deps import JsonSession, PageSession, ServiceDep
from admin.web.live import LiveStatus
from admin.web.ui.pages import FLAG_COLUMNS, POLL_MS, PagesDep
from admin.web.ui.text import DASH, PREFIX, source_text

router = APIRouter(prefix=PREFIX, include_in_schema=False)
FLAG_TEXT = {
    "ops": ("up", "down"), "pull": ("in", "out"), "server": ("up", "down"),
    "maintenance": ("on", "off"),
}


@router.get("/groups")
async def groups(request: Request, session: PageSession, service: ServiceDep, pages: PagesDep,
                 q: str = "") -> Response:
    rows = [{**g, "source": source_text(g["body"])} for g in service.group_rows()]
    needle = q.strip().lower()
    if needle:
        rows = [g for g in rows if needle in g["name"].lower()
                or any(needle in m.address.lower() for m in g["members"])]
    return pages.render(request, "groups.html", session, nav="groups", groups=rows, q=q)


def member_row(view: MemberView, draft_weights: dict[str, int]) -> dict[str, Any]:
    flags = []
    member_flags = view.flags  # (built on each read: once per member)
    for name in FLAG_COLUMNS:
        flag = member_flags[name]
        if name == "health":
            text = flag.get("status") or ("passing" if flag["value"] else "failing")
        else:
            yes, no = FLAG_TEXT[name]
            text = yes if flag["value"] else no
        default = flag.get("who") in ("system", "static") and not flag.get("why")
        flags.append({"name": name, "text": text, "held": name in view.held_by,
                      "who": flag.get("who"), "why": flag.get("why") or "",
                      "at": flag.get("at"), "default": default})
    draft = draft_weights.get(view.address)
    return {"address": view.address, "ip": member_ip(view.address), "state": view.state,
            "held_by": view.held_by, "weight": view.weight,
            "draft_weight": draft if draft is not None and draft != view.weight else None,
            "flags": flags, "pull_in": member_flags["pull"]["value"],
            "ops_up": member_flags["ops"]["value"]}


def group_context(service: AdminService, name: str) -> dict[str, Any]:
    """What the group page shows; NotFound for an unknown group."""
    row = service.get("group", name)
    draft = {k: v for k, v in row.items() if k not in ("row_version", "updated_at",
                                                       "updated_by")}
    members = service.group_members(name)
    content, _ = service.served_content()
    served = next((g for g in content.get("group", []) if g["name"] == name), None)
    group = served or draft
    draft_weights = {m["address"]: m.get("weight", 1) for m in draft.get("members", [])} \
        if not draft.get("consul") else {}
    return {
        "group": group, "row": row, "routes": [r for r in content.get("route", [])
                                               if name in route_groups(r)],
        "members": [member_row(m, draft_weights) for m in members],
        "health": rollup([m.state for m in members]),
        "source": source_text(group), "static": not group.get("consul"),
        "active": served is not None, "draft_differs": served is not None and draft != served,
        "stale": service.stale.get(name), "last_contact": service.last_contact.get(name),
    }


@router.get("/groups/{name}")
async def group_page(request: Request, name: str, session: PageSession, service: ServiceDep,
                     pages: PagesDep) -> Response:
    return pages.render(request, "group.html", session, nav="groups",
                        live_url=f"{PREFIX}/api/groups/{name}/live",
                        **group_context(service, name))


def applied_cell(desired: str, applied: dict[str, str], nodes: int) -> dict[str, str]:
    """What the ``nodes`` that answered apply for one member, beside the desired state: "up on
    all 2" when every one agrees with it, else each node's state, marked."""
    if not applied:
        return {"applied": "no node answered" if nodes else DASH, "applied_class": "warn"}
    if all(state == desired for state in applied.values()) and len(applied) == nodes:
        return {"applied": f"{desired} on all {nodes}", "applied_class": "good"}
    shown = ", ".join(f"{node}: {state}" for node, state in sorted(applied.items()))
    return {"applied": f"{shown} (desired: {desired})", "applied_class": "bad"}


@router.get("/api/groups/{name}/live")
async def group_live(request: Request, name: str, session: JsonSession,
                     service: ServiceDep) -> Response:
    members = service.group_members(name)
    live: LiveStatus = request.app.state.live
    figures = await live.group(name, [m.address for m in members])
    rows = {}
    for m in members:
        found = figures.members.get(m.address, {})
        rows[m.address] = {"active": found.get("active", 0),
                           "requests": found.get("requests", 0),
                           "failures": found.get("failures", 0),
                           "state": m.state,
                           **applied_cell(m.state, figures.applied.get(m.address, {}),
                                          figures.answered)}
    if figures.nodes == 0:
        note = "no node serves this group: no live figures"
    else:
        note = f"live from {figures.answered} of {figures.nodes} node" \
               f"{'s' if figures.nodes != 1 else ''}, every {POLL_MS // 1000} s"
        if figures.errors:
            note += " — no answer from " + ", ".join(
                f"{n} ({e})" for n, e in sorted(figures.errors.items()))
    return JSONResponse({"rows": rows, "note": note, **figures.to_json()},
                        headers={"Cache-Control": "no-store"})
