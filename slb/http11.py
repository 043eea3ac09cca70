"""HTTP/1.1 rules of the proxy, named, each citing RFC 9110/9112.

llhttp (inside httptools) already rejects most malformed messages in strict mode: both
Content-Length and Transfer-Encoding, duplicate or non-digit Content-Length, a final coding other
than chunked, obs-fold, bare CR, bare LF, CTLs in names and values, whitespace before the colon,
junk in chunk sizes. The functions here add what llhttp lets through, and the header tables the
proxy uses to forward a message:

- ``check_transfer_encoding``: RFC 9112 §6.1 — only ``chunked`` is understood; an empty list
  element (``,chunked``) is a smuggling vector (400), another coding is 501.
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
