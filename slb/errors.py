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
"""

from __future__ import annotations


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
