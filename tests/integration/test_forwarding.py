"""What the proxy changes, and what it must not change, on the way to the member and back.

Hop-by-hop fields (RFC 9110 §7.6.1) stop at the proxy in both directions; end-to-end fields pass
in order; the proxy adds X-Forwarded-* and a request id; bodies arrive intact whatever their
framing, and responses are re-framed for the client (chunked for HTTP/1.1, close-delimited for
HTTP/1.0); HEAD, 204, 304 and 1xx carry no body; Expect: 100-continue is answered by the proxy;
upgrades become tunnels; pipelined requests are answered in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools

from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.client import Connection, Response, build_request, request
from tests.support.proxy import simple_config

Handler = Callable[[ReceivedRequest, asyncio.StreamWriter, Backend], Awaitable[None]]
TIMEOUT = 3.0


# -- helpers ------------------------------------------------------------------------------------


async def start(backend_factory: Any, proxy_factory: Any, handler: Handler | None = None,
                **backend_kwargs: Any) -> tuple[Backend, int]:
    """One backend behind one proxy; returns the backend and the proxy's port."""
    backend = await backend_factory(handler=handler, name="a", **backend_kwargs)
    proxy = await proxy_factory(simple_config([backend.address]))
    return backend, proxy.port


@contextlib.asynccontextmanager
async def connected(port: int) -> AsyncIterator[Connection]:
    conn = await Connection.open(port)
    try:
        yield conn
    finally:
        await conn.close()


