"""The admin's web application: the REST API and the web UI on one FastAPI app.

``create_app`` puts what the edges need on ``app.state`` (read by ``admin.web.deps``), installs
the error handlers and includes the module-level routers. One rule renders every refusal of the
service (``admin.domain.errors``) with its own status: JSON under ``/api/``, an HTML page in
the UI. Unknown pages, wrong methods and malformed paths under ``/ui/`` get an HTML page too;
the REST API keeps FastAPI's JSON answers.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.domain.errors import AdminError
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.settings import AdminConfig
from admin.traffic import TrafficWindow
from admin.web import api, certificates_api, stats
from admin.web.deps import ApiError, LoginRequired, session_of
from admin.web.guards import BodyLimit, LoginLimiter
from admin.web.live import LiveStatus
from admin.web.openapi import install_docs
from admin.web.sessions import Sessions
from admin.web.ui import PAGES
from admin.web.ui.pages import PREFIX, STATIC, Pages
from slb.errors import error_body, error_code


def api_error(status: int, message: str, details: list[str] | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:
    """An API error in the shape shared with the node control API (``slb.errors.error_body``)."""
    return JSONResponse(error_body(error_code(status), message, details), status,
                        headers=headers)


def is_page(request: Request) -> bool:
    """A web UI page (HTML answers), not the UI's polling JSON nor the REST API."""
    path = request.url.path
    return path.startswith(f"{PREFIX}/") and not path.startswith(f"{PREFIX}/api/")


def create_app(settings: AdminConfig, service: AdminService, metrics: Any = None,
               traffic: TrafficWindow | None = None) -> FastAPI:
    app = FastAPI(title="SLB admin", version="1", docs_url=None, redoc_url=None,
                  description="The SLB control plane: configuration drafts, versions, member "
                              "operations, health and traffic. Errors: {error, message, "
                              "details}.")
    install_docs(app)  # the completed OpenAPI document; /docs and /redoc served offline
    app.state.service = service
    # the sampled traffic (admin.traffic); an app without a sampler answers empty series
    app.state.traffic = traffic or TrafficWindow(settings.stats.interval, settings.stats.window)
    app.state.settings = settings
    app.state.metrics = metrics
    # a service without a store (a test's fake) keeps its sessions in a private memory store
    app.state.sessions = Sessions(list(settings.tokens),
                                  getattr(service, "store", None) or Store(":memory:"))
    app.state.live = LiveStatus(service)
    app.state.pages = pages = Pages()
    app.state.login_limiter = LoginLimiter()
    app.add_middleware(BodyLimit)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return api_error(exc.status, exc.message, exc.errors, exc.headers)

    @app.exception_handler(AdminError)
    async def _refused(request: Request, exc: AdminError) -> Response:
        if is_page(request):
            title = "Not found" if exc.status == 404 else "Cannot do that"
            return pages.error_page(request, session_of(request), exc.status, title, str(exc),
                                    exc.errors)
        return api_error(exc.status, str(exc), exc.errors)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return pages.to_login(request)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_page(request):
            if not request.url.path.startswith(f"{PREFIX}/"):  # the REST API: its error shape
                return api_error(exc.status_code, str(exc.detail),
                                 headers=getattr(exc, "headers", None))
            return await http_exception_handler(request, exc)
        titles = {404: "Not found", 405: "Not allowed"}
        messages = {404: "There is no such page.",
                    405: f"This page does not answer {request.method} requests."}
        return pages.error_page(request, session_of(request), exc.status_code,
                                titles.get(exc.status_code, "Error"),
                                messages.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [".".join(str(p) for p in e.get("loc", ())) + f": {e.get('msg')}"
                  for e in exc.errors()]
        if not is_page(request):
            if not request.url.path.startswith(f"{PREFIX}/"):
                return api_error(400, "invalid request", errors)
            return await request_validation_exception_handler(request, exc)
        return pages.error_page(request, session_of(request), 400, "Bad request",
                                "This address is not valid.", errors)

    for router in (api.router, stats.router, certificates_api.router, api.collections,
                   api.system, *PAGES):
        app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(STATIC)), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=303)

    return app
