"""HTTP/1.1 rules of the proxy, named, each citing RFC 9110/9112.

llhttp (inside httptools) already rejects most malformed messages in strict mode: both
Content-Length and Transfer-Encoding, duplicate or non-digit Content-Length, a final coding other
than chunked, obs-fold, bare CR, bare LF, CTLs in names and values, whitespace before the colon,
junk in chunk sizes. The functions here add what llhttp lets through, and the header tables the
proxy uses to forward a message:

- ``check_transfer_encoding``: RFC 9112 §6.1 — only ``chunked`` is understood; an empty list
  element (``,chunked``) is a smuggling vector (400), another coding is 501.
- ``check_connection_options``: RFC 9110 §7.6.1 — ``Connection`` may not name a framing or routing
  field (Content-Length, Transfer-Encoding, Host): dropping it would change where one request ends.
- ``check_host``: RFC 9110 §7.2, RFC 3986 §3.2.2 — Host is ``uri-host [":" port]``.
- ``check_target``: RFC 9112 §3.2 — no fragment; an absolute-form authority has no userinfo
  (RFC 9110 §4.2.4) and a valid host.
- ``response_codings``: RFC 9112 §6.1, §6.3 (7) — the codings of a member's Transfer-Encoding
  other than the final ``chunked``, which the proxy keeps when it re-chunks the body.
- ``HOP_BY_HOP``: RFC 9110 §7.6.1 — fields that concern one connection, never forwarded.
- ``NO_BODY_STATUS``: RFC 9112 §6.3 (1) — 1xx, 204 and 304 responses carry no body.
- ``IDEMPOTENT``: RFC 9110 §9.2.2 — methods that may be retried after a connection died.
"""

from __future__ import annotations

from http import HTTPStatus

from slb.errors import ClientError, Unsupported

# Field kinds, looked up once per field by lowercased name.
OTHER = 0
HOST = 1
CONTENT_LENGTH = 2
TRANSFER_ENCODING = 3
CONNECTION = 4
HOP = 5  # hop-by-hop: dropped
UPGRADE = 6
EXPECT = 7
X_FORWARDED_FOR = 8
X_FORWARDED_SET = 9  # X-Forwarded-Proto/-Host: the proxy sets them, the client's are dropped
REQUEST_ID = 10

# RFC 9110 §7.6.1: Connection and the fields it names, Keep-Alive, Proxy-Connection, TE,
# Trailer, Transfer-Encoding (the proxy re-frames), Upgrade (except for tunnels); and the
# proxy authentication pair, which is meant for this hop only (RFC 9110 §11.7.1, §11.7.2).
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"proxy-authenticate", b"proxy-authorization",
})

# Fields of either direction the proxy handles itself or drops (RFC 9110 §7.6.1).
_MESSAGE_FIELDS: dict[bytes, int] = {
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"upgrade": UPGRADE,
    **dict.fromkeys(HOP_BY_HOP - {b"content-length", b"transfer-encoding", b"connection",
                                  b"upgrade"}, HOP),
}

REQUEST_FIELDS: dict[bytes, int] = {
    **_MESSAGE_FIELDS,
    b"host": HOST,
    b"expect": EXPECT,
    b"x-forwarded-for": X_FORWARDED_FOR,
    b"x-forwarded-proto": X_FORWARDED_SET,
    b"x-forwarded-host": X_FORWARDED_SET,
}

RESPONSE_FIELDS: dict[bytes, int] = dict(_MESSAGE_FIELDS)

NO_BODY_STATUS = frozenset({*range(100, 200), 204, 304})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


def check_transfer_encoding(value: bytes) -> None:
    """RFC 9112 §6.1, §6.3 (4): the proxy understands ``chunked`` only.

    ``value`` is every Transfer-Encoding field of the request joined (RFC 9110 §5.3). An empty
    list element (``,chunked``, which llhttp accepts) or a final coding other than chunked is how
    front and back ends are made to disagree about framing: 400. Another coding before chunked
    is valid HTTP the proxy does not implement: 501.
    """
    codings = [c.strip().lower() for c in value.split(b",")]
    if any(not c for c in codings):
        raise ClientError("empty element in Transfer-Encoding")
    if codings[-1] != b"chunked":
        raise ClientError("the final transfer coding is not chunked")
    if len(codings) > 1:
        raise Unsupported("only the chunked transfer coding is supported")


def connection_tokens(value: bytes) -> set[bytes]:
    """The options of a Connection field (RFC 9110 §7.6.1), lowercased."""
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


