"""Virtual servers: the list, and one virtual server with its routes in the order the proxy
tries them (``urls.ordered_routes``) and the health of the groups they use."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.urls import ordered_routes
from admin.web.deps import PageSession, ServiceDep
from admin.web.ui.pages import PagesDep
from admin.web.ui.text import PREFIX

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("/virtual-servers")
async def virtual_servers(request: Request, session: PageSession, service: ServiceDep,
                          pages: PagesDep) -> Response:
    content, active = service.served_content()
    count: dict[str, int] = {}
    for route in content.get("route", []):
        count[route["virtual_server"]] = count.get(route["virtual_server"], 0) + 1
    servers = sorted(content.get("virtual_server", []),
                     key=lambda v: (v["cluster"], v["listen"], v["name"]))
    return pages.render(request, "virtual_servers.html", session, nav="vs", servers=servers,
                        route_count=count, active=active)


@router.get("/virtual-servers/{name}")
async def virtual_server(request: Request, name: str, session: PageSession,
                         service: ServiceDep, pages: PagesDep) -> Response:
    content, active = service.served_content()
    vs = next((v for v in content.get("virtual_server", []) if v["name"] == name), None)
    if vs is None:
        return pages.error_page(request, session, 404, "Not found",
                                f"There is no {'active ' if active else ''}virtual server "
                                f"named {name!r}.")
    ordered = ordered_routes(content, vs)
    routes = ordered if ordered is not None else [
        r for r in content.get("route", []) if r["virtual_server"] == name]
    health = {g["name"]: g["health"] for g in service.health()["groups"]}
    return pages.render(request, "virtual_server.html", session, nav="vs", vs=vs,
                        routes=routes, compiled=ordered is not None, health=health,
                        active=active)
