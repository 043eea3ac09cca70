"""The node's own HTTP listener: /metrics, /healthz, /ready and the control API (slb.node.node).

Requests here are few, so each is read whole (bounded by ``MAX_BODY``) and answered by a plain
handler ``(Request) -> Response``, in order per connection. It uses httptools like the proxy,
with the same strictness, but none of the proxy's machinery.

Connections are kept alive (HTTP/1.1): an admin keeps one per node, so a push costs no
handshake. ``ControlServer.close`` closes those connections too, not only the listener
(``asyncio.Server.close`` leaves accepted connections open): a node that stops must not go on
answering pushes on a connection an admin still holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from httptools import HttpParserCallbackError, HttpParserError, HttpRequestParser

from slb.errors import error_body, error_code

log = logging.getLogger("slb.control")

MAX_BODY = 256 * 1024 * 1024  # a full snapshot of 10,000 groups is tens of MB


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any) -> Response:
        return cls(status, json.dumps(data, indent=1).encode() + b"\n")

    @classmethod
    def error(cls, status: int, message: str, **extra: Any) -> Response:
        return cls.json(status, error_body(error_code(status), message, **extra))


Handler = Callable[[Request], Awaitable[Response]]


class _TooLarge(Exception):
    pass


class ControlProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler, connections: set[ControlProtocol]) -> None:
        self.handler = handler
        self.connections = connections  # the server's open connections, this one included
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        self._queue: asyncio.Queue[Request | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserCallbackError) as exc:
            status = 413 if isinstance(exc.__context__, _TooLarge) else 400
            self._write(Response.error(status, "bad request"), close=True)

    # parser callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > MAX_BODY:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = self._url.decode("latin-1")
        path, _, query = url.partition("?")
        self._queue.put_nowait(Request(self.parser.get_method().decode(), path, query,
                                       self._headers, b"".join(self._body)))

    async def _serve(self) -> None:
        while True:
            request = await self._queue.get()
            if request is None:
                return
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("control API handler failed for %s %s", request.method,
                              request.path)
                response = Response.error(500, "internal error")
            self._write(response, close=request.headers.get("connection", "") == "close")

    def _write(self, response: Response, close: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        phrase = HTTPStatus(response.status).phrase
        head = [f"HTTP/1.1 {response.status} {phrase}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        if close:
            head.append("Connection: close")
        transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        if close:
            transport.close()


class ControlServer:
    """The listener and its open connections."""

    def __init__(self, server: asyncio.Server, connections: set[ControlProtocol]) -> None:
        self.server = server
        self.connections = connections

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(self.server.sockets)

    def close(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()


async def start_control_server(handler: Handler, host: str, port: int) -> ControlServer:
    loop = asyncio.get_running_loop()
    connections: set[ControlProtocol] = set()
    server = await loop.create_server(lambda: ControlProtocol(handler, connections), host, port,
                                      reuse_address=True)
    return ControlServer(server, connections)