def header_of(headers: list[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in headers if k.lower() == name.lower()]
    return ", ".join(values) if values else None


async def read_head(conn: Connection,
                    timeout: float = TIMEOUT) -> tuple[int, list[tuple[str, str]]]:
    """Read one response head (status line and fields) without touching what follows it."""
    async with asyncio.timeout(timeout):
        raw = await conn.reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return status, fields


async def read_to_eof(conn: Connection, timeout: float = TIMEOUT) -> bytes:
    """Everything the proxy sends until it closes; TimeoutError if it does not close in time."""
    chunks = []
    async with asyncio.timeout(timeout):
        while chunk := await conn.reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class _Responses:
    """Several responses parsed from one byte stream (the support client keeps only one)."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []

    def on_message_begin(self) -> None:
        self._headers, self._body = [], []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.done.append(Response(self.parser.get_status_code(), self._headers,
                                  b"".join(self._body), self.parser.should_keep_alive()))


async def read_responses(conn: Connection, count: int, timeout: float = TIMEOUT) -> list[Response]:
    collector = _Responses()
    async with asyncio.timeout(timeout):
        while len(collector.done) < count:
            data = await conn.reader.read(65536)
            if not data:
                raise ConnectionError(f"closed after {len(collector.done)} of {count} responses")
            collector.parser.feed_data(data)
    return collector.done


def raw_handler(data: bytes, close: bool = False) -> Handler:
    """A backend handler that answers every request with ``data`` (and closes if asked)."""

    async def handle(request: ReceivedRequest, writer: asyncio.StreamWriter,
                     backend: Backend) -> None:
        writer.write(data)
        if close:
            await writer.drain()
            writer.close()

    return handle


# -- request fields -------------------------------------------------------------------------------


async def test_hop_by_hop_request_fields_are_removed_and_end_to_end_fields_kept_in_order(
        backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    sent = [
        ("Host", "Example.COM:8080"),
        ("X-First", "1"),
        ("Connection", "close, x-secret, X-Other-Secret"),
        ("Keep-Alive", "timeout=5"),
        ("X-Secret", "s3cret"),
        ("Accept", "text/plain"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("X-Other-Secret", "also"),
        ("Trailer", "X-Checksum"),
        ("X-Middle", "2"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Upgrade", "h2c"),  # no "upgrade" in Connection: not an upgrade request
        ("X-Last", "3"),
    ]
    raw = build_request("GET", "/headers", host=None, headers=sent)
    async with connected(port) as conn:
        conn.send(raw)
        reply = await conn.read_response(timeout=TIMEOUT)
    assert reply.status == 200
    seen = backend.requests[0]
    for name in ("Connection", "X-Secret", "X-Other-Secret", "Keep-Alive", "Proxy-Connection",
                 "TE", "Trailer", "Proxy-Authorization", "Upgrade"):
        assert seen.header(name) is None, f"{name} reached the backend"
    end_to_end = {"host", "x-first", "accept", "x-middle", "x-last"}
    assert [(k, v) for k, v in seen.headers if k.lower() in end_to_end] == [
        ("Host", "Example.COM:8080"), ("X-First", "1"), ("Accept", "text/plain"),
        ("X-Middle", "2"), ("X-Last", "3")]


async def test_hop_by_hop_response_fields_are_removed_and_end_to_end_fields_pass(
        backend_factory, proxy_factory):
    body = b"payload\n"
    _, port = await start(backend_factory, proxy_factory, raw_handler(
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: X-Foo\r\n"
        b"X-Foo: per-hop\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Cache-Control: no-store\r\n"
        b"X-End: to-end\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))
    reply = await request(port, "GET", "/", timeout=TIMEOUT)
    assert reply.status == 200
    assert reply.body == body
    for name in ("X-Foo", "Keep-Alive", "Proxy-Connection", "Trailer"):
        assert reply.header(name) is None, f"{name} reached the client"
    assert "x-foo" not in (reply.header("Connection") or "").lower()
    assert reply.header("Cache-Control") == "no-store"
    assert reply.header("X-End") == "to-end"


async def test_x_forwarded_for_is_appended_to_the_clients_value(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    await request(port, "GET", "/", headers={"X-Forwarded-For": "1.2.3.4"}, timeout=TIMEOUT)
    assert backend.requests[0].header("X-Forwarded-For") == "1.2.3.4, 127.0.0.1"


async def test_x_forwarded_for_is_set_to_the_peer_when_absent(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    await request(port, "GET", "/", timeout=TIMEOUT)
    assert backend.requests[0].header("X-Forwarded-For") == "127.0.0.1"


async def test_x_forwarded_proto_and_host_are_set_by_the_proxy_replacing_the_clients(
        backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    await request(port, "GET", "/", host="example.com:8080",
                  headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
                  timeout=TIMEOUT)
    seen = backend.requests[0]
    assert seen.header("X-Forwarded-Proto") == "http"
    assert seen.header("X-Forwarded-Host") == "example.com:8080"


async def test_request_id_is_added_when_absent_and_unique_per_request(
        backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    async with connected(port) as conn:
        for _ in range(3):
            assert (await conn.request("GET", "/", timeout=TIMEOUT)).status == 200
    await request(port, "GET", "/", timeout=TIMEOUT)
    ids = [r.header("X-Request-Id") for r in backend.requests]
    assert all(ids), ids
    assert len(set(ids)) == 4, ids
    assert not any("," in i for i in ids if i)  # one field each


async def test_request_id_sent_by_the_client_is_kept_unchanged(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    await request(port, "GET", "/", headers={"X-Request-Id": "client-chosen-42"},
                  timeout=TIMEOUT)
    assert backend.requests[0].header("X-Request-Id") == "client-chosen-42"


# -- request bodies -------------------------------------------------------------------------------


async def test_content_length_request_body_arrives_intact(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    body = b'{"name": "value", "n": 12345}'
    reply = await request(port, "POST", "/items", body=body, timeout=TIMEOUT)
    assert reply.status == 200
    seen = backend.requests[0]
    assert seen.body == body
    assert seen.header("Content-Length") == str(len(body))


async def test_chunked_request_body_arrives_intact_and_rechunked(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    head = build_request("POST", "/upload", headers={"Transfer-Encoding": "chunked"})
    # chunks of 5, 9 and 16 bytes, split across writes mid-size and mid-data
    pieces = [b"5\r\nhel", b"lo\r\n9\r\n, chunk", b"ed\r\n1", b"0\r\n world 012345678\r\n",
              b"0\r\n\r\n"]
    async with connected(port) as conn:
        conn.send(head)
        for piece in pieces:
            conn.send(piece)
            await conn.writer.drain()
        reply = await conn.read_response(timeout=TIMEOUT)
    assert reply.status == 200
    seen = backend.requests[0]
    assert seen.body == b"hello, chunked world 012345678"
    assert seen.header("Transfer-Encoding") == "chunked"
    assert seen.header("Content-Length") is None


async def test_large_request_body_arrives_intact(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    body = bytes(range(256)) * (5 * 4096)  # 5 MiB
    reply = await request(port, "PUT", "/big", body=body, timeout=10.0)
    assert reply.status == 200
    assert len(backend.requests[0].body) == len(body)
    assert backend.requests[0].body == body


# -- response framing -----------------------------------------------------------------------------


async def test_content_length_response_passes_through(backend_factory, proxy_factory):
    body = bytes(range(256)) * 40
    _, port = await start(backend_factory, proxy_factory,
                          raw_handler(response(200, body, {"Content-Type": "application/x"})))
    reply = await request(port, "GET", "/", timeout=TIMEOUT)
    assert reply.status == 200
    assert reply.header("Content-Length") == str(len(body))
    assert reply.header("Transfer-Encoding") is None
    assert reply.body == body


async def test_chunked_response_reaches_http11_client_chunked(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory, raw_handler(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n"))
    async with connected(port) as conn:
        reply = await conn.request("GET", "/", timeout=TIMEOUT)
        assert reply.status == 200
        assert reply.header("Transfer-Encoding") == "chunked"
        assert reply.body == b"Wikipedia in\r\n\r\nchunks."
        assert (await conn.request("GET", "/again", timeout=TIMEOUT)).status == 200
    assert backend.connections == 1


CLOSE_DELIMITED_BODY = b"".join(b"line %06d of a body that ends when the member closes\n" % i
                                for i in range(4000))


def close_delimited_handler() -> Handler:
    async def handle(request: ReceivedRequest, writer: asyncio.StreamWriter,
                     backend: Backend) -> None:
        if request.path != "/stream":
            writer.write(response(200, b"other\n"))
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        writer.write(CLOSE_DELIMITED_BODY)
        await writer.drain()
        writer.close()

    return handle


async def test_read_until_close_response_reaches_http11_client_chunked_and_connection_stays(
        backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory, close_delimited_handler())
    async with connected(port) as conn:
        reply = await conn.request("GET", "/stream", timeout=TIMEOUT)
        assert reply.status == 200
        assert reply.header("Transfer-Encoding") == "chunked"
        assert reply.header("Content-Length") is None
        assert reply.body == CLOSE_DELIMITED_BODY
        assert reply.keep_alive
        again = await conn.request("GET", "/other", timeout=TIMEOUT)
        assert again.status == 200
        assert again.body == b"other\n"


async def test_read_until_close_response_reaches_http10_client_delimited_by_close(
        backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory, close_delimited_handler())
    async with connected(port) as conn:
        conn.send(b"GET /stream HTTP/1.0\r\nHost: example.com\r\n\r\n")
        raw = await read_to_eof(conn)  # the proxy closes: that ends the body
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"200"
    assert b"transfer-encoding" not in head.lower()
    assert body == CLOSE_DELIMITED_BODY


# -- bodiless responses ---------------------------------------------------------------------------


async def test_head_response_has_content_length_but_no_body_and_connection_is_reused(
        backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    async with connected(port) as conn:
        head = await conn.request("HEAD", "/page", timeout=TIMEOUT)
        assert head.status == 200
        assert head.header("Content-Length") == str(len(b"a HEAD /page\n"))
        following = await conn.request("GET", "/page", timeout=TIMEOUT)
        # a body sent after the HEAD response would be read as the start of this one
        assert following.status == 200
        assert following.body == b"a GET /page\n"
    assert backend.connections == 1


async def test_204_response_has_no_body_and_keep_alive_continues(backend_factory, proxy_factory):
    async def handle(request: ReceivedRequest, writer: asyncio.StreamWriter,
                     backend: Backend) -> None:
        if request.path == "/empty":
            writer.write(b"HTTP/1.1 204 No Content\r\nX-Backend: a\r\n\r\n")
        else:
            writer.write(response(200, b"after\n"))

    backend, port = await start(backend_factory, proxy_factory, handle)
    async with connected(port) as conn:
        reply = await conn.request("DELETE", "/empty", timeout=TIMEOUT)
        assert reply.status == 204
        assert reply.body == b""
        assert reply.header("Content-Length") is None  # RFC 9110 §8.6: never on a 204
        assert reply.keep_alive
        after = await conn.request("GET", "/next", timeout=TIMEOUT)
        assert after.status == 200
        assert after.body == b"after\n"
    assert backend.connections == 1


async def test_304_response_has_no_body_and_keep_alive_continues(backend_factory, proxy_factory):
    async def handle(request: ReceivedRequest, writer: asyncio.StreamWriter,
                     backend: Backend) -> None:
        if request.header("If-None-Match"):
            # Content-Length of a 304 describes the representation; no body follows
            writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 10\r\n\r\n')
        else:
            writer.write(response(200, b"0123456789", {"ETag": '"v1"'}))

    backend, port = await start(backend_factory, proxy_factory, handle)
    async with connected(port) as conn:
        reply = await conn.request("GET", "/doc", headers={"If-None-Match": '"v1"'},
                                   timeout=TIMEOUT)
        assert reply.status == 304
        assert reply.body == b""
        assert reply.header("ETag") == '"v1"'
        after = await conn.request("GET", "/doc", timeout=TIMEOUT)
        assert after.status == 200
        assert after.body == b"0123456789"
    assert backend.connections == 1


# -- interim responses ----------------------------------------------------------------------------


EARLY_HINTS = (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
               + response(200, b"final\n"))


async def test_early_hints_reach_http11_client_before_final_response(
        backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory, raw_handler(EARLY_HINTS))
    async with connected(port) as conn:
        reply = await conn.request("GET", "/", timeout=TIMEOUT)
        assert reply.interim == [103]
        assert reply.status == 200
        assert reply.body == b"final\n"
        assert (await conn.request("GET", "/", timeout=TIMEOUT)).body == b"final\n"


async def test_early_hints_are_not_sent_to_http10_client(backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory, raw_handler(EARLY_HINTS))
    async with connected(port) as conn:
        conn.send(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n")
        raw = await read_to_eof(conn)
    assert raw.startswith(b"HTTP/1.1 200 ")  # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client
    assert raw.endswith(b"\r\n\r\nfinal\n")


async def test_expect_100_continue_is_answered_before_the_body_and_not_forwarded(
        backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    body = b"the body, sent only after 100 Continue"
    async with connected(port) as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        status, _ = await read_head(conn)
        assert status == 100
        conn.send(body)
        reply = await conn.read_response(timeout=TIMEOUT)
    assert reply.status == 200
    assert reply.body == b"a POST /upload\n"
    seen = backend.requests[0]
    assert seen.body == body
    assert seen.header("Expect") is None


# -- HTTP/1.0 clients -----------------------------------------------------------------------------


async def test_http10_client_connection_is_closed_after_the_response(
        backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory)
    async with connected(port) as conn:
        conn.send(b"GET /old HTTP/1.0\r\nHost: example.com\r\n\r\n")
        reply = await conn.read_response(timeout=TIMEOUT)
        assert reply.status == 200
        assert reply.body == b"a GET /old\n"
        assert not reply.keep_alive
        assert await conn.closed_by_peer(timeout=TIMEOUT)


async def test_http10_client_asking_keep_alive_keeps_the_connection(
        backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory)
    keep = b"Host: example.com\r\nConnection: keep-alive\r\n\r\n"
    async with connected(port) as conn:
        conn.send(b"GET /one HTTP/1.0\r\n" + keep)
        first = await conn.read_response(timeout=TIMEOUT)
        assert first.status == 200
        assert (first.header("Connection") or "").lower() == "keep-alive"
        assert first.body == b"a GET /one\n"
        conn.send(b"GET /two HTTP/1.0\r\n" + keep)
        second = await conn.read_response(timeout=TIMEOUT)
        assert second.status == 200
        assert second.body == b"a GET /two\n"


# -- upgrades -------------------------------------------------------------------------------------


WS_REQUEST = build_request("GET", "/ws", headers=[
    ("Connection", "Upgrade"), ("Upgrade", "websocket"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
GREETING = b"hello from the backend\n"


async def test_websocket_upgrade_becomes_a_tunnel_both_ways(backend_factory, proxy_factory):
    async def switch(request: ReceivedRequest, writer: asyncio.StreamWriter,
                     backend: Backend) -> None:
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)  # the backend speaks first: backend -> client
        await writer.drain()
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    backend, port = await start(backend_factory, proxy_factory, switch, upgraded=echo)
    async with connected(port) as conn:
        conn.send(WS_REQUEST)
        status, fields = await read_head(conn)
        assert status == 101
        assert header_of(fields, "Upgrade") == "websocket"
        assert "upgrade" in (header_of(fields, "Connection") or "").lower()
        assert header_of(fields, "Sec-WebSocket-Accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        async with asyncio.timeout(TIMEOUT):
            assert await conn.reader.readexactly(len(GREETING)) == GREETING
            conn.send(b"ping")
            assert await conn.reader.readexactly(4) == b"ping"
            big = bytes(range(256)) * 1024  # 256 KiB each way
            conn.send(big)
            assert await conn.reader.readexactly(len(big)) == big
    seen = backend.requests[0]
    assert seen.header("Upgrade") == "websocket"
    assert "upgrade" in (seen.header("Connection") or "").lower()
    assert seen.header("Sec-WebSocket-Key") == "dGhlIHNhbXBsZSBub25jZQ=="


async def test_upgrade_refused_by_backend_returns_its_response(backend_factory, proxy_factory):
    _, port = await start(backend_factory, proxy_factory,
                          raw_handler(response(200, b"no upgrade here\n")))
    async with connected(port) as conn:
        conn.send(WS_REQUEST)
        reply = await conn.read_response(timeout=TIMEOUT)
    assert reply.status == 200
    assert reply.body == b"no upgrade here\n"


# -- pipelining -----------------------------------------------------------------------------------


async def test_pipelined_requests_are_answered_in_order(backend_factory, proxy_factory):
    backend, port = await start(backend_factory, proxy_factory)
    async with connected(port) as conn:
        conn.send(build_request("GET", "/one") + build_request("POST", "/two", body=b"payload")
                  + build_request("GET", "/three"))
        replies = await read_responses(conn, 3)
    assert [r.status for r in replies] == [200, 200, 200]
    assert [r.body for r in replies] == [b"a GET /one\n", b"a POST /two\n", b"a GET /three\n"]
    assert [r.path for r in backend.requests] == ["/one", "/two", "/three"]
    assert backend.requests[1].body == b"payload"
