"""Header fields as the proxy sees them: one table lookup per field, by lowercased name.

Most fields are forwarded as received (``OTHER``); a few are the proxy's to handle: Host,
framing (Content-Length, Transfer-Encoding), ``Connection`` and the hop-by-hop set of RFC 9110
§7.6.1, Upgrade and Expect, the X-Forwarded-* family and the request id. The constants for
status semantics (``NO_BODY_STATUS``, ``IDEMPOTENT``) and the framing bytes live here too: the
client side and the member side share them.
"""

from __future__ import annotations

from collections.abc import Iterable

from slb.proxy import rules
from slb.proxy.memo import remember

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
WATCHED = 11  # forwarded as OTHER; a route's condition (``when``) asks for it: ``Exchange.watched``

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
# ``RESPONSE_FIELDS`` and the spellings members use, for ``learn``
RESPONSE_SPELLINGS: dict[bytes, int] = dict(RESPONSE_FIELDS)

# RFC 9112 §6.3 (1): 1xx, 204 and 304 responses carry no body.
NO_BODY_STATUS = frozenset({*range(100, 200), 204, 304})
# RFC 9110 §9.2.2: methods that may be sent again after a connection died.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# Connection options that name no field.
CONNECTION_KEYWORDS = frozenset({b"close", b"keep-alive", b"upgrade"})

COLON = b": "
CRLF = b"\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
CHUNK_END = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def learn(table: dict[bytes, int], name: bytes) -> int:
    """The kind of field ``name`` as sent, looked up lowercased and remembered as sent.

    Tables map lowercased names; a client or member sends the same few spellings over and over,
    so caching them saves a ``lower()`` and its bytes object per field (~0.03 us a field,
    ten fields a request).
    A kind depends on the lowercased name only: any spelling kept gives the same answer.
    """
    kind = table.get(name.lower(), OTHER)
    remember(table, name, kind)  # (client-controlled names: bounded)
    return kind


def request_fields(request_id_header: str, watched: Iterable[bytes] = ()) -> dict[bytes, int]:
    """``REQUEST_FIELDS`` with the configured request id field, and the lowercased names
    routes' conditions test (``watched``) as ``WATCHED`` unless the proxy handles them."""
    fields = dict(REQUEST_FIELDS)
    fields[request_id_header.lower().encode()] = REQUEST_ID
    for name in watched:
        fields.setdefault(name, WATCHED)
    return fields


def drop_named_fields(head: list[bytes], connection: bytes) -> list[bytes]:
    """A response head's fields less those its Connection field names (RFC 9110 §7.6.1).

    ``head`` is a slot (the status line) then (name, ": ", value, CRLF) quadruples."""
    if connection.lower() in CONNECTION_KEYWORDS:  # (nginx's "keep-alive" on every response)
        return head  # (no set built: 0.88 -> 0.19 us a response)
    options = rules.connection_tokens(connection) - CONNECTION_KEYWORDS
    return without_fields(head, options) if options else head


def without_fields(head: list[bytes], names: frozenset[bytes] | set[bytes]) -> list[bytes]:
    """A new head: ``head``'s first slot, then its (name, ": ", value, CRLF) quadruples whose
    lowercased name is not in ``names``."""
    kept = [head[0]]
    for i in range(1, len(head), 4):
        if head[i].lower() not in names:
            kept += head[i:i + 4]
    return kept
