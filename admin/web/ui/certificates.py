"""Certificates: the list (subject, names, issuer, not-after, the virtual servers binding each),
an upload form, and a renewal form per certificate. Both forms call the same domain operations
as the REST API (``admin.domain.certificates``); what they change is a draft, activated on the
Versions page. A refused form is shown again with the problems, never with the key it was sent
(the key is write-only: no page ever holds it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain import certificates
from admin.domain.errors import AdminError
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.ui.pages import PagesDep, Posted
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)
PEM_FIELDS = ("certificate_pem", "key_pem")


def pem_fields(post: Posted) -> dict[str, str]:
    return {k: str(post.form.get(k) or "").strip() + "\n" for k in PEM_FIELDS}


def list_context(service: AdminService) -> dict[str, Any]:
    return {"certificates": certificates.listed(service.store), "name": ""}


@router.get("/certificates")
async def certificate_list(request: Request, session: PageSession, service: ServiceDep,
                           pages: PagesDep) -> Response:
    return pages.render(request, "certificates.html", session, nav="certificates", error=None,
                        errors=[], reason="", **list_context(service))


@router.post("/certificates")
async def certificate_upload(request: Request, service: ServiceDep,
                             pages: PagesDep) -> Response:
    def act(post: Posted) -> str:
        name = str(post.form.get("name") or "")
        certificates.upload(service.store, {"name": name, **pem_fields(post)},
                            post.session.name, post.reason)
        return (f"Certificate {name} is uploaded. Bind it to a virtual server, then activate "
                "(Versions page).")

    def failed(post: Posted, exc: AdminError) -> Response:
        return pages.form_again(request, "certificates.html", "certificates", post, exc,
                                {**list_context(service),
                                 "name": str(post.form.get("name") or "")})

    return await pages.change(request, "admin", f"{PREFIX}/certificates", act, failed)


@router.get("/certificates/{name}/renew")
async def renew_form(request: Request, name: str, session: PageSession, service: ServiceDep,
                     pages: PagesDep) -> Response:
    try:
        found = certificates.get(service.store, name)
    except AdminError as exc:
        return pages.refused(request, session, exc, "Not found")
    return pages.render(request, "certificate_renew.html", session, nav="certificates",
                        error=None, errors=[], reason="", certificate=found)


@router.post("/certificates/{name}/renew")
async def renew(request: Request, name: str, service: ServiceDep, pages: PagesDep) -> Response:
    def act(post: Posted) -> str:
        row_version = str(post.form.get("row_version") or "")
        renewed = certificates.renew(
            service.store, name, pem_fields(post),
            int(row_version) if row_version.isdigit() else None, post.session.name, post.reason)
        users = ", ".join(renewed["virtual_servers"]) or "no virtual server yet"
        return (f"Certificate {name} is renewed for {users}: it reaches the nodes when the "
                "draft is activated (Versions page).")

    def failed(post: Posted, exc: AdminError) -> Response:
        return pages.form_again(request, "certificate_renew.html", "certificates", post, exc,
                                {"certificate": certificates.get(service.store, name)})

    return await pages.change(request, "admin", f"{PREFIX}/certificates", act, failed)
