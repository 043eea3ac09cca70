"""HTTP/1.1 rules of the proxy: named pure functions, each citing RFC 9110/9112.

llhttp (inside httptools) already rejects most malformed messages in strict mode: both
Content-Length and Transfer-Encoding, duplicate or non-digit Content-Length, obs-fold, bare CR,
bare LF, CTLs in names and values, whitespace before the colon, junk in chunk sizes. The rules
here add what llhttp lets through. Each raises a ``ProxyError`` whose status is the answer; the
client protocol answers it in its turn and closes (``slb.proxy.client``).

Index (request head, applied by ``check_head`` and ``head.prepare_request_head``):

| rule                        | status | source                                        |
|-----------------------------|--------|-----------------------------------------------|
| ``reject_unknown_version``  | 505    | RFC 9112 §2.3: HTTP/1.0 and 1.1 only          |
| ``reject_connect``          | 501    | RFC 9110 §9.3.6: no tunnels through CONNECT   |
| ``reject_second_host``      | 400    | RFC 9112 §3.2: exactly one Host               |
| ``reject_missing_host``     | 400    | RFC 9112 §3.2: Host is required in 1.1        |
| ``check_transfer_encoding`` | 400/501| RFC 9112 §6.1, §6.3 (4): chunked last, only   |
| ``reject_large_body``       | 413    | RFC 9110 §15.5.14, ``max_body_bytes``         |
| ``reject_chunked_upgrade``  | 501    | RFC 9110 §7.8: not implemented                |
| ``check_target``            | 400    | RFC 9112 §3.2: no fragment                    |
| ``split_absolute_form``     | 400    | RFC 9112 §3.2.2, RFC 9110 §4.2.4: no userinfo |
|                             |        | (a target not ``/...``, ``*`` nor http(s)://) |
| ``check_host``              | 400    | RFC 9110 §7.2, RFC 3986 §3.2.2: uri-host:port |
| ``check_connection_options``| 400    | RFC 9110 §7.6.1: never framing or routing     |

Limits are checked while the head is recorded, in ``client.py``'s callbacks (one comparison per
field, no call): 414 for the target (``max_uri_bytes``), 431 for the fields (``max_headers``,
``max_header_bytes``). Response side: ``response_codings`` (RFC 9112 §6.1, §6.3 (7)).
"""

from __future__ import annotations

from typing import Protocol

from slb.errors import BodyTooLarge, ClientError, Unsupported, VersionNotSupported


class RequestHead(Protocol):
    """What the rules read of a recorded request head (``slb.proxy.exchange.Exchange``)."""

    method: bytes
    host: bytes | None
    http10: bool
    te: bytes | None
    chunked: bool
    content_length: int
    upgrade: bool


def check_head(ex: RequestHead, version: str, max_body: int) -> None:
    """The rules that need the whole head, in the order of the index."""
    if (version == "1.1" and ex.host is not None and ex.te is None and ex.method != b"CONNECT"
            and (not max_body or ex.content_length <= max_body)):
        return  # the common request passes every rule below: 6 calls saved, ~0.4 us a request
    reject_unknown_version(version)
    reject_connect(ex.method)
    reject_missing_host(ex.host, ex.http10)
    if ex.te is not None:
        check_transfer_encoding(ex.te)
    reject_large_body(ex.content_length, max_body)
    reject_chunked_upgrade(ex.upgrade, ex.chunked)


def reject_unknown_version(version: str) -> None:
    """RFC 9112 §2.3: the proxy speaks HTTP/1.0 and HTTP/1.1. 505."""
    if version != "1.1" and version != "1.0":
        raise VersionNotSupported(f"HTTP/{version} is not supported")


def reject_connect(method: bytes) -> None:
    """RFC 9110 §9.3.6: CONNECT asks for a tunnel to any host; a reverse proxy offers none. 501."""
    if method == b"CONNECT":
        raise Unsupported("CONNECT is not supported")


def reject_second_host(previous: bytes | None) -> None:
    """RFC 9112 §3.2: a request with more than one Host is answered 400 (which one routes?)."""
    if previous is not None:
        raise ClientError("more than one Host field")


def reject_missing_host(host: bytes | None, http10: bool) -> None:
    """RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400."""
    if host is None and not http10:
        raise ClientError("missing Host field")


def reject_large_body(content_length: int, max_body: int) -> None:
    """RFC 9110 §15.5.14: a declared body over ``max_body_bytes`` (0: no limit) is 413."""
    if max_body and content_length > max_body:
        raise BodyTooLarge("request body larger than the limit")


def reject_chunked_upgrade(upgrade: bool, chunked: bool) -> None:
    """RFC 9110 §7.8: a protocol switch happens after the whole request, body included.

    llhttp hands over everything after an Upgrade request's head unparsed, so the proxy frames
    that body itself; it does so for Content-Length and does not implement chunked. 501.
    """
    if upgrade and chunked:
        raise Unsupported("a chunked body on an Upgrade request is not supported")


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
    400, close.
    """
    named = options & _FRAMING_OR_ROUTING
    if named:
        raise ClientError(f"Connection names {b', '.join(sorted(named)).decode()}")


# RFC 3986 §3.2.2 reg-name: unreserved / pct-encoded / sub-delims.
_REG_NAME = (b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
             b"!$&'()*+,;=%")
# IP-literal: IPv6address (hex digits, ':' and a dotted IPv4 tail) or IPvFuture (RFC 3986 §3.2.2)
_IP_LITERAL = b"0123456789abcdefABCDEF:.vV-_~!$&'()*+,;="
_DIGITS = b"0123456789"
_HEX = frozenset(b"0123456789abcdefABCDEF")


def check_host(host: bytes) -> None:
    """RFC 9110 §7.2 and RFC 3986 §3.2.2: ``uri-host [":" port]``, the port all digits.

    A Host the proxy forwards, routes on and copies into X-Forwarded-Host must be one a URI
    could hold: no ``/``, ``@``, spaces or bytes above 0x7F, which members and logs would
    otherwise read as a path, userinfo or two names. 400, close.
    """
    if host[:1] == b"[":
        literal, bracket, port = host[1:].partition(b"]")
        if not bracket or not literal or literal.translate(None, _IP_LITERAL):
            raise ClientError("invalid Host")
        if port and (port[:1] != b":" or port[1:].translate(None, _DIGITS)):
            raise ClientError("invalid Host port")
        return
    name, _, port = host.partition(b":")
    if port.translate(None, _DIGITS) or name.translate(None, _REG_NAME):
        raise ClientError("invalid Host")
    if b"%" in name:
        for piece in name.split(b"%")[1:]:
            if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
                raise ClientError("invalid percent-encoding in Host")


def check_target(url: bytes) -> None:
    """RFC 9112 §3.2: a request target has no fragment (a client never sends one). 400."""
    if b"#" in url:
        raise ClientError("fragment in the request target")


def split_absolute_form(url: bytes) -> tuple[bytes, bytes]:
    """RFC 9112 §3.2.2: ``http://authority/path?query`` → (authority, origin-form target).

    The authority replaces Host; it may not carry userinfo (RFC 9110 §4.2.4: deprecated, and
    a way to slip a second host name past routing). 400.
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise ClientError("invalid request target")  # (nor origin-, asterisk- nor http form)
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
