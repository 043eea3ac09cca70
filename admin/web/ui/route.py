"""Which group serves this URL: the service's answer (``AdminService.resolve``), per listener
of every cluster, with the health of the group found."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import Invalid
from admin.domain.urls import RouteAnswer
from admin.web.deps import PageSession, ServiceDep
from admin.web.ui.pages import PagesDep
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/route")
async def route_tool(request: Request, session: PageSession, service: ServiceDep,
                     pages: PagesDep, url: str = "",
                     headers: str = "", cookies: str = "", client_ip: str = "",
                     ) -> Response:
    # (the form's text areas: one header "name: value" or cookie "name=value" per line)
    answers: list[RouteAnswer] = []
    notes: list[str] = []
    error, errors, status = None, [], 200
    if url.strip():
        try:
            answers, notes = service.resolve(url, headers.splitlines(), cookies.splitlines(),
                                             client_ip)
        except Invalid as exc:
            error, errors, status = str(exc), exc.errors, exc.status
    health = {g["name"]: g["health"] for g in service.health()["groups"]} if answers else {}
    return pages.render(request, "route.html", session, status=status, nav="route", url=url,
                        answers=answers, notes=notes, error=error, errors=errors,
                        headers=headers, cookies=cookies, client_ip=client_ip,
                        health=health, active=service.served_content()[1])
