"""HTTP rules as tables: raw request bytes → the proxy's answer, without a socket.

``None`` means the request passed every rule and was forwarded (a connect to the member was
asked). Each row names the rule it exercises (slb/proxy/rules.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slb.errors import ClientError
from slb.proxy import rules
from tests.support.fake_proxy import FakeClient, one_group_config

H = b"Host: example.com\r\n"

REQUESTS: list[tuple[str, bytes, int | None]] = [
    ("plain GET", b"GET / HTTP/1.1\r\n" + H + b"\r\n", None),
    ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", None),
    ("reject_unknown_version: 2.0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("reject_unknown_version: 0.9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("llhttp: version 1.2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    ("reject_connect", b"CONNECT example.com:443 HTTP/1.1\r\n" + H + b"\r\n", 501),
    ("reject_second_host", b"GET / HTTP/1.1\r\n" + H + H + b"\r\n", 400),
    ("reject_missing_host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("check_transfer_encoding: empty element",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400),
    ("check_transfer_encoding: gzip before chunked",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("llhttp: chunked twice across fields",
     b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 404),
    ("no request target form", b"GET example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("reject_large_body", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 2000\r\n\r\n", 413),
    ("check_target: fragment", b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("split_absolute_form: userinfo",
     b"GET http://u:p@example.com/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("split_absolute_form: other scheme", b"GET ftp://example.com/ HTTP/1.1\r\n" + H + b"\r\n",
     400),
    ("split_absolute_form: valid", b"GET http://example.com/a?b HTTP/1.1\r\n" + H + b"\r\n",
     None),
    ("check_host: slash", b"GET / HTTP/1.1\r\nHost: example.com/evil\r\n\r\n", 400),
    ("check_host: space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("check_host: userinfo", b"GET / HTTP/1.1\r\nHost: u@example.com\r\n\r\n", 400),
    ("check_host: port not digits", b"GET / HTTP/1.1\r\nHost: example.com:80x\r\n\r\n", 400),
    ("check_host: byte above 0x7F", b"GET / HTTP/1.1\r\nHost: ex\xe4mple.com\r\n\r\n", 400),
    ("check_host: IPv6 literal", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", None),
    ("check_connection_options: Content-Length",
     b"POST / HTTP/1.1\r\n" + H + b"Connection: content-length\r\nContent-Length: 1\r\n\r\nx",
     400),
    ("check_connection_options: keep-alive, content-length",
     b"POST / HTTP/1.1\r\n" + H + b"Connection: keep-alive, Content-Length\r\n"
     b"Content-Length: 1\r\n\r\nx", 400),
    ("check_connection_options: Transfer-Encoding",
     b"POST / HTTP/1.1\r\n" + H + b"Connection: transfer-encoding\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400),
    ("check_connection_options: Host", b"GET / HTTP/1.1\r\n" + H + b"Connection: host\r\n\r\n",
     400),
    ("limit: max_uri_bytes", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("limit: max_headers", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n" * 20 + b"\r\n", 431),
    ("llhttp: both Content-Length and Transfer-Encoding",
     b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     400),
    ("llhttp: obs-fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n 2\r\n\r\n", 400),
]


@pytest.fixture
def client() -> Iterator[FakeClient]:
    fake = FakeClient(one_group_config(max_uri_bytes=256, max_headers=16, max_body_bytes=1000))
    yield fake
    fake.close()


@pytest.mark.parametrize(("rule", "raw", "status"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_gets_the_rules_answer(client: FakeClient, rule: str, raw: bytes,
                                       status: int | None) -> None:
    client.send(raw)
    if status is None:
        assert client.statuses() == [], rule
        assert len(client.forwarded()) == 1, rule
    else:
        assert client.statuses() == [status], rule
        if status == 404:  # (no route: not a broken request, the connection stays)
            return
        assert b"Connection: close" in client.written
        assert client.transport.eof_written or client.transport.closed
        assert client.forwarded() == []


HOSTS = [
    (b"example.com", True), (b"example.com:8080", True), (b"example.com:", True),
    (b"1.2.3.4", True), (b"[::1]", True), (b"[2001:db8::1]:443", True),
    (b"xn--bcher-kva.example", True), (b"ex%41mple.com", True),
    (b"example.com/evil", False), (b"a b", False), (b"u@host", False), (b"host:80x", False),
    (b"h\xc3\xa9st", False), (b"[::1", False), (b"[::1]x", False), (b"a:b:c", False),
    (b"ex%4", False), (b"ex%zz", False), (b"host\\x", False),
]


@pytest.mark.parametrize(("host", "valid"), HOSTS, ids=[h.decode("latin-1") for h, _ in HOSTS])
def test_check_host_accepts_uri_host_and_port_only(host: bytes, valid: bool) -> None:
    if valid:
        rules.check_host(host)
    else:
        with pytest.raises(ClientError):
            rules.check_host(host)


@pytest.mark.parametrize(("url", "authority", "target"), [
    (b"http://example.com/a?b=1", b"example.com", b"/a?b=1"),
    (b"http://example.com", b"example.com", b"/"),
    (b"http://example.com?q", b"example.com", b"/?q"),
    (b"HTTPS://example.com:8443/x", b"example.com:8443", b"/x"),
])
def test_absolute_form_gives_authority_and_origin_form(url: bytes, authority: bytes,
                                                       target: bytes) -> None:
    assert rules.split_absolute_form(url) == (authority, target)


@pytest.mark.parametrize(("value", "expected"), [
    (b"chunked", (b"", True)),
    (b"gzip, chunked", (b"gzip", True)),
    (b"gzip", (b"gzip", False)),
    (b"deflate,gzip , Chunked", (b"deflate, gzip", True)),
])
def test_response_codings_keep_all_but_a_final_chunked(value: bytes,
                                                       expected: tuple[bytes, bool]) -> None:
    assert rules.response_codings(value) == expected
