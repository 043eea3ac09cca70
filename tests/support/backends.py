"""Real HTTP/1.1 backends for tests, on 127.0.0.1 with a kernel-chosen port.

A backend reads requests with httptools (so bodies, chunked or not, arrive decoded), records
them, and answers with a ``handler(request, writer)`` coroutine: the default answers 200 with a
body naming the backend. Handlers write raw bytes, so a test can send any response it likes,
malformed ones included, stream slowly, or close the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection_id: int

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


Handler = Callable[["ReceivedRequest", asyncio.StreamWriter, "Backend"], Awaitable[None]]


def response(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
             reason: str = "OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    fields = {"Content-Length": str(len(body))}
    fields.update(headers or {})
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def default_handler(request: ReceivedRequest, writer: asyncio.StreamWriter,
                          backend: Backend) -> None:
    body = f"{backend.name} {request.method} {request.path}\n".encode()
    if request.method == "HEAD":
        writer.write(response(200, b"", {"Content-Length": str(len(body)),
                                         "X-Backend": backend.name}))
        return
    writer.write(response(200, body, {"X-Backend": backend.name}))


class _RequestReader:
    def __init__(self) -> None:
        self.done: list[tuple[str, str, list[tuple[str, str]], bytes, bool]] = []
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self.parser = httptools.HttpRequestParser(self)
        self.upgraded = False

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", [], []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_method().decode(), self._url.decode("latin-1"),
                          self._headers, b"".join(self._body), self.parser.should_keep_alive()))


@dataclass
class Backend:
    name: str
    handler: Handler
    server: asyncio.Server | None = None
    port: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    connections: int = 0  # accepted so far
    open_connections: int = 0
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    upgraded: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_connections += 1
        connection_id = self.connections
        self.writers.add(writer)
        parser = _RequestReader()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    parser.parser.feed_data(data)
                except httptools.HttpParserUpgrade:
                    pass
                except httptools.HttpParserError:
                    writer.write(response(400, b"bad request\n"))
                    break
                while parser.done:
                    method, path, headers, body, keep_alive = parser.done.pop(0)
                    request = ReceivedRequest(method, path, headers, body, connection_id)
                    self.requests.append(request)
                    await self.handler(request, writer, self)
                    await writer.drain()
                    if writer.is_closing():
                        return
                    if request.header("upgrade") and self.upgraded is not None:
                        await self.upgraded(reader, writer)
                        return
                    if not keep_alive:
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open_connections -= 1
            self.writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        await close_server(self.server, self.writers)

    async def request_arrived(self, timeout: float = 5.0) -> None:
        """Wait until at least one request has reached this backend; fail after timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.requests:
            assert loop.time() < deadline, "the request did not reach the member"
            await asyncio.sleep(0.01)

    def close_idle_connections(self) -> None:
        """Close every open connection, as a backend with a short keep-alive timeout would."""
        for writer in list(self.writers):
            writer.close()


async def close_server(server: asyncio.Server | None, writers: set[asyncio.StreamWriter]
                       ) -> None:
    """Stop a test server: no new connections, and its open ones closed too (``Server.close``
    leaves accepted connections open)."""
    if server is not None:
        server.close()
    for writer in list(writers):
        writer.close()
    if server is not None:
        await server.wait_closed()


async def start_backend(handler: Handler | None = None, name: str = "backend",
                        upgraded: Callable[..., Awaitable[None]] | None = None) -> Backend:
    backend = Backend(name=name, handler=handler or default_handler, upgraded=upgraded)
    backend.server = await asyncio.start_server(backend._serve, "127.0.0.1", 0)
    backend.port = backend.server.sockets[0].getsockname()[1]
    return backend


_HANDED_OUT: set[int] = set()  # free_port's answers so far in this process


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused. Never
    one handed out before in this process: a port picked just before was released too, and
    the kernel may give it again (a node's listener and its control port, picked one after
    the other, collided). Bounded: forgotten after 10,000, far more than a test uses."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            if len(_HANDED_OUT) >= 10_000:
                _HANDED_OUT.clear()
            _HANDED_OUT.add(port)
            return port


async def named_backends(factory: Callable[..., Awaitable[Backend]], *names: str
                         ) -> list[Backend]:
    """One default backend per name, from the ``backend_factory`` fixture."""
    return [await factory(name=name) for name in names]
