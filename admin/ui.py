"""The admin's web UI: server-rendered pages (jinja2) under ``/ui/``, one stylesheet, one script.

Pages: overview (clusters, nodes, counts, stale groups, recent audit), virtual servers, groups
(searchable, with a health roll-up) and a group's members with every flag, versions (diff,
activate, rollback), the audit log, and "which group serves this URL".

Log in with an API token (``config.tokens``); the token's role decides which buttons exist, and
every action checks the role again. Sessions live in this process's memory (a restart logs
everyone out): the ``slb_session`` cookie holds a random id only, is ``HttpOnly`` and
``SameSite=Strict``, and is ``Secure`` on HTTPS and on loopback addresses (browsers treat
``http://127.0.0.1`` and ``http://localhost`` as secure contexts and keep Secure cookies there);
on plain HTTP to another host a Secure cookie would be dropped by the browser, so it is sent
without, and the login page warns that the admin should be served over HTTPS.

Every form that changes something is a POST carrying the session's CSRF token; a POST without
it (or with a wrong one) is refused with a 403 page and changes nothing. The login form is
protected the same way by a double-submit cookie. Errors of the service (invalid input,
conflicting edits, unknown objects) are shown on the page, never as raw JSON.

Live figures: ``GET /ui/api/groups/{name}/live`` and ``GET /ui/api/nodes`` (session-authenticated
JSON) are polled every 2 s by ``static/ui.js``, which updates the cells in place.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from admin.config import AdminConfig, ApiToken
from admin.live import LiveStatus
from admin.service import MEMBER_OPS, AdminService, Invalid
from admin.state import MemberView, build_snapshot, cluster_content, content_hash, member_ip
from admin.store import StoreError
from slb.metrics import Stats
from slb.model import ConfigErrors
from slb.proxy.compile import Runtime, build_runtime
from slb.proxy.router import RouteTable, VirtualHost

log = logging.getLogger("admin.ui")

HERE = Path(__file__).resolve().parent
PREFIX = "/ui"
COOKIE = "slb_session"
LOGIN_COOKIE = "slb_login"  # double-submit CSRF token of the login form
SESSION_IDLE = 8 * 3600.0  # seconds without a request before a session ends
SESSION_MAX = 24 * 3600.0  # seconds after login a session ends anyway
MAX_SESSIONS = 10000
POLL_MS = 2000
ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
FLAG_COLUMNS = ("ops", "pull", "server", "health", "maintenance")
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
AUDIT_LIMIT = 200
DASH = "\u2013"  # shown for a figure that is not known

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
FLAG_TEXT = {
    "ops": ("up", "down"), "pull": ("in", "out"), "server": ("up", "down"),
    "maintenance": ("on", "off"),
}


# -- sessions ---------------------------------------------------------------------------------


@dataclass
class Session:
    id: str
    name: str
    role: str
    csrf: str
    created: float
    seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def may(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class Sessions:
    """Server-side sessions in memory: random id -> who, role, CSRF token, flash messages."""

    def __init__(self, tokens: list[ApiToken], clock: Callable[[], float] = time.time) -> None:
        self.tokens = tokens
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def login(self, secret: str) -> Session | None:
        found = None
        for token in self.tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(token.token.encode(), secret.strip().encode()):
                found = token
        if found is None:
            return None
        self._expire()
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), found.name, found.role,
                          secrets.token_urlsafe(32), now, now)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > SESSION_IDLE or now - session.created > SESSION_MAX \
                or not any(t.name == session.name and t.role == session.role
                           for t in self.tokens):
            self._by_id.pop(session_id, None)
            return None
        session.seen = now
        return session

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._by_id.items()
                    if now - s.seen > SESSION_IDLE or now - s.created > SESSION_MAX]:
            del self._by_id[key]


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


Form = dict[str, Any]  # a POSTed form (WebUI.checked_form): "address" a list, the rest values


@dataclass
class Posted:
    """A checked POST of a form that changes something (see ``change`` in mount_ui)."""

    session: Session
    form: Form
    context: dict[str, Any]  # what the form's page shows, to show it again on an error
    reason: str


# -- formatting -------------------------------------------------------------------------------


def fmt_when(ts: float | None) -> str:
    if ts is None:
        return DASH
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    if ts is None:
        return "never"
    seconds = max(0.0, (now or time.time()) - ts)
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def diff_lines(text: str) -> list[tuple[str, str]]:
    """A unified diff as (css class, line), without its ---/+++ header."""
    out = []
    for line in text.splitlines():
        if line.startswith(("---", "+++")):
            continue
        kind = "hunk" if line.startswith("@@") else "add" if line.startswith("+") \
            else "del" if line.startswith("-") else "ctx"
        out.append((kind, line))
    return out


def short(value: Any, limit: int = 80) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                           separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path; list items with an address or name are keyed by it."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return out or {path: {}}
    if isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
        out = {}
        for index, item in enumerate(value):
            key = item.get("address") or item.get("name") or index
            out.update(flatten(item, f"{path}[{key}]"))
        return out
    return {path: value}


def audit_change(entry: dict[str, Any], limit: int = 3) -> str:
    """What an audit row changed, in a few words: ``value: true → false``."""
    before, after = entry.get("before"), entry.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        old, new = flatten(before), flatten(after)
        keys = [k for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k) and k not in ("who", "why", "at")]
        parts = [f"{k}: {short(old[k], 30) if k in old else 'none'} → "
                 f"{short(new[k], 30) if k in new else 'none'}" for k in keys[:limit]]
        if len(keys) > limit:
            parts.append(f"and {len(keys) - limit} more")
        return "; ".join(parts) or "no change"
    if before is None and isinstance(after, dict) and "value" in after:
        return f"value: → {short(after['value'])}"
    if before is None and after is not None:
        return "created"
    if after is None and before is not None:
        return "removed"
    return ""


def target_link(target: str) -> str | None:
    kind, _, rest = target.partition("/")
    if kind == "member":
        return f"{PREFIX}/groups/{rest.partition('/')[0]}"
    if kind == "group":
        return f"{PREFIX}/groups/{rest}"
    if kind == "virtual_server":
        return f"{PREFIX}/virtual-servers/{rest}"
    if kind == "version" and rest.isdigit():
        return f"{PREFIX}/versions/diff?" + urlencode({"a": max(1, int(rest) - 1), "b": rest})
    return None


def parse_local_time(value: str) -> float | None:
    """``2024-05-01T12:30`` (a datetime-local input, the admin's local time) -> epoch."""
    value = value.strip()
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise Invalid("invalid time", [f"{value!r}: expected YYYY-MM-DDTHH:MM"]) from None


def local_input(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%dT%H:%M")


def rollup(states: list[str]) -> str:
    if "up" not in states:
        return "none up"
    return "all up" if all(s == "up" for s in states) else "some down"


# -- routing through the data plane's own code -------------------------------------------------


@dataclass
class RouteAnswer:
    cluster: str
    listen: str
    virtual_server: str | None
    matched_by: str
    route: dict[str, Any] | None
    group: str | None


def compile_cluster(content: dict[str, list[dict[str, Any]]], cluster: str) -> Runtime:
    """The proxy's routing objects for one cluster, built by the proxy's own compiler."""
    config = build_snapshot(content, cluster, 1, {})
    return build_runtime(config, None, Stats(), set())


def host_match(table: RouteTable, host: str) -> str:
    """How ``table`` picks a virtual server for ``host``: for display only."""
    name = host.lower()
    bare = name if name.endswith("]") or ":" not in name else name.rpartition(":")[0]
    bare = bare.rstrip(".")
    if host in table.exact or bare in table.exact:
        return f"domain {bare}"
    for suffix, _ in table.wildcards:
        if bare.endswith(suffix):
            return f"wildcard *{suffix}"
    return "default virtual server of the listener"


def virtual_hosts(table: RouteTable) -> list[VirtualHost]:
    found: dict[str, VirtualHost] = {}
    for vhost in [*table.exact.values(), *(v for _, v in table.wildcards), table.default]:
        if vhost is not None:
            found.setdefault(vhost.name, vhost)
    return list(found.values())


# -- the UI -----------------------------------------------------------------------------------


class WebUI:
    def __init__(self, config: AdminConfig, service: AdminService) -> None:
        self.config = config
        self.service = service
        self.sessions = Sessions(list(config.tokens))
        self.live = LiveStatus(service)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["when"] = fmt_when
        env.filters["ago"] = fmt_ago
        env.filters["short"] = short
        env.globals["prefix"] = PREFIX
        env.globals["flag_columns"] = FLAG_COLUMNS
        env.globals["actions"] = ACTIONS
        env.globals["poll_ms"] = POLL_MS
        static = HERE / "static"
        env.globals["static_version"] = str(int(max(
            (p.stat().st_mtime for p in static.iterdir()), default=0)))
        self._compiled: dict[tuple[str, str], Runtime] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    @staticmethod
    def secure_cookie(request: Request) -> bool:
        return request.url.scheme == "https" or (request.url.hostname or "") in LOOPBACK

    def render(self, request: Request, template: str, session: Session | None,
               status: int = 200, **context: Any) -> HTMLResponse:
        flashes = []
        if session is not None:
            flashes, session.flashes = session.flashes, []
        reply = self.templates.TemplateResponse(request, template, {
            "session": session, "flashes": flashes,
            "can_operate": session is not None and session.may("operator"),
            "can_admin": session is not None and session.may("admin"),
            "draft_pending": session is not None and self.draft_pending(),
            "nav": context.pop("nav", ""),
            **context,
        }, status_code=status)
        return self.harden(reply)

    @staticmethod
    def harden(reply: Response) -> Response:
        reply.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        reply.headers["X-Frame-Options"] = "DENY"
        reply.headers["X-Content-Type-Options"] = "nosniff"
        reply.headers["Referrer-Policy"] = "same-origin"
        reply.headers["Cache-Control"] = "no-store"
        return reply

    def error_page(self, request: Request, session: Session | None, status: int, title: str,
                   message: str, errors: list[str] | None = None) -> HTMLResponse:
        return self.render(request, "error.html", session, status=status, title=title,
                           message=message, errors=errors or [])  # type: ignore[return-value]

    def store_error_page(self, request: Request, session: Session, exc: StoreError,
                         title: str) -> HTMLResponse:
        """The error page for an error of the service, with its list of problems if any."""
        return self.error_page(request, session, exc.status, title, str(exc),
                               getattr(exc, "errors", None))

    def redirect(self, url: str) -> Response:
        return self.harden(RedirectResponse(url, status_code=303))

    def to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return self.redirect(f"{PREFIX}/login?" + urlencode({"next": target}))

    async def checked_form(self, request: Request, session: Session, role: str) -> Form:
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
        return {key: form.getlist(key) if key == "address" else form.get(key)
                for key in form}

    def draft_pending(self) -> bool:
        active = self.service.store.active_version()
        if active is None:
            return bool(self.service.store.objects("cluster"))
        versions = self.service.store.versions()
        current = next((v["hash"] for v in versions if v["version"] == active), None)
        return current != content_hash(self.service.draft_content())

    def content(self) -> tuple[dict[str, list[dict[str, Any]]], bool]:
        """The active content (what the nodes serve), or the draft if nothing is active."""
        active = self.service.active_content()
        if active is not None:
            return active, True
        return self.service.draft_content(), False

    def runtime_of(self, content: dict[str, list[dict[str, Any]]], cluster: str
                   ) -> Runtime | None:
        key = (content_hash(content), cluster)
        found = self._compiled.get(key)
        if found is None:
            try:
                found = compile_cluster(content, cluster)
            except ConfigErrors:
                return None
            if len(self._compiled) > 32:
                self._compiled.clear()
            self._compiled[key] = found
        return found

    # -- data for pages -----------------------------------------------------------------------

    def group_rows(self) -> list[dict[str, Any]]:
        """Every group (active, plus draft-only ones) with its members and roll-up."""
        content, _ = self.content()
        active_names = {g["name"] for g in content.get("group", [])}
        groups = list(content.get("group", []))
        groups += [r.body for r in self.service.store.objects("group")
                   if r.name not in active_names]
        members = self.service.members_for({"group": groups})
        used: dict[str, list[dict[str, Any]]] = {}
        for route in content.get("route", []):
            used.setdefault(route["group"], []).append(route)
        out = []
        for group in sorted(groups, key=lambda g: g["name"]):
            views = members.get(group["name"], [])
            states = [m.state for m in views]
            out.append({
                "name": group["name"], "body": group, "members": views,
                "active": group["name"] in active_names,
                "counts": {s: states.count(s) for s in ("up", "drain", "down")},
                "health": rollup(states) if views else "no members",
                "source": source_text(group),
                "stale": self.service.stale.get(group["name"]),
                "routes": used.get(group["name"], []),
            })
        return out

    def node_rows(self) -> list[dict[str, Any]]:
        status = {(s["cluster"], s["name"]): s for s in self.service.nodes()}
        out = []
        for row in self.service.store.objects("node"):
            found = status.get((row.body["cluster"], row.name), {})
            out.append({"cluster": row.body["cluster"], "name": row.name,
                        "control_url": row.body["control_url"], **found})
        return out

    def node_live(self, node: dict[str, Any]) -> dict[str, Any]:
        lag = node.get("lag")
        if node.get("last_error"):
            sync, sync_class = "error", "bad"
        elif node.get("in_sync"):
            sync, sync_class = "in sync", "good"
        elif node.get("applied_version") is None:
            sync, sync_class = "not contacted yet", "warn"
        else:
            sync, sync_class = f"behind by {lag}" if lag else "applying", "warn"
        return {"desired": node.get("desired_version") or DASH,
                "applied": node.get("applied_version") or DASH,
                "lag": DASH if lag is None else lag,
                "sync": sync, "sync_class": sync_class,
                "contact": fmt_ago(node.get("last_contact")) if node.get("last_contact")
                else "never",
                "error": node.get("last_error") or ""}

    def member_row(self, group: dict[str, Any], view: MemberView,
                   draft_weights: dict[str, int]) -> dict[str, Any]:
        flags = []
        for name in FLAG_COLUMNS:
            flag = view.flags[name]
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
                "flags": flags, "pull_in": view.flags["pull"]["value"],
                "ops_up": view.flags["ops"]["value"]}


def source_text(group: dict[str, Any]) -> str:
    consul = group.get("consul")
    if consul:
        tag = f" (tag {consul['tag']})" if consul.get("tag") else ""
        return f"Consul service {consul['service']}{tag}"
    return "static list"


def mount_ui(app: FastAPI, config: AdminConfig, service: AdminService) -> WebUI:
    """Serve the web UI on ``app``: pages under /ui/, static files, ``/`` redirects there."""
    ui = WebUI(config, service)
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.get("/", include_in_schema=False)
    async def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=303)

    # Unknown pages, wrong methods and malformed paths under /ui/ get an HTML page too; the
    # REST API keeps FastAPI's JSON answers.
    def is_page(request: Request) -> bool:
        path = request.url.path
        return path.startswith(f"{PREFIX}/") and not path.startswith(f"{PREFIX}/api/")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if not is_page(request):
            return await http_exception_handler(request, exc)
        titles = {404: "Not found", 405: "Not allowed"}
        messages = {404: "There is no such page.",
                    405: f"This page does not answer {request.method} requests."}
        return ui.error_page(request, ui.session_of(request), exc.status_code,
                             titles.get(exc.status_code, "Error"),
                             messages.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if not is_page(request):
            return await request_validation_exception_handler(request, exc)
        errors = [".".join(str(p) for p in e.get("loc", ())) + f": {e.get('msg')}"
                  for e in exc.errors()]
        return ui.error_page(request, ui.session_of(request), 400, "Bad request",
                             "This address is not valid.", errors)

    # -- login --------------------------------------------------------------------------------

    def safe_next(value: str | None) -> str:
        value = value or ""
        if value.startswith(f"{PREFIX}/") and not value.startswith("//") and "\\" not in value \
                and not value.startswith(f"{PREFIX}/login"):
            return value
        return f"{PREFIX}/"

    def login_page(request: Request, status: int = 200, error: str | None = None,
                   next_url: str = "") -> Response:
        token = secrets.token_urlsafe(24)
        reply = ui.render(request, "login.html", None, status=status, error=error,
                          login_csrf=token, next_url=safe_next(next_url),
                          insecure=not ui.secure_cookie(request))
        reply.set_cookie(LOGIN_COOKIE, token, max_age=3600, path=f"{PREFIX}/login",
                         httponly=True, samesite="strict", secure=ui.secure_cookie(request))
        return reply

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return login_page(request, next_url=request.query_params.get("next", ""))

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        sent, cookie = str(form.get("csrf") or ""), request.cookies.get(LOGIN_COOKIE, "")
        next_url = str(form.get("next") or "")
        if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            return login_page(request, 403, "The login form expired or did not come from this "
                              "page. Please try again.", next_url)
        session = ui.sessions.login(str(form.get("token") or ""))
        if session is None:
            log.warning("web UI: failed login from %s",
                        request.client.host if request.client else "?")
            return login_page(request, 401, "This token is not valid. Check it and try again.",
                              next_url)
        reply = ui.redirect(safe_next(next_url))
        reply.set_cookie(COOKIE, session.id, path="/", httponly=True, samesite="strict",
                         secure=ui.secure_cookie(request))
        reply.delete_cookie(LOGIN_COOKIE, path=f"{PREFIX}/login")
        return reply

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = ui.session_of(request)
        if session is not None:
            try:
                await ui.checked_form(request, session, "viewer")
            except Forbidden as exc:
                return ui.error_page(request, session, 403, "Refused", exc.message)
            ui.sessions.logout(session.id)
        reply = ui.redirect(f"{PREFIX}/login")
        reply.delete_cookie(COOKIE, path="/")
        return reply

    # -- overview -----------------------------------------------------------------------------

    @router.get("/")
    async def overview(request: Request) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        groups = ui.group_rows()
        member_counts = {s: sum(g["counts"][s] for g in groups) for s in ("up", "drain", "down")}
        group_counts = {h: sum(1 for g in groups if g["health"] == h)
                        for h in ("all up", "some down", "none up", "no members")}
        nodes = ui.node_rows()
        clusters = [{"name": r.name, "description": r.body.get("description", ""),
                     "nodes": [{**n, "live": ui.node_live(n)} for n in nodes
                               if n["cluster"] == r.name]}
                    for r in service.store.objects("cluster")]
        stale = [{"group": g, "error": e, "last_contact": service.last_contact.get(g)}
                 for g, e in sorted(service.stale.items())]
        audit = service.store.audit(limit=10)
        return ui.render(request, "overview.html", session, nav="overview", clusters=clusters,
                         group_counts=group_counts, member_counts=member_counts,
                         group_total=len(groups), stale=stale, audit=audit,
                         audit_change=audit_change, target_link=target_link,
                         active_version=service.store.active_version(),
                         live_url=f"{PREFIX}/api/nodes")

    @router.get("/api/nodes")
    async def nodes_live(request: Request) -> Response:
        session = ui.session_of(request)
        if session is None:
            return JSONResponse({"error": "unauthorized", "message": "log in again"}, 401)
        rows = {f"{n['cluster']}/{n['name']}": ui.node_live(n) for n in ui.node_rows()}
        return JSONResponse({"rows": rows}, headers={"Cache-Control": "no-store"})

    # -- virtual servers ----------------------------------------------------------------------

    def ordered_routes(content: dict[str, list[dict[str, Any]]], vs: dict[str, Any]
                       ) -> tuple[list[dict[str, Any]], bool]:
        """The routes of ``vs`` in the order the proxy tries them (compiled by its code)."""
        routes = [r for r in content.get("route", []) if r["virtual_server"] == vs["name"]]
        runtime = ui.runtime_of(content, vs["cluster"])
        table = runtime.tables.get(vs["listen"]) if runtime is not None else None
        vhost = next((v for v in virtual_hosts(table) if v.name == vs["name"]), None) \
            if table is not None else None
        if vhost is None:
            return routes, False
        return [routes[c.target.route_index] for c in vhost.routes], True

    @router.get("/virtual-servers")
    async def virtual_servers(request: Request) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        content, active = ui.content()
        count: dict[str, int] = {}
        for route in content.get("route", []):
            count[route["virtual_server"]] = count.get(route["virtual_server"], 0) + 1
        servers = sorted(content.get("virtual_server", []),
                         key=lambda v: (v["cluster"], v["listen"], v["name"]))
        return ui.render(request, "virtual_servers.html", session, nav="vs", servers=servers,
                         route_count=count, active=active)

    @router.get("/virtual-servers/{name}")
    async def virtual_server(request: Request, name: str) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        content, active = ui.content()
        vs = next((v for v in content.get("virtual_server", []) if v["name"] == name), None)
        if vs is None:
            return ui.error_page(request, session, 404, "Not found",
                                 f"There is no {'active ' if active else ''}virtual server "
                                 f"named {name!r}.")
        routes, compiled = ordered_routes(content, vs)
        health = {g["name"]: g["health"] for g in ui.group_rows()}
        return ui.render(request, "virtual_server.html", session, nav="vs", vs=vs,
                         routes=routes, compiled=compiled, health=health, active=active)

    # -- groups -------------------------------------------------------------------------------

    @router.get("/groups")
    async def groups(request: Request, q: str = "") -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        rows = ui.group_rows()
        needle = q.strip().lower()
        if needle:
            rows = [g for g in rows if needle in g["name"].lower()
                    or any(needle in m.address.lower() for m in g["members"])]
        return ui.render(request, "groups.html", session, nav="groups", groups=rows, q=q)

    def group_context(name: str) -> dict[str, Any]:
        row = service.store.get("group", name)  # NotFound for an unknown group
        members = service.group_members(name)
        content, _ = ui.content()
        active_group = next((g for g in content.get("group", []) if g["name"] == name), None)
        group = active_group or row.body
        draft_weights = {m["address"]: m.get("weight", 1) for m in row.body.get("members", [])} \
            if not row.body.get("consul") else {}
        routes = [r for r in content.get("route", []) if r["group"] == name]
        draft_differs = active_group is not None and row.body != active_group
        return {
            "group": group, "row": row, "routes": routes,
            "members": [ui.member_row(group, m, draft_weights) for m in members],
            "health": rollup([m.state for m in members]) if members else "no members",
            "source": source_text(group), "static": not group.get("consul"),
            "active": active_group is not None, "draft_differs": draft_differs,
            "stale": service.stale.get(name), "last_contact": service.last_contact.get(name),
        }

    @router.get("/groups/{name}")
    async def group_page(request: Request, name: str) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        try:
            context = group_context(name)
        except StoreError as exc:
            return ui.error_page(request, session, exc.status, "Not found", str(exc))
        return ui.render(request, "group.html", session, nav="groups",
                         live_url=f"{PREFIX}/api/groups/{name}/live", **context)

    @router.get("/api/groups/{name}/live")
    async def group_live(request: Request, name: str) -> Response:
        session = ui.session_of(request)
        if session is None:
            return JSONResponse({"error": "unauthorized", "message": "log in again"}, 401)
        try:
            members = service.group_members(name)
        except StoreError as exc:
            return JSONResponse({"error": "not_found", "message": str(exc)}, exc.status)
        figures = await ui.live.group(name, [m.address for m in members])
        rows = {}
        for m in members:
            live = figures.members.get(m.address, {})
            rows[m.address] = {"active": live.get("active", 0),
                               "requests": live.get("requests", 0),
                               "failures": live.get("failures", 0),
                               "state": m.state}
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

    def act_context(name: str, op: str, addresses: list[str], session: Session
                    ) -> dict[str, Any]:
        if op not in ACTIONS:
            raise Invalid(f"there is no action {op!r}", [f"op: expected one of {list(ACTIONS)}"])
        label, role, effect = ACTIONS[op]
        if not session.may(role):
            raise Forbidden(f"Your role ({session.role}) may not {label.lower()}: {role} is "
                            "needed.")
        context = group_context(name)
        known = {m["address"]: m for m in context["members"]}
        if not addresses:
            raise Invalid("no member selected", ["Select at least one member first."])
        missing = [a for a in addresses if a not in known]
        if missing:
            raise Invalid(f"group {name!r} has no member " + ", ".join(missing),
                          [f"{a}: not a member of {name}" for a in missing])
        if op == "weight" and not context["static"]:
            raise Invalid("weights of this group come from Consul",
                          ["weight: set the weight in Consul (service Weights)"])
        selected = [known[a] for a in addresses]
        ips = sorted({m["ip"] for m in selected})
        return {**context, "op": op, "label": label, "effect": effect, "selected": selected,
                "ips": ips}

    @router.get("/groups/{name}/act")
    async def act_form(request: Request, name: str, op: str = "") -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        addresses = request.query_params.getlist("address")
        try:
            context = act_context(name, op, addresses, session)
        except Forbidden as exc:
            return ui.error_page(request, session, 403, "Not allowed", exc.message)
        except StoreError as exc:
            return ui.store_error_page(request, session, exc, "Cannot do that")
        return ui.render(request, "act.html", session, nav="groups", error=None, errors=[],
                         reason="", weight="", **context)

    # -- forms that change something ----------------------------------------------------------

    async def change(request: Request, role: str, done_url: str,
                     act: Callable[[Posted], str],
                     failed: Callable[[Posted, StoreError], Response],
                     prepare: Callable[[Session, Form], dict[str, Any]] | None = None,
                     ) -> Response:
        """A POST that changes something. The session, the CSRF token and ``role`` are checked,
        ``prepare(session, form)`` gives the form page's context (a refusal or an error of the
        service there is an error page), a reason is required; then ``act(post)`` does it and
        returns the flash message, and the browser goes to ``done_url``. An error of the
        service (the missing reason included) is shown by ``failed(post, error)``."""
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        try:
            form = await ui.checked_form(request, session, role)
            context = prepare(session, form) if prepare is not None else {}
        except Forbidden as exc:
            return ui.error_page(request, session, 403, "Refused", exc.message)
        except StoreError as exc:
            return ui.store_error_page(request, session, exc, "Cannot do that")
        post = Posted(session, form, context, str(form.get("reason") or "").strip())
        try:
            if not post.reason:
                raise Invalid("a reason is required", ["reason: say why, for the audit log"])
            message = act(post)
        except StoreError as exc:
            return failed(post, exc)
        session.flashes.append(("ok", message))
        return ui.redirect(done_url)

    def form_again(request: Request, template: str, nav: str, post: Posted, exc: StoreError,
                   context: dict[str, Any]) -> Response:
        """The form's page again, the error of the service above it, the reason kept."""
        return ui.render(request, template, post.session, status=exc.status, nav=nav,
                         error=str(exc), errors=getattr(exc, "errors", []), reason=post.reason,
                         **context)

    # -- member actions -----------------------------------------------------------------------

    def posted_addresses(form: Form) -> list[str]:
        return [str(a) for a in form.get("address") or []]

    @router.post("/groups/{name}/act")
    async def act(request: Request, name: str) -> Response:
        def prepare(session: Session, form: Form) -> dict[str, Any]:
            context = act_context(name, str(form.get("op") or ""), posted_addresses(form),
                                  session)
            return {**context, "weight": str(form.get("weight") or "").strip()}

        def failed(post: Posted, exc: StoreError) -> Response:
            return form_again(request, "act.html", "groups", post, exc, post.context)

        return await change(request, "operator", f"{PREFIX}/groups/{name}",
                            lambda post: perform(name, post), failed, prepare)

    def perform(name: str, post: Posted) -> str:
        """Does the member action ``post`` asks for (``act_context`` checked it); the flash."""
        op, who, reason = post.context["op"], post.session.name, post.reason
        addresses = posted_addresses(post.form)
        count = f"{len(addresses)} member{'s' if len(addresses) != 1 else ''}"
        if op in MEMBER_OPS:
            service.member_op(name, addresses, op, who, reason)
            return f"{ACTIONS[op][0]}: {count} of {name} ({', '.join(addresses)})."
        if op in ("server-up", "server-down"):
            ips = sorted({member_ip(a) for a in addresses})
            service.batch([{"server": ip, "op": op.removeprefix("server-")} for ip in ips],
                          who, reason)
            return f"{ACTIONS[op][0]}: {', '.join(ips)} (every group with these servers)."
        # weight: an edit of the draft group, made from the row version the form showed
        try:
            value = int(post.context["weight"])
        except ValueError:
            raise Invalid("invalid weight", ["weight: expected a whole number 0-10000"]) \
                from None
        row_version = str(post.form.get("row_version") or "")
        if not row_version.isdigit():
            raise Invalid("the form has no row_version", ["row_version: reload the page"])
        row = service.store.get("group", name)
        members = [{**m, "weight": value} if m["address"] in addresses else m
                   for m in row.body.get("members", [])]
        service.update("group", name, {**row.body, "members": members}, int(row_version),
                       who, reason)
        return (f"Weight {value} saved to the draft for {count} of {name}. It takes effect "
                "when a new version is activated (Versions → Activate).")

    # -- versions -----------------------------------------------------------------------------

    def diff_view(a: int | str, b: int | str) -> list[dict[str, Any]]:
        return [{**c, "lines": diff_lines(c["diff"])} for c in service.diff(a, b)["changes"]]

    def versions_page(request: Request, session: Session, status: int = 200,
                      error: str | None = None, errors: list[str] | None = None,
                      reason: str = "") -> Response:
        info = service.versions()
        active = info["active"]
        pending = diff_view(active, "draft") if active is not None else []
        return ui.render(request, "versions.html", session, status=status, nav="versions",
                         versions=info["versions"], active=active, pending=pending,
                         never_activated=active is None, error=error, errors=errors or [],
                         reason=reason)

    @router.get("/versions")
    async def versions(request: Request) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        return versions_page(request, session)

    @router.get("/versions/diff")
    async def version_diff(request: Request, a: str = "", b: str = "draft") -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        for ref in (a, b):
            if ref != "draft" and not ref.isdigit():
                return ui.error_page(request, session, 400, "Cannot compare",
                                     f"{ref!r} is not a version number or 'draft'.")
        try:
            changes = diff_view(a, b)
        except StoreError as exc:
            return ui.error_page(request, session, exc.status, "Cannot compare", str(exc))
        return ui.render(request, "diff.html", session, nav="versions", a=a, b=b,
                         changes=changes, versions=service.versions()["versions"])

    @router.post("/versions/activate")
    async def activate(request: Request) -> Response:
        def act(post: Posted) -> str:
            done = service.activate(post.session.name, post.reason)
            return (f"Version {done['version']} is active; the nodes are being updated "
                    "(see Overview).")

        def failed(post: Posted, exc: StoreError) -> Response:
            return versions_page(request, post.session, exc.status, str(exc),
                                 getattr(exc, "errors", []), post.reason)

        return await change(request, "admin", f"{PREFIX}/versions", act, failed)

    def rollback_context(number: int) -> dict[str, Any]:
        version = service.store.version(number)
        active = service.store.active_version()
        changes = diff_view(active, number) if active is not None else []
        return {"version": version, "active": active, "changes": changes}

    @router.get("/versions/{number}/rollback")
    async def rollback_form(request: Request, number: int) -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        if not session.may("admin"):
            return ui.error_page(request, session, 403, "Not allowed",
                                 f"Your role ({session.role}) may not roll back: admin is "
                                 "needed.")
        try:
            context = rollback_context(number)
        except StoreError as exc:
            return ui.error_page(request, session, exc.status, "Not found", str(exc))
        return ui.render(request, "rollback.html", session, nav="versions", error=None,
                         errors=[], reason="", **context)

    @router.post("/versions/{number}/rollback")
    async def rollback(request: Request, number: int) -> Response:
        def act(post: Posted) -> str:
            done = service.rollback(number, post.session.name, post.reason)
            return (f"Version {done['version']} is active: the content of version {number}. "
                    "The nodes are being updated.")

        def failed(post: Posted, exc: StoreError) -> Response:
            try:
                context = rollback_context(number)
            except StoreError:
                return ui.error_page(request, post.session, exc.status, "Cannot roll back",
                                     str(exc))
            return form_again(request, "rollback.html", "versions", post, exc, context)

        return await change(request, "admin", f"{PREFIX}/versions", act, failed)

    # -- audit --------------------------------------------------------------------------------

    @router.get("/audit")
    async def audit(request: Request, target: str = "", who: str = "", since: str = "",
                    until: str = "") -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        error, errors, entries = None, [], []
        try:
            entries = service.store.audit(target.strip() or None, who.strip() or None,
                                          parse_local_time(since), parse_local_time(until),
                                          AUDIT_LIMIT)
        except Invalid as exc:
            error, errors = str(exc), exc.errors
        users = sorted({t.name for t in config.tokens} | {"seed"})
        return ui.render(request, "audit.html", session, status=422 if error else 200,
                         nav="audit", entries=entries, target=target, who=who, since=since,
                         until=until, users=users, error=error, errors=errors,
                         limit=AUDIT_LIMIT, audit_change=audit_change, target_link=target_link)

    # -- which group serves this URL ----------------------------------------------------------

    def resolve(url: str) -> tuple[list[RouteAnswer], list[str]]:
        text = url.strip()
        parts = urlsplit(text if "://" in text else f"http://{text}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("not a URL", ["url: expected e.g. http://shop.example.com/api/cart"])
        host = parts.netloc.rpartition("@")[2]
        path = parts.path or "/"
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise Invalid("not a URL", ["url: the port is not a number"]) from None
        content, _ = ui.content()
        notes: list[str] = []
        answers: list[RouteAnswer] = []
        for cluster in content.get("cluster", []):
            runtime = ui.runtime_of(content, cluster["name"])
            if runtime is None:
                notes.append(f"cluster {cluster['name']}: its configuration does not compile")
                continue
            tables = runtime.tables
            listeners = [a for a in tables if a.rpartition(":")[2] == str(port)] or list(tables)
            _, routes, _ = cluster_content(content, cluster["name"])
            for listen in sorted(listeners):
                table = tables[listen]
                vhost = table.virtual_host(host)
                if vhost is None:
                    answers.append(RouteAnswer(cluster["name"], listen, None, "", None, None))
                    continue
                target = vhost.match(path)
                route = None
                if target is not None:
                    own = [r for r in routes if r["virtual_server"] == vhost.name]
                    route = own[target.route_index]
                answers.append(RouteAnswer(cluster["name"], listen, vhost.name,
                                           host_match(table, host), route,
                                           route["group"] if route else None))
        if answers and all(not a.listen.endswith(f":{port}") for a in answers):
            notes.append(f"No listener is on port {port}: every listener is shown.")
        return answers, notes

    @router.get("/route")
    async def route_tool(request: Request, url: str = "") -> Response:
        session = ui.session_of(request)
        if session is None:
            return ui.to_login(request)
        answers: list[RouteAnswer] = []
        notes: list[str] = []
        error, errors = None, []
        if url.strip():
            try:
                answers, notes = resolve(url)
            except Invalid as exc:
                error, errors = str(exc), exc.errors
        health = {g["name"]: g["health"] for g in ui.group_rows()} if answers else {}
        active = ui.content()[1]
        return ui.render(request, "route.html", session, status=422 if error else 200,
                         nav="route", url=url, answers=answers, notes=notes, error=error,
                         errors=errors, health=health, active=active)

    app.include_router(router)
    return ui
