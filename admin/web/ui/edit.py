"""Editing the configuration in the browser: virtual servers, routes and groups, as drafts.

    GET  /ui/edit/{kind}/new          an empty form          POST  creates the draft object
    GET  /ui/edit/{kind}/{name}       the object's form      POST  saves it (row_version kept)
    POST /ui/edit/{kind}/{name}/delete                               deletes it

``kind`` is ``virtual_server``, ``route`` or ``group``. A form is turned into the same body the
REST API takes (``body_of``) and goes through the same service operation, so the validation is
the same: each refusal's ``path: message`` lines are shown next to the field they name (the
first part of the path), the rest above the form. Nothing reaches the nodes until a version is
activated on the versions page, which shows the diff; a delete the service refuses (a group a
route still uses) says which route.

An edit keeps what the form does not show (a group's timeouts, retries, health check): the
form's fields are laid over the stored body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import AdminError, Invalid, require_reason
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.sessions import Session
from admin.web.ui.pages import Form, PagesDep, Posted
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)

KINDS = {"virtual_server": "virtual server", "route": "route", "group": "group"}
LIST_PAGES = {"virtual_server": "virtual-servers", "route": "virtual-servers",
              "group": "groups"}
META = ("row_version", "updated_at", "updated_by")


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def _members(text: str) -> list[dict[str, Any]] | str:
    """``address [weight]`` per line; the text itself when a weight is not a number (so the
    schema's own error names the line)."""
    members: list[dict[str, Any]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        member: dict[str, Any] = {"address": parts[0]}
        if len(parts) > 1:
            member["weight"] = int(parts[1]) if parts[1].isdigit() else parts[1]
        members.append(member)
    return members


def body_of(kind: str, form: Form, stored: dict[str, Any] | None) -> dict[str, Any]:
    """The REST body a form stands for, laid over the stored object (edits keep the rest)."""
    body = {k: v for k, v in (stored or {}).items() if k not in META}

    def text(name: str) -> str:
        return str(form.get(name) or "").strip()

    if stored is None:
        body["name"] = text("name")
    if kind == "virtual_server":
        body.update(cluster=text("cluster"), listen=text("listen"),
                    domains=_words(text("domains")), default=form.get("default") == "on",
                    certificate=text("certificate") or None)
    elif kind == "route":
        priority = text("priority") or "0"
        body.update(virtual_server=text("virtual_server"), match=text("match") or "prefix",
                    path=text("path"),
                    priority=int(priority) if priority.lstrip("-").isdigit() else priority)
        if not (body.get("split") or body.get("redirect")):  # (those have their own pages)
            body["group"] = text("group")
    else:
        body.update(algorithm=text("algorithm") or "wrr", hash_key=text("hash_key") or None,
                    health_policy=text("health_policy") or "passing",
                    new_members=text("new_members") or "take_traffic")
        if text("source") == "consul":
            body["consul"] = {"service": text("consul_service"),
                              **({"tag": text("consul_tag")} if text("consul_tag") else {})}
            body["members"] = []
        else:
            body["consul"] = None
            body["members"] = _members(str(form.get("members") or ""))
    return body


def field_errors(errors: list[str], fields: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Each ``path: message`` under the form field its path starts with; the rest apart."""
    by_field: dict[str, list[str]] = {}
    rest = []
    for line in errors:
        path, _, message = line.partition(": ")
        head = path.split(".")[0].split("[")[0]
        if head in fields and message:
            by_field.setdefault(head, []).append(f"{path}: {message}" if path != head
                                                 else message)
        else:
            rest.append(line)
    return by_field, rest


FIELDS = {
    "virtual_server": ["name", "cluster", "listen", "domains", "default", "certificate"],
    "route": ["name", "virtual_server", "match", "path", "priority", "group"],
    "group": ["name", "algorithm", "hash_key", "members", "consul", "health_policy",
              "new_members"],
}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise Invalid(f"there is no editor for {kind!r}",
                      [f"kind: expected one of {', '.join(KINDS)}"])


def form_context(service: AdminService, kind: str, name: str | None,
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the editor shows: the object (or ``body``, what was sent), and the choices."""
    _check_kind(kind)
    stored = service.get(kind, name) if name is not None else None
    shown = body if body is not None else (stored or {})
    members = "\n".join(f"{m.get('address', '')} {m.get('weight', 1)}"
                        for m in shown.get("members") or [] if isinstance(m, dict))
    return {
        "kind": kind, "kind_text": KINDS[kind], "name": name, "obj": shown,
        "row_version": stored["row_version"] if stored else None,
        "members_text": members, "list_page": LIST_PAGES[kind],
        "clusters": [c["name"] for c in service.objects("cluster")],
        "servers": [v["name"] for v in service.objects("virtual_server")],
        "groups": [g["name"] for g in service.objects("group")],
        "certificates": [c["name"] for c in service.objects("certificate")],
        "field_errors": {}, "error": None, "errors": [],
    }


def _render(request: Request, pages: Any, session: Session, context: dict[str, Any],
            status: int = 200, reason: str = "") -> Response:
    return pages.render(request, "edit.html", session, status=status, nav=context["list_page"]
                        .replace("virtual-servers", "vs"), reason=reason, **context)


@router.get("/edit/{kind}/new")
async def new_form(request: Request, kind: str, session: PageSession, service: ServiceDep,
                   pages: PagesDep) -> Response:
    return _render(request, pages, session, form_context(service, kind, None))


@router.get("/edit/{kind}/{name}")
async def edit_form(request: Request, kind: str, name: str, session: PageSession,
                    service: ServiceDep, pages: PagesDep) -> Response:
    return _render(request, pages, session, form_context(service, kind, name))


def _refused(request: Request, pages: Any, service: AdminService, kind: str,
             name: str | None, post: Posted, exc: AdminError) -> Response:
    """The form again with what was sent, each problem next to its field."""
    body = body_of(kind, post.form, service.get(kind, name) if name else None)
    context = form_context(service, kind, name, body)
    context["field_errors"], context["errors"] = field_errors(exc.errors, FIELDS[kind])
    context["error"] = str(exc)
    return _render(request, pages, post.session, context, exc.status, post.reason)


async def _to_draft(request: Request, pages: Any, service: AdminService, kind: str,
                    name: str | None, act: Callable[[Posted], str]) -> Response:
    """A form's change of the draft (``act``); refused, the same form again with the errors by
    their field; done, the versions page, where the draft is activated."""
    return await pages.change(request, "admin", f"{PREFIX}/versions", act,
                              lambda post, exc: _refused(request, pages, service, kind, name,
                                                         post, exc))


@router.post("/edit/{kind}/new")
async def create(request: Request, kind: str, service: ServiceDep,
                 pages: PagesDep) -> Response:
    _check_kind(kind)

    def act(post: Posted) -> str:
        body = body_of(kind, post.form, None)
        service.create(kind, body, post.session.name, require_reason(post.reason))
        return (f"The {KINDS[kind]} {body['name']} is in the draft: activate a version to "
                "serve it (Versions).")

    return await _to_draft(request, pages, service, kind, None, act)


@router.post("/edit/{kind}/{name}")
async def save(request: Request, kind: str, name: str, service: ServiceDep,
               pages: PagesDep) -> Response:
    _check_kind(kind)

    def act(post: Posted) -> str:
        stored = service.get(kind, name)
        service.update(kind, name, body_of(kind, post.form, stored),
                       _int(post.form.get("row_version")), post.session.name,
                       require_reason(post.reason))
        return f"The {KINDS[kind]} {name} is changed in the draft: activate to serve it."

    return await _to_draft(request, pages, service, kind, name, act)


@router.post("/edit/{kind}/{name}/delete")
async def delete(request: Request, kind: str, name: str, service: ServiceDep,
                 pages: PagesDep) -> Response:
    _check_kind(kind)

    def act(post: Posted) -> str:
        service.delete(kind, name, _int(post.form.get("row_version")), post.session.name,
                       require_reason(post.reason))
        return f"The {KINDS[kind]} {name} is deleted from the draft: activate to apply it."

    def failed(post: Posted, exc: AdminError) -> Response:
        context = form_context(service, kind, name)
        context["error"], context["errors"] = str(exc), exc.errors
        return _render(request, pages, post.session, context, exc.status, post.reason)

    return await pages.change(request, "admin", f"{PREFIX}/versions", act, failed)


def _int(value: Any) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() else None
