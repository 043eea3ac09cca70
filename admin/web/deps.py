"""FastAPI dependencies of the edges: the service, the caller's token or session, the role.

Routers are module-level (``api.py``, ``ui/*.py``) and get what they need from these functions,
which read it from ``request.app.state`` (set once by ``admin.app.create_app``). A test replaces
any of them with ``app.dependency_overrides[deps.get_service] = ...`` (a fake service, a fixed
caller), so an edge is tested without a store, a token or a login.

The dependencies are ``async def`` though none of them awaits: FastAPI runs a plain ``def``
dependency in its thread pool, a hand-off to a worker thread and back per dependency (three per
API request: the service, the token, the role). ``service_of`` is the plain function, for code
that is no dependency.

Who is calling:

- the REST API: ``Authorization: Bearer <token>``; ``api_caller`` answers 401 without a valid
  token, and ``viewer`` / ``operator`` / ``admin`` add the role check (403);
- the web UI: the ``slb_session`` cookie; ``page_session`` sends a browser without a valid
  session to the login page (``LoginRequired``, handled in ``admin.app``), ``json_session``
  answers the UI's polling JSON with 401.
"""

from __future__ import annotations

import hmac
import json
from typing import Annotated, Any

from fastapi import Depends, Request

from admin.domain.service import AdminService
from admin.settings import AdminConfig, ApiToken, may
from admin.web.sessions import COOKIE, Session, Sessions


class ApiError(Exception):
    """An error of the edge itself (no token, wrong role, a body that is not JSON)."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []
        self.headers = headers


class LoginRequired(Exception):
    """A page asked for without a valid session: the browser goes to the login page."""


def service_of(request: Request) -> AdminService:
    service: AdminService = request.app.state.service
    return service


async def get_service(request: Request) -> AdminService:
    return service_of(request)


def get_settings(request: Request) -> AdminConfig:
    settings: AdminConfig = request.app.state.settings
    return settings


def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


# -- the REST API: bearer tokens ---------------------------------------------------------------


def authenticate(tokens: list[ApiToken], header: str) -> ApiToken | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    found = None
    for token in tokens:  # compare with every token: no early exit to time
        if hmac.compare_digest(token.token.encode(), value.strip().encode()):
            found = token
    return found


async def api_caller(request: Request) -> ApiToken:
    token = authenticate(get_settings(request).tokens, request.headers.get("authorization", ""))
    if token is None:
        raise ApiError(401, "a valid 'Authorization: Bearer <token>' is required",
                       headers={"WWW-Authenticate": 'Bearer realm="slb-admin"'})
    return token


Caller = Annotated[ApiToken, Depends(api_caller)]


def _role(needed: str) -> Any:
    async def check(token: Caller) -> ApiToken:
        if not may(token.role, needed):
            raise ApiError(403, f"role {token.role!r} may not do this: {needed} needed")
        return token
    check.__name__ = f"require_{needed}"
    return check


# module-level, so ``dependency_overrides`` has a key to replace
require_viewer = _role("viewer")
require_operator = _role("operator")
require_admin = _role("admin")


async def json_body(request: Request) -> Any:
    """The request's JSON (``{}`` when empty); 400 when it is not JSON."""
    raw = await request.body()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None


# -- the web UI: sessions ----------------------------------------------------------------------


def session_of(request: Request) -> Session | None:
    return get_sessions(request).get(request.cookies.get(COOKIE))


async def page_session(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise LoginRequired()
    return session


async def json_session(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise ApiError(401, "log in again")
    return session


# the parameter types handlers declare: ``service: ServiceDep``, ``session: PageSession``
ServiceDep = Annotated[AdminService, Depends(get_service)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
PageSession = Annotated[Session, Depends(page_session)]
JsonSession = Annotated[Session, Depends(json_session)]