# Fields whose removal would change where a request ends or where it goes.
_FRAMING_OR_ROUTING = frozenset({b"content-length", b"transfer-encoding", b"host"})


def check_connection_options(options: set[bytes]) -> None:
    """RFC 9110 §7.6.1: the fields a Connection field names are removed before forwarding.

    Naming Content-Length or Transfer-Encoding would make the member read the body as the next
    request (a smuggling vector); naming Host would send a request the member cannot route.
    HAProxy refuses the same. 400, close.
    """
    named = options & _FRAMING_OR_ROUTING
    if named:
        raise ClientError(f"Connection names {b', '.join(sorted(named)).decode()}")


# RFC 3986 §3.2.2 reg-name: unreserved / pct-encoded / sub-delims; ':' separates the port.
_REG_NAME = (b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
             b"!$&'()*+,;=%")
_DIGITS = b"0123456789"
_HEX = frozenset(b"0123456789abcdefABCDEF")


def check_host(host: bytes) -> None:
    """RFC 9110 §7.2 and RFC 3986 §3.2.2: ``uri-host [":" port]``, port all digits.

    A Host the proxy forwards, routes on and copies into X-Forwarded-Host must be one a URI
    could hold: no ``/``, ``@``, spaces or bytes above 0x7F, which members and logs would
    otherwise read as a path, userinfo or two names. 400, close.
    """
    if host[:1] == b"[":  # IP-literal (IPv6 or IPvFuture)
        literal, bracket, port = host[1:].partition(b"]")
        if not bracket or not literal or literal.translate(None, b"0123456789abcdefABCDEF:.v"
                                                           b"-._~!$&'()*+,;="):
            raise ClientError("invalid Host")
        if port and (port[:1] != b":" or port[1:].translate(None, _DIGITS)):
            raise ClientError("invalid Host port")
        return
    name, _, port = host.partition(b":")
    if port.translate(None, _DIGITS) or name.translate(None, _REG_NAME):
        raise ClientError("invalid Host")
    if b"%" in name:
        _check_percent_encoding(name)


def _check_percent_encoding(name: bytes) -> None:
    pieces = name.split(b"%")
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise ClientError("invalid percent-encoding in Host")


def check_target(url: bytes) -> None:
    """RFC 9112 §3.2: a request target has no fragment (it is never sent on the wire). 400."""
    if b"#" in url:
        raise ClientError("fragment in the request target")


def split_absolute_form(url: bytes) -> tuple[bytes, bytes]:
    """RFC 9112 §3.2.2: ``http://authority/path?query`` → (authority, origin-form target).

    The authority replaces Host; it may not carry userinfo (RFC 9110 §4.2.4: deprecated, and
    a way to smuggle a second host name past routing). 400.
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ClientError("invalid request target")
    end = len(rest)
    for delimiter in (b"/", b"?"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, target = rest[:end], rest[end:]
    if b"@" in authority:
        raise ClientError("userinfo in the request target")
    if not authority:
        raise ClientError("absolute-form target without a host")
    check_host(authority)
    if target[:1] == b"?":
        target = b"/" + target
    return authority, target or b"/"


def response_codings(value: bytes) -> tuple[bytes, bool]:
    """RFC 9112 §6.1, §6.3 (7): a member's Transfer-Encoding, as (codings kept, chunked last).

    ``gzip, chunked`` → (b"gzip", True): the body is chunked on the wire and gzip inside; the
    proxy de-chunks, re-chunks, and must keep announcing gzip. ``gzip`` alone → (b"gzip",
    False): the body ends when the member closes.
    """
    codings = [c.strip().lower() for c in value.split(b",") if c.strip()]
    chunked = bool(codings) and codings[-1] == b"chunked"
    if chunked:
        codings.pop()
    return b", ".join(codings), chunked


def status_line(status: int, reason: bytes) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


def _canned(status: int, close: bool) -> bytes:
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\n".encode()
    connection = b"close" if close else b"keep-alive"
    return (b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: %s\r\n\r\n%s"
            % (status, phrase.encode(), len(body), connection, body))


# Answers the proxy gives itself, rendered once: (status, close) -> bytes.
CANNED: dict[tuple[int, bool], bytes] = {
    (status, close): _canned(status, close)
    for status in (400, 404, 408, 413, 414, 431, 500, 501, 502, 503, 504, 505)
    for close in (False, True)
}

CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_END = b"0\r\n\r\n"
CRLF = b"\r\n"
