"""The audit log, filtered by target prefix, who and a time range (the admin's local time)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from admin.domain.errors import Invalid
from admin.web.deps import PageSession, ServiceDep, get_settings
from admin.web.ui.pages import PagesDep
from admin.web.ui.text import PREFIX, audit_change, parse_local_time, target_link

router = APIRouter(prefix=PREFIX, include_in_schema=False)
AUDIT_LIMIT = 200


@router.get("/audit")
async def audit(request: Request, session: PageSession, service: ServiceDep, pages: PagesDep,
                target: str = "", who: str = "", since: str = "", until: str = ""
                ) -> Response:
    error, errors, entries, status = None, [], [], 200
    try:
        entries = service.audit(target.strip() or None, who.strip() or None,
                                parse_local_time(since), parse_local_time(until), AUDIT_LIMIT)
    except Invalid as exc:
        error, errors, status = str(exc), exc.errors, exc.status
    users = sorted({t.name for t in get_settings(request).tokens} | {"seed"})
    return pages.render(request, "audit.html", session, status=status, nav="audit",
                        entries=entries, target=target, who=who, since=since, until=until,
                        users=users, error=error, errors=errors, limit=AUDIT_LIMIT,
                        audit_change=audit_change, target_link=target_link)
