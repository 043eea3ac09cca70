"""A strict, recording upstream member for the request-smuggling tests.

Theory of operation: each accepted connection is read with a fresh ``h11`` server state machine
per request. h11 is strict where llhttp (inside the proxy) is lenient or simply different, so a
byte the proxy lets through that a careful server would read another way shows up here, either
as a request the member parsed or as a protocol-error record with the raw bytes it choked on.
After a request ends, the bytes h11 has not consumed (``trailing_data``) seed the next state
machine: pipelined requests are read one after the other, as a real server reads them, and the
member answers each before it looks at the next.

Every parsed request is recorded as a :class:`tests.support.backends.ReceivedRequest` (method,
target, fields in wire order and case, body, connection id). The proxy adds X-Forwarded-For and
a request id to everything it forwards, so a recorded request without them arrived *raw*: bytes
of one client message the proxy sent without parsing them as a request. ``raw_requests()`` lists
those; ``assert_nothing_raw()`` is the check every smuggling test ends with.

Answers are scripted per request path (``script("/a", Reply(...))``) or by a function of the
request (``responder``); the default answer is a 200 whose body names the request (method,
target, connection, request id), so a client can tell whose answer it got. A :class:`Reply` is
raw bytes, so a test can send anything: a wrong Content-Length with a whole extra response after
it, a body after a 204, codings other than chunked, a head of any size, a 101 that turns the
connection into a tunnel (recorded and echoed), or a close.

For an upgrade request the member also records the bytes that had already arrived behind the
request when it answered (``early``): a proxy must send nothing more before it sees the 101.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import h11

from tests.support.backends import ReceivedRequest, close_server, response

# Larger than any head the proxy may forward (its own request limits are 60 KiB of fields plus
# 8 KiB of target): the member must not be the one that rejects a long but valid head.
MAX_HEAD = 1 << 20
READ_SIZE = 65536


@dataclass
class Reply:
    """What the member writes for one request."""

    data: bytes
    close: bool = False  # close the connection after writing
    tunnel: bool = False  # after writing (a 101), echo and record every byte as tunnel data


@dataclass
class ProtocolErrorRecord:
    """Bytes the member could not parse as a request (from the start of the failed message)."""

    connection_id: int
    raw: bytes
    error: str


Responder = Callable[[ReceivedRequest], Reply]


def request_tag(request: ReceivedRequest) -> str:
    """The line the default answer carries: enough for a client to tell whose answer it is."""
    return (f"{request.method} {request.path} conn={request.connection_id} "
            f"id={request.header('x-request-id')}\n")


def ok(request: ReceivedRequest) -> Reply:
    """The default answer: 200, a Content-Length body naming the request."""
    return Reply(response(200, request_tag(request).encode(), {"X-Member": "strict"}))


def wants_close(request: ReceivedRequest, http10: bool) -> bool:
    """RFC 9112 §9.3: close after this response, as a keep-alive server decides."""
    options = {t.strip().lower() for t in (request.header("connection") or "").split(",")}
    return "close" in options or (http10 and "keep-alive" not in options)


@dataclass
class StrictMember:
    responder: Responder = ok
    scripts: dict[str, Reply | Responder] = field(default_factory=dict)
    server: asyncio.Server | None = None
    port: int = 0
    requests: list[ReceivedRequest] = field(default_factory=list)
    errors: list[ProtocolErrorRecord] = field(default_factory=list)
    early: list[tuple[ReceivedRequest, bytes]] = field(default_factory=list)
    # heads whose body never ended: the sender closed mid-body (as a proxy does when the client
    # body turns out malformed after the head went out); not answered, not a parse error
    aborted: list[ReceivedRequest] = field(default_factory=list)
    tunnels: dict[int, bytes] = field(default_factory=dict)
    connections: int = 0  # accepted so far
    closed: set[int] = field(default_factory=set)  # ids of connections that have ended
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- scripting and records -------------------------------------------------------------

    def script(self, path: str, reply: Reply | Responder) -> None:
        """Answer requests whose target is exactly ``path`` with ``reply``."""
        self.scripts[path] = reply

    def reset(self) -> None:
        """Forget records and scripts (a fuzz example starts from a clean member)."""
        self.scripts.clear()
        self.requests.clear()
        self.errors.clear()
        self.early.clear()
        self.aborted.clear()
        self.tunnels.clear()

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def raw_requests(self) -> list[ReceivedRequest]:
        """Requests that did not come through the proxy's request path: no X-Forwarded-For
        naming the proxy's peer, or no request id."""
        return [r for r in self.requests + self.aborted
                if not (r.header("x-forwarded-for") or "").endswith("127.0.0.1")
                or not r.header("x-request-id")]

    def assert_nothing_raw(self, errors_expected: bool = False) -> None:
        raw = self.raw_requests()
        assert not raw, f"requests reached the member raw: {raw}"
        if not errors_expected:
            assert not self.errors, f"the member could not parse what it got: {self.errors}"

    # -- serving ---------------------------------------------------------------------------

    def _reply_for(self, request: ReceivedRequest) -> Reply:
        scripted = self.scripts.get(request.path)
        if scripted is None:
            return self.responder(request)
        return scripted if isinstance(scripted, Reply) else scripted(request)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        cid = self.connections
        self.writers.add(writer)
        buffered = b""
        try:
            while True:
                parsed = await self._read_request(reader, cid, buffered)
                if parsed is None:
                    return
                request, http10, buffered = parsed
                self.requests.append(request)
                reply = self._reply_for(request)
                if request.header("upgrade") is not None:
                    self.early.append((request, buffered))
                writer.write(reply.data)
                await writer.drain()
                if reply.tunnel and not reply.close:
                    await self._tunnel(reader, writer, cid, buffered)
                    return
                if reply.close or wants_close(request, http10):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.add(cid)
            self.writers.discard(writer)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, cid: int, buffered: bytes
                            ) -> tuple[ReceivedRequest, bool, bytes] | None:
        """One request (and the bytes after it), or None at a clean close or a parse error."""
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        if buffered:
            parser.receive_data(buffered)  # (h11 reads an empty feed as the peer's close)
        seen = buffered  # everything fed to this parser, for an error record
        head: h11.Request | None = None
        body: list[bytes] = []
        eof = False
        while True:
            try:
                event = parser.next_event()
            except h11.RemoteProtocolError as exc:
                if eof and head is not None:
                    self.aborted.append(_received(head, body, cid))
                else:
                    self.errors.append(ProtocolErrorRecord(cid, seen, str(exc)))
                return None
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                seen += data
                eof = not data
                parser.receive_data(data)  # b"" tells h11 the peer closed
                continue
            if isinstance(event, h11.ConnectionClosed):
                if seen.strip():
                    self.errors.append(ProtocolErrorRecord(cid, seen, "closed mid-request"))
                return None
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                rest, _ = parser.trailing_data
                return _received(head, body, cid), head.http_version == b"1.0", bytes(rest)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      cid: int, early: bytes) -> None:
        """After a 101: every byte is opaque; record it and echo it back."""
        data = early
        while True:
            if data:
                self.tunnels[cid] = self.tunnels.get(cid, b"") + data
                writer.write(data)
                await writer.drain()
            data = await reader.read(READ_SIZE)
            if not data:
                return

    async def close(self) -> None:
        await close_server(self.server, self.writers)


def _received(head: h11.Request, body: list[bytes], cid: int) -> ReceivedRequest:
    fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in head.headers.raw_items()]
    return ReceivedRequest(head.method.decode(), head.target.decode("latin-1"), fields,
                           b"".join(body), cid)


async def start_member(responder: Responder = ok) -> StrictMember:
    member = StrictMember(responder=responder)
    member.server = await asyncio.start_server(member._serve, "127.0.0.1", 0)
    member.port = member.server.sockets[0].getsockname()[1]
    return member
