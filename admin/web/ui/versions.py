"""Versions: the list with the changes pending in the draft, the diff of any two, activate,
and roll back to an earlier version (its diff against the active one shown first)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import AdminError
from admin.domain.service import AdminService
from admin.web.deps import PageSession, ServiceDep
from admin.web.sessions import Session
from admin.web.ui.pages import Pages, PagesDep, Posted
from admin.web.ui.text import PREFIX, diff_lines

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def with_lines(changes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**c, "lines": diff_lines(c["diff"])} for c in changes]


def versions_page(request: Request, service: AdminService, pages: Pages, session: Session,
                  status: int = 200, error: str | None = None,
                  errors: list[str] | None = None, reason: str = "") -> Response:
    pending = service.pending()
    return pages.render(request, "versions.html", session, status=status, nav="versions",
                        versions=service.versions()["versions"], active=pending["active"],
                        pending=with_lines(pending["changes"]),
                        never_activated=pending["active"] is None, error=error,
                        errors=errors or [], reason=reason)


@router.get("/versions")
async def versions(request: Request, session: PageSession, service: ServiceDep,
                   pages: PagesDep) -> Response:
    return versions_page(request, service, pages, session)


@router.get("/versions/diff")
async def version_diff(request: Request, session: PageSession, service: ServiceDep,
                       pages: PagesDep, a: str = "", b: str = "draft") -> Response:
    try:
        changes = with_lines(service.diff(a, b)["changes"])
    except AdminError as exc:
        message = str(exc) + ("." if exc.status == 400 else "")
        return pages.error_page(request, session, exc.status, "Cannot compare", message)
    return pages.render(request, "diff.html", session, nav="versions", a=a, b=b,
                        changes=changes, versions=service.versions()["versions"])


@router.post("/versions/activate")
async def activate(request: Request, service: ServiceDep, pages: PagesDep) -> Response:
    def act(post: Posted) -> str:
        done = service.activate(post.session.name, post.reason)
        return f"Version {done['version']} is active."

    def failed(post: Posted, exc: AdminError) -> Response:
        return versions_page(request, service, pages, post.session, exc.status, str(exc),
                             exc.errors, post.reason)

    # every cluster gets the new version: the page waits for the nodes and says what each did
    return await pages.change(request, "admin", f"{PREFIX}/versions", act, failed,
                              touches=lambda post: None)


def rollback_context(service: AdminService, number: int) -> dict[str, Any]:
    version = service.version(number)
    active = service.versions()["active"]
    changes = with_lines(service.diff(active, number)["changes"]) if active is not None else []
    return {"version": version, "active": active, "changes": changes}


@router.get("/versions/{number}/rollback")
async def rollback_form(request: Request, number: int, session: PageSession,
                        service: ServiceDep, pages: PagesDep) -> Response:
    return pages.admin_form(request, session, "rollback.html", "versions", "roll back",
                            lambda: rollback_context(service, number))


@router.post("/versions/{number}/rollback")
async def rollback(request: Request, number: int, service: ServiceDep, pages: PagesDep
                   ) -> Response:
    def act(post: Posted) -> str:
        done = service.rollback(number, post.session.name, post.reason)
        return f"Version {done['version']} is active: the content of version {number}."

    def failed(post: Posted, exc: AdminError) -> Response:
        try:
            context = rollback_context(service, number)
        except AdminError:
            return pages.error_page(request, post.session, exc.status, "Cannot roll back",
                                    str(exc))
        return pages.form_again(request, "rollback.html", "versions", post, exc, context)

    # every cluster gets the new version: the page waits for the nodes and says what each did
    return await pages.change(request, "admin", f"{PREFIX}/versions", act, failed,
                              touches=lambda post: None)
