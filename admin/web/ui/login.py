"""Login and logout.

Log in with an API token (``settings.tokens``); the token's role decides which buttons exist,
and every action checks the role again. The ``slb_session`` cookie is ``HttpOnly`` and
``SameSite=Strict``, and ``Secure`` on HTTPS and on loopback addresses (browsers treat
``http://127.0.0.1`` and ``http://localhost`` as secure contexts and keep Secure cookies there);
on plain HTTP to another host a Secure cookie would be dropped by the browser, so it is sent
without, and the login page warns that the admin should be served over HTTPS. The login form
is protected from cross-site posts by a double-submit cookie. Failed logins are limited per
client address (``admin.web.guards.LoginLimiter``: 429 after 5 a minute).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.web.deps import SessionsDep, session_of
from admin.web.guards import LoginLimiter
from admin.web.sessions import COOKIE
from admin.web.ui.pages import Forbidden, Pages, PagesDep, checked_form, redirect
from admin.web.ui.text import PREFIX

log = logging.getLogger("admin.ui")

router = APIRouter(prefix=PREFIX, include_in_schema=False)
LOGIN_COOKIE = "slb_login"  # double-submit CSRF token of the login form
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_MAX = 4096  # longer than any token the admin's file accepts: never compared whole


def secure_cookie(request: Request) -> bool:
    return request.url.scheme == "https" or (request.url.hostname or "") in LOOPBACK


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a page of the UI, never another site."""
    value = value or ""
    if value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value \
            and not value.startswith(f"{PREFIX}/login"):
        return value
    return f"{PREFIX}/"


def login_page(request: Request, pages: Pages, status: int = 200, error: str | None = None,
               next_url: str = "") -> Response:
    token = secrets.token_urlsafe(24)
    reply = pages.render(request, "login.html", None, status=status, error=error,
                         login_csrf=token, next_url=safe_next(next_url),
                         insecure=not secure_cookie(request))
    reply.set_cookie(LOGIN_COOKIE, token, max_age=3600, path=f"{PREFIX}/login",
                     httponly=True, samesite="strict", secure=secure_cookie(request))
    return reply


@router.get("/login")
async def login_form(request: Request, pages: PagesDep) -> Response:
    return login_page(request, pages, next_url=request.query_params.get("next", ""))


@router.post("/login")
async def login(request: Request, pages: PagesDep,
                sessions: SessionsDep) -> Response:
    form = await request.form()
    sent, cookie = str(form.get("csrf") or ""), request.cookies.get(LOGIN_COOKIE, "")
    next_url = str(form.get("next") or "")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        return login_page(request, pages, 403, "The login form expired or did not come from "
                          "this page. Please try again.", next_url)
    client = request.client.host if request.client else "?"
    limiter: LoginLimiter = request.app.state.login_limiter
    wait = limiter.retry_after(client)
    if wait > 0:  # checked before the token: a guess that is right still waits
        reply = login_page(request, pages, 429, f"Too many failed logins from {client}. "
                           f"Try again in {math.ceil(wait)} seconds.", next_url)
        reply.headers["Retry-After"] = str(math.ceil(wait))
        return reply
    session = sessions.login(str(form.get("token") or "")[:TOKEN_MAX])
    if session is None:
        limiter.failed(client)
        log.warning("web UI: failed login from %s", client)
        return login_page(request, pages, 401,
                          "This token is not valid. Check it and try again.", next_url)
    reply = redirect(safe_next(next_url))
    reply.set_cookie(COOKIE, session.id, path="/", httponly=True, samesite="strict",
                     secure=secure_cookie(request))
    reply.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
    return reply


@router.post("/logout")
async def logout(request: Request, pages: PagesDep,
                 sessions: SessionsDep) -> Response:
    session = session_of(request)
    if session is not None:
        try:
            await checked_form(request, session, "viewer")
        except Forbidden as exc:
            return pages.error_page(request, session, 403, "Refused", exc.message)
        sessions.logout(session.id)
    reply = redirect(f"{PREFIX}/login")
    reply.delete_cookie(COOKIE, path="/")
    return reply
