"""A small raw HTTP/1.1 client for tests: exact bytes out, parsed responses back.

``Connection`` keeps one TCP connection, so keep-alive and pipelining can be observed;
``raw_exchange`` sends bytes and returns everything the server sends until it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import httptools


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool = True
    reason: str = ""
    http_version: str = "1.1"
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before this one

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


class _ResponseReader:
    def __init__(self, head_only: bool = False) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_only = head_only
        self.done: list[Response] = []
        self.interim: list[int] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._reason = b""
        self.head_complete = False

    def on_message_begin(self) -> None:
        self._headers, self._body, self._reason = [], [], b""

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_complete = True
        status = self.parser.get_status_code()
        if self.head_only and status >= 200:
            self._finish()
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.interim.append(status)
            return
        self._finish()

    def _finish(self) -> None:
        self.done.append(Response(
            self.parser.get_status_code(), self._headers, b"".join(self._body),
            self.parser.should_keep_alive(), self._reason.decode("latin-1"),
            self.parser.get_http_version(), list(self.interim)))
        self.interim = []


class _HeadDone(Exception):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def request(self, method: str = "GET", path: str = "/", host: str = "example.com",
                      headers: dict[str, str] | list[tuple[str, str]] | None = None,
                      body: bytes | None = None, timeout: float = 10.0) -> Response:
        self.send(build_request(method, path, host, headers, body))
        return await self.read_response(head_only=method == "HEAD", timeout=timeout)

    async def read_response(self, head_only: bool = False, timeout: float = 10.0) -> Response:
        reader = _ResponseReader(head_only)
        async with asyncio.timeout(timeout):
            while not reader.done:
                data = await self.reader.read(65536)
                if not data:
                    if reader.head_complete and not reader.done:
                        reader._finish()  # body delimited by close
                        break
                    raise ConnectionError("connection closed before a complete response")
                try:
                    reader.parser.feed_data(data)
                except httptools.HttpParserCallbackError as exc:
                    if not isinstance(exc.__context__, _HeadDone):
                        raise
        return reader.done[0]

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF) within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
            return True
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def build_request(method: str = "GET", path: str = "/", host: str | None = "example.com",
                  headers: dict[str, str] | list[tuple[str, str]] | None = None,
                  body: bytes | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k, _ in items):
        items.append(("Content-Length", str(len(body))))
    lines += [f"{k}: {v}" for k, v in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def request(port: int, method: str = "GET", path: str = "/", host: str = "example.com",
                  headers: dict[str, str] | list[tuple[str, str]] | None = None,
                  body: bytes | None = None, timeout: float = 10.0) -> Response:
    """One request on a fresh connection."""
    conn = await Connection.open(port)
    try:
        return await conn.request(method, path, host, headers, body, timeout)
    finally:
        await conn.close()


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data``, return all bytes received until the server closes (or ``timeout``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return b"".join(chunks)


def status_of(raw: bytes) -> int:
    """Status code of the first response in raw bytes (0 when there is none)."""
    if not raw.startswith(b"HTTP/1."):
        return 0
    return int(raw.split(b" ", 2)[1])


async def answered_by(port: int, count: int, path: str = "/") -> list[str | None]:
    """``X-Backend`` of ``count`` consecutive 200 answers on one keep-alive connection."""
    conn = await Connection.open(port)
    try:
        names = []
        for _ in range(count):
            reply = await conn.request("GET", path)
            assert reply.status == 200, (reply.status, reply.body)
            names.append(reply.header("x-backend"))
        return names
    finally:
        await conn.close()
