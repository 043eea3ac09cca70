"""What travels between a pusher and a node's control API: requests, JSON bodies, error texts.

``NodeClient`` is one node's connection: every request carries the node's token and the
leader's term (``X-SLB-Term``, fencing: admin.ha), goes over one keep-alive connection, and is
retried once on a fresh connection when the pooled one breaks before any answer (why: the
``admin.push.pusher`` docstring). Failures become ``Failed``, which says whether the node's
state is unknown afterwards.

A node answers errors as ``{"error", "message", "details": [...]}``; ``http_error`` turns one
into the line shown as a node's ``last_error``, whatever the node sent (JSON or not).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from admin.push.targets import NodeTarget

log = logging.getLogger("admin.push")
TERM_HEADER = "X-SLB-Term"
KEEPALIVE_EXPIRY = 60.0  # seconds a node's idle connection is kept (reconcile: every 10 s)
# the connection broke before any answer: retried once on a fresh one
_BROKEN = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Failed(Exception):
    """A push or check that did not succeed; retried with backoff."""

    def __init__(self, message: str, *, recheck: bool = False) -> None:
        super().__init__(message)
        self.recheck = recheck  # the node's state is unknown now: GET it before pushing


class NodeClient:
    def __init__(self, timeout: float) -> None:
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                keepalive_expiry=KEEPALIVE_EXPIRY))
        self.reconnects = 0  # requests retried on a fresh connection (a stale pooled one)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, target: NodeTarget, term: int | None, method: str, path: str,
                      body: bytes | None = None) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if term is not None:
            headers[TERM_HEADER] = str(term)  # fencing: see admin.ha
        if target.token is not None:
            headers["Authorization"] = f"Bearer {target.token}"
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = target.control_url.rstrip("/") + path
        retried = False
        while True:
            try:
                return await self.http.request(method, url, content=body, headers=headers)
            except httpx.TimeoutException as exc:
                # a change may or may not have been applied: find out before the next push
                raise Failed(f"{method} {path}: timed out ({type(exc).__name__})",
                             recheck=True) from None
            except _BROKEN as exc:
                if retried:
                    raise Failed(f"{method} {path}: {type(exc).__name__}: {exc or 'failed'}",
                                 recheck=True) from None
                retried = True  # a stale pooled connection: once more, on a fresh one
                self.reconnects += 1
                log.info("node %s: %s %s: %s; retrying on a new connection", target.name,
                         method, path, type(exc).__name__)
            except httpx.HTTPError as exc:
                # refused, unreachable: a GET changed nothing, a change was not received
                raise Failed(f"{method} {path}: {type(exc).__name__}: {exc or 'failed'}",
                             recheck=method != "GET") from None


def json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def http_error(method: str, path: str, response: httpx.Response) -> str:
    body = json_or_empty(response)
    text = f"{method} {path}: HTTP {response.status_code}"
    reason = body.get("error")
    message = body.get("message") or response.text[:200].strip()
    if reason:
        text += f" {reason}"
    if message:
        text += f": {message}"
    details = body.get("details")
    if isinstance(details, list) and details:
        text += " (" + "; ".join(str(e) for e in details[:10]) + ")"
    return text
