"""A small HTTP/1.1 server on asyncio Protocols + httptools, with connection-level control.

The double needs things an HTTP framework hides: counting TCP connections per client IP (and
refusing the extra ones with Consul's raw 429 before reading anything), holding a request
forever without answering, closing every connection at once (agent down) and listening again
on the same port. Requests on one connection are answered in order (pipelining is allowed).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import httptools

# What Consul's connlimit handler writes before closing a connection over the per-IP cap.
TOO_MANY_CONNECTIONS = b"HTTP/1.1 429 Too Many Requests\r\n\r\n"


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    peer: str
    keep_alive: bool

    def param(self, name: str) -> str | None:
        """First value of a query parameter (Go's ``url.Values.Get``); None when absent."""
        values = self.query.get(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return name in self.query


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Called once the response has been handed to the transport.
    after: Callable[[], None] | None = None
    # Close the connection without any response (a reset from the client's point of view).
    drop: bool = False


Handler = Callable[[Request], Awaitable[Response]]


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.admitted = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []

    # ---- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else "?"
        if not self._server.admit(self):
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self.admitted = True
        self._worker = asyncio.get_running_loop().create_task(self._run())
        self._server.workers.add(self._worker)
        self._worker.add_done_callback(self._server.workers.discard)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write_raw(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                            b"Content-Length: 0\r\n\r\n")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self._server.release(self)

    # ---- httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        target = self._url.decode("latin-1")
        parts = urlsplit(target)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            target=target,
            path=unquote(parts.path),
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self._headers,
            body=b"".join(self._body),
            peer=self.peer,
            keep_alive=self._parser.should_keep_alive(),
        )
        self._queue.put_nowait(request)

    # ---- serving
    async def _run(self) -> None:
        while True:
            request = await self._queue.get()
            response = await self._server.handler(request)
            if response.drop:
                if self.transport is not None:
                    self.transport.abort()
                return
            self._write_response(request, response)
            if response.after is not None:
                response.after()
            if not request.keep_alive:
                self.close()
                return

    def _write_response(self, request: Request, response: Response) -> None:
        try:
            reason = http.HTTPStatus(response.status).phrase
        except ValueError:
            reason = "Unknown"
        headers = {
            "Date": email.utils.formatdate(usegmt=True),
            "Content-Length": str(len(response.body)),
            **response.headers,
        }
        if not request.keep_alive:
            headers["Connection"] = "close"
        head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        self._write_raw(head.encode("latin-1") + b"\r\n" + response.body)

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class HttpServer:
    """Listens on 127.0.0.1; ``admit`` caps connections per client IP."""

    def __init__(self, handler: Handler, *, host: str = "127.0.0.1",
                 max_conns_per_client: int = 200) -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.max_conns_per_client = max_conns_per_client
        self.connections: set[Connection] = set()
        self.per_client: dict[str, int] = {}
        self.rejected_connections = 0
        self.workers: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None

    async def listen(self, port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self.host, port or self.port or 0, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def listening(self) -> bool:
        return self._server is not None

    def admit(self, conn: Connection) -> bool:
        count = self.per_client.get(conn.peer, 0)
        if self.max_conns_per_client and count >= self.max_conns_per_client:
            self.rejected_connections += 1
            return False
        self.per_client[conn.peer] = count + 1
        self.connections.add(conn)
        return True

    def release(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.per_client[conn.peer] -= 1
            if not self.per_client[conn.peer]:
                del self.per_client[conn.peer]

    async def shutdown(self) -> None:
        """Stop listening and close every connection (in-flight requests get no answer)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        # Let connection_lost run and the per-connection workers finish cancelling.
        for _ in range(200):
            if not self.connections:
                break
            await asyncio.sleep(0.001)
        workers = list(self.workers)
        for task in workers:
            task.cancel()
        if workers:
            await asyncio.wait(workers, timeout=1.0)
