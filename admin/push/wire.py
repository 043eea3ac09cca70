"""What travels between a pusher and a node's control API: JSON bodies and error texts.

A node answers errors as ``{"error", "message", "details": [...]}``; ``http_error`` turns one
into the line shown as a node's ``last_error``, whatever the node sent (JSON or not).
"""

from __future__ import annotations

import json
from typing import Any

import httpx


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
