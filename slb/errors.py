"""Errors of the data plane, each carrying the HTTP status the proxy answers with.

    ProxyError (status)
    ├── ClientError            400 and friends: the request broke a rule; close the connection
    │   ├── UriTooLong         414
    │   ├── HeadersTooLarge    431
    │   ├── BodyTooLarge       413
    │   ├── RequestTimeout     408
    │   └── NotImplementedTE   501: a transfer coding other than chunked
    │   └── VersionNotSupported 505: not HTTP/1.0 or 1.1
    ├── NoRoute                404: no virtual server or route takes the request
    ├── Misdirected            421: the Host is served with another certificate than this
    │                               connection's (RFC 9110 §15.5.20)
    ├── RedirectToHttps        308: the virtual server sends every request to https
    ├── NoHealthyMember        503: the group has no member to send it to
    ├── UpstreamConnectError   502: every try failed to connect
    ├── UpstreamProtocolError  502: the member answered something that is not HTTP/1.1
    └── UpstreamTimeout        504: no response within the read timeout

The protocol renders a ProxyError from a canned response; anything else is a bug: it is logged,
answered with 500 and the connection closed. ``flag`` is the access log's response flag, with
Envoy's vocabulary (UH no healthy upstream, UF connect failure, UT timeout, ...).

The JSON error shape, one for the node control API and the admin's REST API (``error_body``):

    {"error": "conflict", "message": "one sentence", "details": ["groups[0].name: ...", ...]}

``error`` is a stable snake_case code (``ERROR_CODES`` by status, or a more precise one such as
``stale`` or ``base_mismatch``), ``message`` says what happened, ``details`` lists every
problem with its field path (empty when there is nothing more to say). A few answers add
machine-readable fields beside them (``applied_version`` on a 409 of the control API).
"""

from __future__ import annotations

from typing import Any

ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid",
               500: "internal_error", 503: "unavailable"}


def error_code(status: int) -> str:
    return ERROR_CODES.get(status, "error")


def error_body(code: str, message: str, details: list[str] | None = None,
               **extra: Any) -> dict[str, Any]:
    """The one JSON error shape (see the module docstring)."""
    return {"error": code, "message": message, "details": list(details or []), **extra}


class ProxyError(Exception):
    status = 500
    flag = "-"
    close = False  # close the client connection after the answer
    fields = b""  # extra header fields of the answer ("Retry-After: 1\r\n"), rendered

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


class ClientError(ProxyError):
    status = 400
    flag = "DPE"  # downstream protocol error
    close = True


class UriTooLong(ClientError):
    status = 414


class HeadersTooLarge(ClientError):
    status = 431


class BodyTooLarge(ClientError):
    status = 413


class RequestTimeout(ClientError):
    status = 408
    flag = "DT"


class Unsupported(ClientError):
    status = 501


class VersionNotSupported(ClientError):
    status = 505


class NoRoute(ProxyError):
    status = 404
    flag = "NR"


class Misdirected(ProxyError):
    status = 421
    flag = "MR"


class RedirectToHttps(ProxyError):
    """Not an error: the proxy's own answer, 308 to the same target over https."""

    status = 308

    def __init__(self, location: bytes) -> None:
        super().__init__("redirect to https")
        self.fields = b"Location: " + location + b"\r\n"


class NoHealthyMember(ProxyError):
    status = 503
    flag = "UH"


class RouteAnswer(ProxyError):
    """A route's own answer (issue 13): a redirect, a refusal by allow/deny or a rate limit.

    Not a failure of anyone; the status and fields come from the route's rules.
    """

    def __init__(self, status: int, flag: str, fields: bytes = b"") -> None:
        super().__init__(flag)
        self.status = status
        self.flag = flag
        self.fields = fields


class UpstreamConnectError(ProxyError):
    status = 502
    flag = "UF"


class UpstreamProtocolError(ProxyError):
    status = 502
    flag = "UPE"


class UpstreamTimeout(ProxyError):
    status = 504
    flag = "UT"


class ConfigError(Exception):
    """A configuration could not be loaded; ``lines`` lists every problem with its location."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines
