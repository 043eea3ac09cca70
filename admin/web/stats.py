"""``GET /api/v1/stats``: the sampled traffic (``admin.traffic``) as JSON, and the UI's copy.

The REST route needs a viewer token; the UI's charts read the same answer through the session
cookie (``/ui/api/stats``), as the other live figures of the UI do. Both call
``stats_answer``, so the charts show exactly what the API returns.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from admin.settings import ApiToken
from admin.traffic import StatsQueryError, TrafficWindow, stats_answer
from admin.web.deps import ApiError, JsonSession, require_viewer
from admin.web.ui.text import PREFIX

router = APIRouter()
Viewer = Depends(require_viewer)


def _answer(request: Request, scope: str, since: str | None) -> dict[str, Any]:
    window: TrafficWindow = request.app.state.traffic
    try:
        return stats_answer(window, scope, since)
    except StatsQueryError as exc:
        raise ApiError(400, str(exc), [str(exc)]) from None


@router.get("/api/v1/stats")
async def stats(request: Request, scope: str = "site", since: str | None = None,
                token: ApiToken = Viewer) -> dict[str, Any]:
    """Requests, 4xx and 5xx per second, p50/p95/p99 latency (seconds), requests in flight,
    ejections and retries per second of one scope, one point per sampling interval over the
    window (``null`` where there was no data). ``scope``: ``site``, ``cluster/<name>``,
    ``virtual_server/<name>``, ``group/<name>`` (with each member's series) or
    ``member/<group>/<address>``; ``since``: only points after this time (epoch seconds)."""
    return _answer(request, scope, since)


@router.get(f"{PREFIX}/api/stats", include_in_schema=False)
async def ui_stats(request: Request, session: JsonSession, scope: str = "site",
                   since: str | None = None) -> JSONResponse:
    return JSONResponse(_answer(request, scope, since), headers={"Cache-Control": "no-store"})
