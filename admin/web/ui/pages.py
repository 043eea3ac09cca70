"""What every page of the web UI shares: rendering, hardening, errors, the changing-form flow.

``Pages`` (one per app, ``app.state.pages``) renders a template with what the layout needs
(who is logged in, the flash messages, whether drafts are pending), adds the security headers to
every answer, and draws error pages. ``Pages.change`` is the one flow of a form that changes
something: session, CSRF token and role checked, the form's page prepared, then the service
called; a refusal of the service shows the form again with the error above it.

Every form that changes something is a POST carrying the session's CSRF token; a POST without
it (or with a wrong one) is refused with a 403 page and changes nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from admin.domain.delivery import Delivery
from admin.domain.errors import AdminError
from admin.web.deps import service_of, session_of
from admin.web.sessions import Session
from admin.web.ui.text import PREFIX, fmt_ago, fmt_when, short

ADMIN = Path(__file__).resolve().parents[2]
TEMPLATES = ADMIN / "templates"
STATIC = ADMIN / "static"
POLL_MS = 2000
UI_WAIT = 5.0  # seconds a form waits for the nodes before saying which did not apply yet
FLAG_COLUMNS = ("ops", "pull", "server", "health", "maintenance")

# op -> (button label, role needed, what it does)
ACTIONS: dict[str, tuple[str, str, str]] = {
    "pull-out": ("Pull out", "operator",
                 "The member stops receiving new requests at once; requests in flight finish. "
                 "It stays out until it is pulled in again, whatever its health checks say."),
    "pull-in": ("Pull in", "operator",
                "The member takes traffic again, unless another flag still holds it out "
                "(down, server down, failing health checks, maintenance)."),
    "down": ("Mark down", "operator",
             "An operator hold on this member in this group: no new requests, requests in "
             "flight finish. It stays down until marked up."),
    "up": ("Mark up", "operator",
           "Removes the operator hold on this member in this group; it takes traffic unless "
           "another flag holds it out."),
    "server-down": ("Server down", "operator",
                    "Holds the whole server (its IP) out of EVERY group it is a member of, not "
                    "only this one."),
    "server-up": ("Server up", "operator",
                  "Removes the server hold for this IP in every group."),
    "weight": ("Set weight", "admin",
               "Changes the member's weight in the draft configuration. It takes effect when a "
               "new version is activated (Versions page)."),
}

Form = dict[str, Any]  # a POSTed form (Pages.checked_form): "address" a list, the rest values


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Posted:
    """A checked POST of a form that changes something (see ``Pages.change``)."""

    session: Session
    form: Form
    context: dict[str, Any]  # what the form's page shows, to show it again on an error
    reason: str


class Pages:
    def __init__(self) -> None:
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        env.filters["when"] = fmt_when
        env.filters["ago"] = fmt_ago
        env.filters["short"] = short
        env.globals["prefix"] = PREFIX
        env.globals["flag_columns"] = FLAG_COLUMNS
        env.globals["actions"] = ACTIONS
        env.globals["poll_ms"] = POLL_MS
        env.globals["static_version"] = str(int(max(
            (p.stat().st_mtime for p in STATIC.iterdir()), default=0)))

    def render(self, request: Request, template: str, session: Session | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        flashes = []
        if session is not None:
            flashes = list(session.flashes)
            session.flashes.clear()
        reply = self.templates.TemplateResponse(request, template, {
            "session": session, "flashes": flashes,
            "can_operate": session is not None and session.may("operator"),
            "can_admin": session is not None and session.may("admin"),
            "draft_pending": session is not None and service_of(request).drafts_pending(),
            "nav": context.pop("nav", ""),
            **context,
        }, status_code=status)
        harden(reply)
        return reply

    def error_page(self, request: Request, session: Session | None, status: int, title: str,
                   message: str, errors: list[str] | None = None) -> HTMLResponse:
        return self.render(request, "error.html", session, status=status, title=title,
                           message=message, errors=errors or [])

    def refused(self, request: Request, session: Session, exc: AdminError, title: str
                ) -> HTMLResponse:
        """The error page for a refusal of the service, with its list of problems."""
        return self.error_page(request, session, exc.status, title, str(exc), exc.errors)

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return redirect(f"{PREFIX}/login?" + urlencode({"next": target}))

    async def change(self, request: Request, role: str, done_url: str,
                     act: Callable[[Posted], str],
                     failed: Callable[[Posted, AdminError], Response],
                     prepare: Callable[[Session, Form], dict[str, Any]] | None = None,
                     touches: Callable[[Posted], set[str] | None] | None = None,
                     ) -> Response:
        """A POST that changes something. The session, the CSRF token and ``role`` are checked,
        ``prepare(session, form)`` gives the form page's context (a refusal or an error of the
        service there is an error page); then ``act(post)`` calls the service and returns the
        flash message, and the browser goes to ``done_url``. A refusal of the service (a
        missing reason included) is shown by ``failed(post, error)``. With ``touches`` (the
        groups the change reaches; None: every group), the answer waits up to ``UI_WAIT``
        seconds for the nodes and a second flash says what each did (``delivery_flash``)."""
        session = session_of(request)
        if session is None:
            return self.to_login(request)
        try:
            form = await checked_form(request, session, role)
            context = prepare(session, form) if prepare is not None else {}
        except Forbidden as exc:
            return self.error_page(request, session, 403, "Refused", exc.message)
        except AdminError as exc:
            return self.refused(request, session, exc, "Cannot do that")
        post = Posted(session, form, context, str(form.get("reason") or "").strip())
        service = service_of(request)
        groups = touches(post) if touches is not None else set()
        taken = service.ticket() if groups != set() else None
        try:
            message = act(post)
        except AdminError as exc:
            return failed(post, exc)
        session.flashes.append(("ok", message))
        if taken is not None:
            session.flashes.append(delivery_flash(
                await service.confirm(taken, groups, UI_WAIT)))
        return redirect(done_url)

    def admin_form(self, request: Request, session: Session, template: str, nav: str,
                   doing: str, context: Callable[[], dict[str, Any]]) -> Response:
        """The page of a form only an admin may send; any other role gets a 403 page saying
        that it may not be ``doing`` (the POST checks again: ``change``)."""
        if not session.may("admin"):
            return self.error_page(request, session, 403, "Not allowed",
                                   f"Your role ({session.role}) may not {doing}: admin is "
                                   "needed.")
        return self.render(request, template, session, nav=nav, error=None, errors=[],
                           reason="", **context())

    def form_again(self, request: Request, template: str, nav: str, post: Posted,
                   exc: AdminError, context: dict[str, Any]) -> Response:
        """The form's page again, the refusal of the service above it, the reason kept."""
        return self.render(request, template, post.session, status=exc.status, nav=nav,
                           error=str(exc), errors=exc.errors, reason=post.reason, **context)


