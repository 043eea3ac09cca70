"""``admin.push.wire.NodeClient`` against small scripted servers on 127.0.0.1: what goes out,
how answers come back, and what becomes of a connection that closes, breaks or hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from admin.push.targets import NodeTarget
from admin.push.wire import Failed, NodeClient
from tests.support.backends import free_port

# one request's head and body as the server read it; what it does with the connection
Script = Callable[[bytes, bytes, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Accepts connections, reads each request whole and hands it to ``script``."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.heads.append(head)
                await self.script(head, body, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def answer(status: int, body: bytes, *extra: str) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(script: Script) -> Server:
        server = Server(script)
        server.server = await asyncio.start_server(server.serve, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()
        for writer in server.writers:
            writer.transport.abort()
        await server.server.wait_closed()


async def echo(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
    writer.write(answer(200, b'{"got":%d}' % len(body)))


async def test_requests_share_one_connection_and_carry_token_term_and_body(serve) -> None:
    server = await serve(echo)
    client = NodeClient(timeout=5)
    target = NodeTarget("n1", server.url, token="secret")
    try:
        reply = await client.request(target, 7, "PATCH", "/v1/groups", b'{"a":1}')
        assert (reply.status_code, reply.json()) == (200, {"got": 7})
        reply = await client.request(target, None, "GET", "/v1/config?summary=1")
        assert reply.text == '{"got":0}'
    finally:
        await client.aclose()
    assert server.connections == 1
    first, second = (head.decode() for head in server.heads)
    assert first.startswith("PATCH /v1/groups HTTP/1.1\r\n")
    assert "Authorization: Bearer secret\r\n" in first and "X-SLB-Term: 7\r\n" in first
    assert "Content-Length: 7\r\n" in first
    assert second.startswith("GET /v1/config?summary=1 HTTP/1.1\r\n")
    assert "X-SLB-Term" not in second


async def test_an_answer_that_says_close_is_the_last_on_its_connection(serve) -> None:
    async def closing(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(answer(409, b'{"error":"stale"}', "Connection: close"))
        await writer.drain()
        writer.close()

    server = await serve(closing)
    client = NodeClient(timeout=5)
    target = NodeTarget("n1", server.url)
    try:
        for _ in range(2):
            reply = await client.request(target, None, "PUT", "/v1/config", b"{}")
            assert (reply.status_code, reply.json()) == (409, {"error": "stale"})
    finally:
        await client.aclose()
    assert server.connections == 2
    assert client.reconnects == 0  # not a broken connection: nothing was retried


async def test_a_kept_connection_that_breaks_before_the_answer_is_retried_once(serve) -> None:
    seen = 0

    async def breaks_the_second(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        if seen == 2:
            writer.transport.abort()  # what a node's restart does to a kept connection
            return
        await echo(head, body, writer)

    server = await serve(breaks_the_second)
    client = NodeClient(timeout=5)
    target = NodeTarget("n1", server.url)
    try:
        await client.request(target, None, "GET", "/v1/config")
        reply = await client.request(target, None, "GET", "/v1/config")
        assert reply.status_code == 200
    finally:
        await client.aclose()
    assert (client.reconnects, server.connections, seen) == (1, 2, 3)


async def test_a_node_that_never_answers_times_out_and_its_state_is_unknown(serve) -> None:
    async def silent(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    server = await serve(silent)
    client = NodeClient(timeout=0.2)
    try:
        with pytest.raises(Failed) as failed:
            await client.request(NodeTarget("n1", server.url), None, "PATCH", "/v1/groups",
                                 b"{}")
    finally:
        await client.aclose()
    assert "timed out" in str(failed.value) and failed.value.recheck


async def test_a_kept_connection_whose_node_stops_answering_times_out_and_is_dropped(
        serve) -> None:
    answered = 0

    async def answers_once(head: bytes, body: bytes, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        answered += 1
        if answered == 2:
            await asyncio.Event().wait()  # the second request, on the kept connection
        writer.write(answer(200, b"{}"))

    server = await serve(answers_once)
    client = NodeClient(timeout=5)  # (generous where an answer is due: a busy box)
    target = NodeTarget("n1", server.url)
    try:
        assert (await client.request(target, None, "GET", "/v1/config")).status_code == 200
        client.timeout = 0.2
        with pytest.raises(Failed) as failed:
            async with asyncio.timeout(5):  # (a client that never times out fails here)
                await client.request(target, None, "PATCH", "/v1/groups", b"{}")
        assert "timed out" in str(failed.value) and failed.value.recheck
        client.timeout = 5
        # the late answer's connection is gone: the next request goes on a new one
        assert (await client.request(target, None, "GET", "/v1/config")).status_code == 200
    finally:
        await client.aclose()
    assert (server.connections, answered) == (2, 3)


@pytest.mark.parametrize(("method", "recheck"), [("GET", False), ("PUT", True)])
async def test_a_refused_connection_is_a_connect_error(method: str, recheck: bool) -> None:
    client = NodeClient(timeout=5)
    try:
        with pytest.raises(Failed) as failed:
            await client.request(NodeTarget("n1", f"http://127.0.0.1:{free_port()}"), None,
                                 method, "/v1/config", None if method == "GET" else b"{}")
    finally:
        await client.aclose()
    assert "ConnectError" in str(failed.value) and failed.value.recheck is recheck


async def test_a_token_that_would_split_the_request_is_refused_before_sending(serve) -> None:
    server = await serve(echo)
    client = NodeClient(timeout=5)
    try:
        with pytest.raises(Failed, match="line break"):
            await client.request(NodeTarget("n1", server.url, token="a\r\nX-Evil: 1"), None,
                                 "GET", "/v1/config")
    finally:
        await client.aclose()
    assert server.heads == []
