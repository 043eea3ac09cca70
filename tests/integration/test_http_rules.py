"""HTTP/1.1 message rules and client-side limits, checked with exact bytes on real sockets.

Every rejected request must be answered with the status the RFCs (9110, 9112) ask for, the
connection must be closed (a request stream that broke a framing rule cannot be trusted any
further), and nothing may reach the member.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.support.backends import Backend
from tests.support.client import Connection, build_request, status_of
from tests.support.proxy import RunningProxy, simple_config

LIMITS: dict[str, Any] = {
    "max_uri_bytes": 256,
    "max_header_bytes": 2048,
    "max_headers": 20,
    "max_body_bytes": 1000,
    "header_timeout": 0.5,
}

Factory = Callable[..., Awaitable[Any]]


async def start(backend_factory: Factory, proxy_factory: Factory,
                **http: Any) -> tuple[Backend, RunningProxy]:
    backend: Backend = await backend_factory(name="a")
    config = simple_config([backend.address])
    config["http"] = {**LIMITS, **http}
    proxy: RunningProxy = await proxy_factory(config)
    return backend, proxy


async def read_until_close(conn: Connection, timeout: float = 2.0) -> tuple[bytes, bool]:
    """Everything the proxy sends until it closes: (bytes, closed within ``timeout``)."""
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await conn.reader.read(65536)
                if not chunk:
                    return b"".join(chunks), True
                chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    except ConnectionError:
        return b"".join(chunks), True


async def send_and_read(port: int, data: bytes, timeout: float = 2.0) -> tuple[bytes, bool]:
    conn = await Connection.open(port)
    try:
        conn.send(data)
        return await read_until_close(conn, timeout)
    finally:
        await conn.close()


async def send_until_answered(conn: Connection, pieces: list[bytes],
                              pause: float = 0.02) -> tuple[bytes, bool]:
    """Send ``pieces`` one at a time, ``pause`` apart, stopping as soon as the proxy answers.

    Writing on after the proxy has closed would make the peer reset the connection, and the
    stream reader drops an answer already received when it sees the reset.
    """
    received = b""
    closed = False
    for piece in pieces:
        try:
            conn.send(piece)
            await conn.writer.drain()
        except ConnectionError:
            break
        received, closed = await read_until_close(conn, timeout=pause)
        if received or closed:
            break
    if not closed:
        rest, closed = await read_until_close(conn, timeout=1.0)
        received += rest
    return received, closed


def responses_in(raw: bytes) -> int:
    return raw.count(b"HTTP/1.1 ")


HEAD = b"Host: example.com\r\n"

# (raw request, expected status): each breaks one rule of RFC 9112 framing or field syntax.
SMUGGLING: list[Any] = [
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                 id="content-length-and-transfer-encoding"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400,
                 id="transfer-encoding-and-content-length"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
                 id="conflicting-duplicate-content-length"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: 3,4\r\n\r\nabcd", 400,
                 id="content-length-list"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: abc\r\n\r\nabc", 400,
                 id="content-length-not-digits"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: +3\r\n\r\nabc", 400,
                 id="content-length-plus-sign"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: -1\r\n\r\nabc", 400,
                 id="content-length-negative"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: 0x3\r\n\r\nabc", 400,
                 id="content-length-hex"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: gzip\r\n\r\nabc", 400,
                 id="transfer-encoding-gzip-only"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: identity\r\n\r\nabc",
                 400, id="transfer-encoding-identity"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400,
                 id="transfer-encoding-chunked-not-last"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n", 400,
                 id="transfer-encoding-fields-chunked-not-last"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400,
                 id="transfer-encoding-chunked-twice"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: ,chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400,
                 id="transfer-encoding-empty-element"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501,
                 id="transfer-encoding-unsupported-coding"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n", 501,
                 id="transfer-encoding-fields-unsupported-coding"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Folded: a\r\n b\r\n\r\n", 400,
                 id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Folded: a\r\n\tb\r\n\r\n", 400,
                 id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Cr: a\rb\r\n\r\n", 400,
                 id="bare-cr-in-value"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Cr: a\r\rX-B: b\r\n\r\n", 400,
                 id="bare-cr-ending-a-line"),
    pytest.param(b"GET / HTTP/1.1\nHost: example.com\n\n", 400,
                 id="bare-lf-line-endings"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Lf: a\nX-B: b\r\n\r\n", 400,
                 id="bare-lf-after-header"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X Space: a\r\n\r\n", 400,
                 id="space-in-header-name"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X(Paren): a\r\n\r\n", 400,
                 id="separator-in-header-name"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-\x01: a\r\n\r\n", 400,
                 id="control-in-header-name"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : example.com\r\n\r\n", 400,
                 id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-A\t: a\r\n\r\n", 400,
                 id="tab-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b": a\r\n\r\n", 400,
                 id="empty-header-name"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Ctl: a\x01b\r\n\r\n", 400,
                 id="control-in-header-value"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Nul: a\x00b\r\n\r\n", 400,
                 id="nul-in-header-value"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"X-Del: a\x7fb\r\n\r\n", 400,
                 id="del-in-header-value"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400,
                 id="chunk-size-hex-prefix"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", 400,
                 id="chunk-size-leading-space"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HEAD +
                 b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400,
                 id="chunk-data-longer-than-size"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"Host: example.com\r\n\r\n", 400,
                 id="two-host-fields-same-value"),
    pytest.param(b"GET / HTTP/1.1\r\n" + HEAD + b"Host: other.example\r\n\r\n", 400,
                 id="two-host-fields"),
    pytest.param(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501,
                 id="connect-method"),
]


@pytest.mark.parametrize(("raw", "status"), SMUGGLING)
async def test_request_breaking_a_framing_rule_is_rejected_and_connection_closed(
        backend_factory: Factory, proxy_factory: Factory, raw: bytes, status: int) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    # A valid request is pipelined behind: it must not be served, the stream is not trusted.
    data, closed = await send_and_read(proxy.port, raw + build_request("GET", "/after"))
    assert status_of(data) == status, data
    assert responses_in(data) == 1, data
    assert closed
    assert b"Connection: close" in data
    await asyncio.sleep(0.05)  # let a forwarded request (there must be none) arrive
    assert backend.requests == []


async def test_valid_requests_of_the_table_shape_are_accepted(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    """Control case: the well-formed versions of the table's requests are forwarded."""
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    conn.send(b"POST /cl HTTP/1.1\r\n" + HEAD + b"Content-Length: 3\r\n\r\nabc")
    assert (await conn.read_response()).status == 200
    conn.send(b"POST /te HTTP/1.1\r\n" + HEAD +
              b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert (await conn.read_response()).status == 200
    conn.send(b"GET /h HTTP/1.1\r\n" + HEAD + b"X-Ok: a\tb\r\n\r\n")
    assert (await conn.read_response()).status == 200
    await conn.close()
    assert [(r.method, r.path, r.body) for r in backend.requests] == [
        ("POST", "/cl", b"abc"), ("POST", "/te", b"abc"), ("GET", "/h", b"")]


# -- limits -----------------------------------------------------------------------------------


async def test_request_target_over_max_uri_bytes_gets_414(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    data, closed = await send_and_read(proxy.port, build_request("GET", "/" + "a" * 300))
    assert status_of(data) == 414, data
    assert closed
    assert backend.requests == []


async def test_request_target_within_max_uri_bytes_is_served(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    response = await conn.request("GET", "/" + "a" * 200)
    await conn.close()
    assert response.status == 200
    assert len(backend.requests) == 1


async def test_one_huge_header_value_gets_431(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    raw = build_request("GET", "/", headers={"X-Big": "v" * 3000})
    data, closed = await send_and_read(proxy.port, raw)
    assert status_of(data) == 431, data
    assert closed
    assert backend.requests == []


async def test_header_block_over_limit_in_several_writes_gets_431(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    # 12 fields of 200 bytes: under max_headers, over max_header_bytes; the head never ends
    pieces = [b"GET / HTTP/1.1\r\n" + HEAD]
    pieces += [b"X-Pad-%02d: %s\r\n" % (i, b"p" * 190) for i in range(12)]
    data, closed = await send_until_answered(conn, pieces)
    await conn.close()
    assert status_of(data) == 431, data
    assert closed
    assert backend.requests == []


async def test_unterminated_header_line_growing_over_limit_gets_431(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    """A field that never ends is never handed to on_header: the byte count must catch it."""
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    pieces = [b"GET / HTTP/1.1\r\n" + HEAD + b"X-Endless: "] + [b"e" * 500] * 10
    data, closed = await send_until_answered(conn, pieces)
    await conn.close()
    assert status_of(data) == 431, data
    assert closed
    assert backend.requests == []


async def test_too_many_header_fields_get_431(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    raw = build_request("GET", "/", headers=[(f"X-F{i}", "v") for i in range(25)])
    data, closed = await send_and_read(proxy.port, raw)
    assert status_of(data) == 431, data
    assert closed
    assert backend.requests == []


async def test_header_fields_up_to_max_headers_are_served(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    # Host plus 19 fields: exactly max_headers
    response = await conn.request("GET", "/", headers=[(f"X-F{i}", "v") for i in range(19)])
    await conn.close()
    assert response.status == 200
    assert backend.requests[0].header("X-F18") == "v"


async def test_content_length_over_max_body_gets_413_before_the_body_is_sent(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    # Only the head is sent: the answer must not wait for the 5000 body bytes.
    head = b"POST / HTTP/1.1\r\n" + HEAD + b"Content-Length: 5000\r\n\r\n"
    data, closed = await send_and_read(proxy.port, head, timeout=1.0)
    assert status_of(data) == 413, data
    assert closed
    assert backend.requests == []


async def test_chunked_body_growing_over_max_body_gets_413_and_close(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    # 1600 body bytes in all, the limit is 1000; no last chunk
    pieces = [b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n"]
    pieces += [b"190\r\n" + b"c" * 400 + b"\r\n"] * 4
    data, closed = await send_until_answered(conn, pieces)
    await conn.close()
    assert status_of(data) == 413, data
    assert closed
    assert backend.requests == []


async def test_chunked_body_within_max_body_is_served(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    conn.send(b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n" +
              (b"190\r\n" + b"c" * 400 + b"\r\n") * 2 + b"0\r\n\r\n")
    response = await conn.read_response()
    await conn.close()
    assert response.status == 200
    assert backend.requests[0].body == b"c" * 800


async def test_head_trickled_past_header_timeout_gets_408_and_close(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    started = time.monotonic()
    # one more line every 0.2 s: activity must not extend the deadline
    pieces = [b"GET / HTTP/1.1\r\n" + HEAD] + [b"X-Slow-%d: v\r\n" % i for i in range(10)]
    received, closed = await send_until_answered(conn, pieces, pause=0.2)
    elapsed = time.monotonic() - started
    await conn.close()
    assert status_of(received) == 408, received
    assert closed
    assert 0.4 <= elapsed < 0.5 + 0.5, elapsed
    assert backend.requests == []


async def test_idle_keepalive_connection_is_closed_silently_after_keepalive_timeout(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    # header_timeout larger than keepalive_timeout: the close must come from the latter
    _, proxy = await start(backend_factory, proxy_factory,
                           header_timeout=5.0, keepalive_timeout=0.5)
    conn = await Connection.open(proxy.port)
    response = await conn.request("GET", "/")
    assert response.status == 200
    assert response.keep_alive
    idle_since = time.monotonic()
    data, closed = await read_until_close(conn, timeout=2.0)
    elapsed = time.monotonic() - idle_since
    await conn.close()
    assert closed
    assert data == b""  # no 408 on a connection that was between requests
    assert 0.4 <= elapsed < 1.0, elapsed


async def test_connection_that_never_sends_a_byte_is_closed_silently(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory, keepalive_timeout=0.5)
    conn = await Connection.open(proxy.port)
    data, closed = await read_until_close(conn, timeout=2.0)
    await conn.close()
    assert closed
    assert data == b""
    assert backend.connections == 0


# -- keep-alive after the proxy's own answers ---------------------------------------------------


async def test_connection_is_kept_after_a_404_and_serves_the_next_request(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend: Backend = await backend_factory(name="a")
    config = simple_config([backend.address])
    config["virtual_servers"][0]["routes"] = [{"path": "/app", "group": "g"}]
    config["http"] = dict(LIMITS)
    proxy: RunningProxy = await proxy_factory(config)
    conn = await Connection.open(proxy.port)
    missing = await conn.request("GET", "/elsewhere")
    assert missing.status == 404
    assert missing.keep_alive
    found = await conn.request("GET", "/app/x")
    await conn.close()
    assert found.status == 200
    assert found.body == b"a GET /app/x\n"
    assert [r.path for r in backend.requests] == ["/app/x"]


async def test_connection_is_closed_after_a_400_following_a_valid_request(
        backend_factory: Factory, proxy_factory: Factory) -> None:
    backend, proxy = await start(backend_factory, proxy_factory)
    conn = await Connection.open(proxy.port)
    first = await conn.request("GET", "/first")
    assert first.status == 200
    conn.send(b"GET /bad HTTP/1.1\r\n" + HEAD + b"X-Bad : v\r\n\r\n")
    data, closed = await read_until_close(conn)
    await conn.close()
    assert status_of(data) == 400, data
    assert closed
    assert [r.path for r in backend.requests] == ["/first"]