def delivery_flash(delivery: Delivery) -> tuple[str, str]:
    """What each node did about a change, as a flash: ``ok`` when every node applied it."""
    applied = [f"{n['node']} (snapshot {n['version']})" for n in delivery.nodes if n["applied"]]
    if delivery.complete:
        return ("ok", "Applied by every node: " + (", ".join(applied) or "none") + ".")
    missing = [f"{n['node']} ({n.get('error')})" for n in delivery.nodes if not n["applied"]]
    return ("warn", f"Not applied within {UI_WAIT:g} s by " + ", ".join(missing)
            + (f"; applied by {', '.join(applied)}" if applied else "")
            + ". The change is stored and keeps being pushed (see Overview).")


def get_pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


def harden(reply: Response) -> Response:
    reply.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    reply.headers["X-Frame-Options"] = "DENY"
    reply.headers["X-Content-Type-Options"] = "nosniff"
    reply.headers["Referrer-Policy"] = "same-origin"
    reply.headers["Cache-Control"] = "no-store"
    return reply


def redirect(url: str) -> Response:
    return harden(RedirectResponse(url, status_code=303))


async def checked_form(request: Request, session: Session, role: str) -> Form:
    """The POSTed form, after the CSRF token and the role are checked."""
    form = await request.form()
    sent = str(form.get("csrf") or "")
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Forbidden("This form was not sent by this page (its CSRF token is missing "
                        "or out of date). Nothing was changed. Reload the page and try "
                        "again.")
    if not session.may(role):
        raise Forbidden(f"Your role ({session.role}) may not do this: {role} is needed. "
                        "Nothing was changed.")
    return {key: form.getlist(key) if key == "address" else form.get(key) for key in form}


PagesDep = Annotated[Pages, Depends(get_pages)]
