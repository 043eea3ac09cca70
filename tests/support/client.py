"""A small raw HTTP/1.1 client for tests: exact bytes out, parsed responses back.

``Connection`` keeps one TCP connection, so keep-alive and pipelining can be observed;
``raw_exchange`` sends bytes and returns everything the server sends until it closes.

For the smuggling tests, ``send_raw`` writes exact bytes in as many writes as asked and reads
until the server closes or a deadline passes; ``split_responses`` cuts what came back into
responses with h11's strict client parser, so a test counts them and reads their statuses, and
bytes that are not a valid response (or come after a 101) are kept apart rather than guessed at.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import h11
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
    codings: list[str] = field(default_factory=list)  # Transfer-Encoding, as sent

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
    return (await send_raw(port, data, timeout=timeout)).data


@dataclass
class RawReply:
    data: bytes
    closed: bool  # the server closed the connection before the deadline


async def send_raw(port: int, *writes: bytes, timeout: float = 5.0,
                   until: Callable[[bytes], bool] | None = None) -> RawReply:
    """Send each of ``writes`` as its own write (drained, so the pieces tend to arrive apart),
    then read until the server closes, ``until(received)`` holds, or ``timeout`` passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunks: list[bytes] = []
    closed = False
    try:
        async with asyncio.timeout(timeout):
            for piece in writes:
                writer.write(piece)
                await writer.drain()
            while until is None or not until(b"".join(chunks)):
                chunk = await reader.read(65536)
                if not chunk:
                    closed = True
                    break
                chunks.append(chunk)
    except ConnectionError:
        closed = True
    except TimeoutError:
        pass
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return RawReply(b"".join(chunks), closed)


@dataclass
class Split:
    """Responses cut from one byte stream, in order, and what could not be cut."""

    responses: list[Response]
    rest: bytes = b""  # bytes after the last whole response (a tunnel's, after a 101)
    error: str | None = None  # why ``rest`` is not a response, when it is not a tunnel

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


# h11 reads only ``chunked``: a head whose codings end in chunked is handed to it as plain
# chunked, and the codings are kept on the response (RFC 9112 §6.1 allows e.g. gzip, chunked).
def _plain_chunked(data: bytes) -> tuple[bytes, list[str]]:
    start = 0
    while data[start + 9:start + 10] == b"1" and data[start + 9:start + 12] != b"101":
        end = data.find(b"\r\n\r\n", start)  # an interim response: a head alone
        if end < 0:
            return data, []
        start = end + 4
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return data, []
    lines = data[start:end].split(b"\r\n")
    kept: list[bytes] = []
    codings: list[str] = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"transfer-encoding":
            codings += [c.strip().decode("latin-1").lower() for c in value.split(b",")]
        else:
            kept.append(line)
    if codings[-1:] != ["chunked"]:
        return data, codings
    kept.append(b"Transfer-Encoding: chunked")
    return data[:start] + b"\r\n".join(kept) + data[end:], codings


def split_responses(data: bytes, methods: Sequence[str] = (), closed: bool = True) -> Split:
    """Cut ``data`` into responses to requests made with ``methods`` (GET past the list; a HEAD
    response has no body). ``closed``: the stream ended with the server's close, which ends a
    close-delimited body; without it an unfinished response is left in ``rest``."""
    responses: list[Response] = []
    while data:
        method = methods[len(responses)] if len(responses) < len(methods) else "GET"
        fed, codings = _plain_chunked(data)
        parser = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 24)
        # An Upgrade offer lets h11 accept a 101; any other answer is read as usual.
        parser.send(h11.Request(method=method, target="/", headers=[
            ("Host", "proxy"), ("Connection", "upgrade"), ("Upgrade", "test")]))
        parser.send(h11.EndOfMessage())
        parser.receive_data(fed)
        if closed:
            parser.receive_data(b"")
        current: Response | None = None
        body: list[bytes] = []
        interim: list[int] = []
        try:
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                    return Split(responses, data, "incomplete response")
                if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                    interim.append(event.status_code)
                elif isinstance(event, h11.InformationalResponse | h11.Response):
                    current = Response(
                        event.status_code,
                        [(n.decode("latin-1"), v.decode("latin-1"))
                         for n, v in event.headers.raw_items()],
                        b"", reason=event.reason.decode("latin-1"),
                        http_version=event.http_version.decode(), interim=interim,
                        codings=codings)
                    if event.status_code == 101:
                        responses.append(current)
                        return Split(responses, bytes(parser.trailing_data[0]))
                elif isinstance(event, h11.Data):
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    assert current is not None
                    current.body = b"".join(body)
                    responses.append(current)
                    break
        except h11.RemoteProtocolError as exc:
            return Split(responses, data, str(exc))
        data = bytes(parser.trailing_data[0])
    return Split(responses)


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
