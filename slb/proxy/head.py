"""Message heads: the request head sent upstream, and the proxy's own answers.

``prepare_request_head`` turns a recorded request into the bytes sent to a member: the request
line in origin-form, the forwarded fields, then the proxy's own (X-Forwarded-For appended to,
X-Forwarded-Proto and -Host set, Host for HTTP/1.0 clients that sent none, a request id when the
client sent none, chunked framing, the Upgrade pair). It applies the target, Host and
Connection rules of ``rules.py`` on the way, since they decide what is forwarded. The field
tables are ``fields.py``'s.

``CANNED`` holds every answer the proxy gives itself, rendered once at import.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from slb.proxy import rules
from slb.proxy.fields import CHUNKED, COLON, CONNECTION_KEYWORDS, CRLF
from slb.proxy.memo import remember

if TYPE_CHECKING:
    from slb.proxy.exchange import Exchange

_HTTP11 = b" HTTP/1.1\r\n"
PROTO_HTTP = b"X-Forwarded-Proto: http\r\n"
PROTO_HTTPS = b"X-Forwarded-Proto: https\r\n"  # on TLS listeners


# Host values that passed ``rules.check_host`` (a pure function of the value): slb.proxy.memo
_GOOD_HOSTS: dict[bytes, bool] = {}


def prepare_request_head(ex: Exchange, peer: bytes, default_host: bytes, request_id_field: bytes,
                         next_request_id: Callable[[], bytes],
                         proto_field: bytes = PROTO_HTTP) -> None:
    """Set ``ex.path`` and ``ex.head``, the head sent upstream (see the module docstring)."""
    url = ex.url
    if b"#" in url:  # (the test inline, the call only to raise: ~0.03 us a request)
        rules.check_target(url)
    if url[:1] == b"/":
        path = url.partition(b"?")[0]
    elif url == b"*":
        path = url  # asterisk-form (RFC 9112 §3.2.4)
    else:  # absolute-form (RFC 9112 §3.2.2); anything else is no request target
        authority, url = rules.split_absolute_form(url)
        path = url.partition(b"?")[0]
        # The target's authority replaces Host (RFC 9112 §3.2.2).
        parts = ex.parts
        ex.parts = [b""] + [p for i in range(1, len(parts), 4)
                            if parts[i].lower() != b"host" for p in parts[i:i + 4]]
        ex.parts += (b"Host", COLON, authority, CRLF)
        ex.host = authority
    host = ex.host
    if host is not None and host not in _GOOD_HOSTS:
        rules.check_host(host)
        remember(_GOOD_HOSTS, host, True)  # (checked once per Host value: ~0.55 us a request)
    ex.path = path.decode("latin-1")
    if ex.connection is not None:
        drop_connection_options(ex, request_id_field)
    parts = ex.parts
    parts[0] = ex.method + b" " + url + _HTTP11
    xff = peer if ex.xff is None else ex.xff + b", " + peer
    parts += (b"X-Forwarded-For: ", xff, CRLF, proto_field)
    host = ex.host
    if host is None:
        host = ex.host = default_host
        parts += (b"Host: ", host, CRLF)
    parts += (b"X-Forwarded-Host: ", host, CRLF)
    if ex.request_id is None:
        ex.request_id = next_request_id()
        parts += (request_id_field, ex.request_id, CRLF)
    if ex.chunked:
        parts.append(CHUNKED)
    if ex.upgrade and ex.upgrade_value is not None:
        parts += (b"Connection: upgrade\r\nUpgrade: ", ex.upgrade_value, CRLF)
    else:
        ex.upgrade = False
    parts.append(CRLF)
    ex.head = b"".join(parts)


def drop_connection_options(ex: Exchange, request_id_field: bytes) -> None:
    """RFC 9110 §7.6.1: the fields a Connection field names are hop-by-hop too.

    Never a framing or routing field (``rules.check_connection_options``: 400); a field the
    proxy sets itself loses the client's copy only, and the proxy's own is still sent.
    """
    options = rules.connection_tokens(ex.connection or b"") - CONNECTION_KEYWORDS
    if not options:
        return
    rules.check_connection_options(options)
    parts = ex.parts
    kept = [parts[0]]
    for i in range(1, len(parts), 4):  # forwarded fields: (name, ": ", value, CRLF)
        if parts[i].lower() not in options:
            kept += parts[i:i + 4]
    ex.parts = kept
    if b"x-forwarded-for" in options:
        ex.xff = None
    if request_id_field[:-2].lower() in options:  # (the field is "Name: ")
        ex.request_id = None


# Status lines by (status, reason) as members send them: a member sends the same few (memo.py)
_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    key = (status, reason)
    line = _STATUS_LINES.get(key)
    if line is None:  # (formatted once per pair: 0.13 -> 0.05 us a response)
        line = b"HTTP/1.1 %d %s\r\n" % key
        remember(_STATUS_LINES, key, line)
    return line


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
    for status in (400, 403, 404, 408, 413, 414, 421, 429, 431, 500, 501, 502, 503, 504, 505)
    for close in (False, True)
}
# The same to a HEAD request: the head only (RFC 9110 §9.3.2), Content-Length kept.
CANNED_HEAD: dict[tuple[int, bool], bytes] = {
    key: answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" for key, answer in CANNED.items()
}


def canned(ex: Exchange, status: int, close: bool, extra: bytes = b"") -> bytes:
    """The proxy's own answer ``status`` for ``ex``; ``extra`` fields make it a rendered one
    (a route's redirect or refusal: rare, so not kept)."""
    if extra:
        answer = _canned(status, close)
        split = answer.index(b"\r\n") + 2
        answer = answer[:split] + extra + answer[split:]
        return answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" if ex.method == b"HEAD" \
            else answer
    return (CANNED_HEAD if ex.method == b"HEAD" else CANNED)[status, close]


def https_location(ex: Exchange, port: int) -> bytes:
    """``https://host[:port]/same/target?query`` for redirect_to_https (port 443 omitted).

    The Host was checked by the rules (no spaces or control bytes): it is safe in a field.
    """
    host = ex.host or b""
    # (an IPv6 literal keeps its brackets; a port is dropped)
    host = host[:host.find(b"]") + 1] if host.startswith(b"[") else host.partition(b":")[0]
    url = ex.url
    if url[:1] != b"/":  # absolute-form: its path and query; asterisk-form: the root
        url = rules.split_absolute_form(url)[1] if url != b"*" else b"/"
    authority = host if port == 443 else b"%s:%d" % (host, port)
    return b"https://" + authority + url
