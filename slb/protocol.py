"""The client side of the proxy: one ``ClientProtocol`` per client connection.

Request flow (DESIGN.md): parse the head with httptools under limits and the HTTP rules → route
(host, then best path rule) → pick a member (balancer over usable members) → reuse an idle
upstream connection or open one → stream both ways → account → keep the client connection alive.

Each request is an ``Exchange``. Exchanges queue in arrival order (HTTP/1.1 pipelining): only
the first is forwarded; the bodies of later ones are buffered, and reading pauses when the queue
or the buffer grows. Callbacks of httptools only record; ``on_headers_complete`` hands a finished
head to ``_dispatch``.

Flow control is paired. A client that reads slowly pauses reading from the member
(``pause_writing`` → ``pause_reading`` on the upstream transport), and a member that reads
slowly pauses reading from the client; pausing is idempotent and has named reasons.

Timeouts are deadlines, not timers: each connection has one ``deadline`` and what it means
(``deadline_kind``), and ``Sweeper`` checks them a few times a second. Setting a float per
request costs nothing; a ``call_later`` per request costs microseconds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from slb import http11
from slb.errors import (
    BodyTooLarge,
    ClientError,
    HeadersTooLarge,
    NoHealthyMember,
    NoRoute,
    ProxyError,
    RequestTimeout,
    Unsupported,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UriTooLong,
    VersionNotSupported,
)
from slb.upstream import FRAMING_LENGTH, FRAMING_NONE, UpstreamConnection

if TYPE_CHECKING:
    from slb.balancing.member import MemberState
    from slb.balancing.pool import Pool
    from slb.proxy.context import ProxyContext
    from slb.proxy.router import Target

# deadline kinds
IDLE = 0  # between requests: close quietly
HEADER = 1  # a request head is arriving: 408
EXCHANGE = 2  # waiting on the member or on the client's body
TUNNEL = 3  # an upgraded connection with no traffic

# reasons to stop reading from the client
PAUSE_UPSTREAM = 1  # the member's socket buffer is full
PAUSE_BUFFER = 2  # too much body buffered while connecting or queued
PAUSE_PIPELINE = 4  # too many pipelined requests queued

BUFFER_LIMIT = 1 << 20  # body bytes held for a request that has no connection yet
REPLAY_LIMIT = 64 * 1024  # body bytes kept so a request can be retried on another connection
PIPELINE_LIMIT = 16
LINGER_TIMEOUT = 2.0  # seconds to drain a client after an error answer
INFINITY = float("inf")

_HTTP11 = b" HTTP/1.1\r\n"
_COLON = b": "
_CRLF = b"\r\n"
_CHUNKED = b"Transfer-Encoding: chunked\r\n"
_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"
_PROTO_HTTP = b"X-Forwarded-Proto: http\r\n"


class Exchange:
    """One request and its response."""

    __slots__ = (
        "aborted", "attempts", "body_received", "buffer", "buffered", "bytes_sent", "chunked",
        "conn", "connection", "content_length", "discard", "expect_continue", "flag", "generation",
        "has_body", "head", "head_done", "header_bytes", "header_count", "host", "http10",
        "keep_alive", "member", "member_address", "method", "parts", "path", "replay",
        "replay_bytes", "request_done", "request_id", "response_chunked", "response_done",
        "response_started", "reused", "stale_retried", "start", "status", "target", "te", "tried",
        "upgrade", "upgrade_value", "upstream_start", "url", "vhost_name", "xff",
    )

    def __init__(self, start: float) -> None:
        self.start = start
        self.url = b""
        self.parts: list[bytes] = [b""]  # request line, then forwarded fields
        self.header_count = 0
        self.header_bytes = 0
        self.host: bytes | None = None
        self.content_length = 0
        self.chunked = False
        self.te: bytes | None = None
        # set once the head is complete (on_headers_complete)
        self.method = b""
        self.http10 = False
        self.upgrade = False
        self.has_body = False
        self.head = b""
        self.path = ""
        self.connection: bytes | None = None
        self.upgrade_value: bytes | None = None
        self.expect_continue = False
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.head_done = False
        self.request_done = False
        self.response_started = False
        self.response_done = False
        self.response_chunked = False
        self.discard = False
        self.aborted = False
        self.keep_alive = True
        self.body_received = 0
        self.buffer: list[bytes] | None = None
        self.buffered = 0
        self.replay: list[bytes] | None = None
        self.replay_bytes = 0
        self.conn: UpstreamConnection | None = None
        self.member: MemberState | None = None
        self.member_address = ""
        self.tried: list[MemberState] | None = None
        self.attempts = 0  # tries on members, counted against retry.tries
        self.generation = 0  # bumped to abandon a connect in flight
        self.reused = False
        self.stale_retried = False
        self.status = 0
        self.flag = "-"
        self.bytes_sent = 0
        self.target: Target | None = None
        self.vhost_name = ""
        self.upstream_start = 0.0


class ClientProtocol(asyncio.Protocol):
    __slots__ = (
        "ctx", "deadline", "deadline_kind", "exchanges", "head_bytes", "in_head", "lingering",
        "listen_key", "loop", "out", "parser", "parsing", "peer", "read_paused", "requests",
        "transport",
        "tunnel", "write_paused",
    )

    def __init__(self, ctx: ProxyContext, listen_key: str) -> None:
        self.ctx = ctx
        self.loop = ctx.loop
        self.listen_key = listen_key
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.parsing: Exchange | None = None
        self.deadline = INFINITY
        self.deadline_kind = IDLE
        self.in_head = True
        self.head_bytes = 0
        self.read_paused = 0
        self.write_paused = False
        self.requests = 0
        self.peer = b""
        self.tunnel: UpstreamConnection | None = None
        self.lingering = False
        self.out: list[bytes] | None = None  # response bytes held for one write

    # -- asyncio.Protocol interface ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if peer else b"unknown"
        ctx = self.ctx
        ctx.connections.add(self)
        ctx.stats.client_connections += 1
        self.deadline = self.loop.time() + ctx.settings.header_timeout
        self.deadline_kind = IDLE

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        tunnel = self.tunnel
        if tunnel is not None:
            self._tunnel_progress()
            if tunnel.transport is not None:
                tunnel.transport.write(data)
            return
        if self.in_head:
            if self.head_bytes > self.ctx.head_limit:
                self._fail(HeadersTooLarge("request head too large"))
                return
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            rest = data[upgrade.args[0]:]
            ex = self.exchanges[-1] if self.exchanges else None
            if rest and ex is not None:
                self._body_piece(ex, rest)
            self._pause_reading(PAUSE_BUFFER)  # until the member answers the upgrade
        except HttpParserCallbackError as exc:
            error = exc.__context__
            if isinstance(error, ProxyError):
                self._fail(error)
            else:
                raise
        except HttpParserError as exc:
            self._fail(ClientError(str(exc)))

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        ctx.connections.discard(self)
        ctx.stats.client_connections -= 1
        self.deadline = INFINITY
        tunnel = self.tunnel
        if tunnel is not None:
            self.tunnel = None
            tunnel.close()
        while self.exchanges:
            ex = self.exchanges.popleft()
            if ex.response_done:
                continue
            ex.aborted = True
            self._detach_upstream(ex)
            if ex.head_done:
                if not ex.response_started:
                    ex.status = 499  # nginx: the client closed the request
                ex.flag = "DC"
                self._account(ex)

    def pause_writing(self) -> None:
        self.write_paused = True
        conn = self._active_upstream()
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        conn = self._active_upstream()
        if conn is not None and conn.transport is not None:
            conn.transport.resume_reading()

    # -- parser callbacks (record, then hand over) ------------------------------------------

    def on_message_begin(self) -> None:
        ex = Exchange(self.loop.time())
        self.parsing = ex
        exchanges = self.exchanges
        exchanges.append(ex)
        if len(exchanges) == 1:
            self.deadline = ex.start + self.ctx.settings.header_timeout
            self.deadline_kind = HEADER
        elif len(exchanges) > PIPELINE_LIMIT:
            self._pause_reading(PAUSE_PIPELINE)

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.url += url
        if len(ex.url) > self.ctx.settings.max_uri_bytes:
            raise UriTooLong("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.header_count += 1
        ex.header_bytes += len(name) + len(value) + 4
        settings = self.ctx.settings
        if ex.header_count > settings.max_headers or ex.header_bytes > settings.max_header_bytes:
            raise HeadersTooLarge("request header fields too large")
        kind = self.ctx.request_fields.get(name.lower(), 0)
        if kind == http11.OTHER:
            ex.parts += (name, _COLON, value, _CRLF)
        elif kind == http11.HOST:
            if ex.host is not None:
                raise ClientError("more than one Host field")  # RFC 9112 §3.2
            ex.host = value
            ex.parts += (name, _COLON, value, _CRLF)
        elif kind == http11.CONTENT_LENGTH:
            ex.content_length = int(value)  # llhttp has checked the digits and duplicates
            ex.parts += (name, _COLON, value, _CRLF)
        elif kind == http11.TRANSFER_ENCODING:
            ex.te = value if ex.te is None else ex.te + b"," + value
            ex.chunked = True
        elif kind == http11.CONNECTION:
            ex.connection = value if ex.connection is None else ex.connection + b"," + value
        elif kind == http11.UPGRADE:
            ex.upgrade_value = value
        elif kind == http11.EXPECT:
            ex.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == http11.X_FORWARDED_FOR:
            ex.xff = value if ex.xff is None else ex.xff + b", " + value
        elif kind == http11.REQUEST_ID:
            ex.request_id = value
            ex.parts += (name, _COLON, value, _CRLF)
        # HOP and X_FORWARDED_SET fields are dropped

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        parser = self.parser
        self.in_head = False
        self.head_bytes = 0
        method = ex.method = parser.get_method()
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise VersionNotSupported(f"HTTP/{version} is not supported")
        ex.http10 = http10 = version == "1.0"
        ex.keep_alive = parser.should_keep_alive()
        ex.upgrade = parser.should_upgrade()
        if ex.te is not None:
            http11.check_transfer_encoding(ex.te)
        if method == b"CONNECT":
            raise Unsupported("CONNECT is not supported")
        if ex.host is None and not http10:
            raise ClientError("missing Host field")  # RFC 9112 §3.2
        max_body = self.ctx.settings.max_body_bytes
        if max_body and ex.content_length > max_body:
            raise BodyTooLarge("request body larger than the limit")
        ex.has_body = ex.chunked or ex.content_length > 0
        self._prepare_head(ex, method)
        ex.head_done = True
        if ex is self.exchanges[0]:
            self._dispatch(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.body_received += len(body)
        max_body = self.ctx.settings.max_body_bytes
        if max_body and ex.body_received > max_body:
            raise BodyTooLarge("request body larger than the limit")
        if ex.discard:
            return
        if ex.chunked:
            self._body_piece(ex, b"%x\r\n" % len(body))
            self._body_piece(ex, body)
            self._body_piece(ex, _CRLF)
        else:
            self._body_piece(ex, body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.parsing = None
        self.in_head = True
        ex.request_done = True
        if ex.discard:
            if ex.response_done:
                self._next_exchange()
            return
        if ex.chunked:
            self._body_piece(ex, http11.CHUNK_END)

    # -- the request flow -------------------------------------------------------------------

    def _prepare_head(self, ex: Exchange, method: bytes) -> None:
        """The head sent upstream: request line, forwarded fields, the proxy's own fields."""
        ctx = self.ctx
        url = ex.url
        if url[:1] == b"/":
            path = url.partition(b"?")[0]
        elif url[:4].lower() == b"http":  # absolute-form (RFC 9112 §3.2.2)
            scheme, sep, rest = url.partition(b"://")
            if not sep or scheme.lower() not in (b"http", b"https"):
                raise ClientError("invalid request target")
            authority, slash, rest = rest.partition(b"/")
            url = slash + rest if slash else b"/"
            path = url.partition(b"?")[0]
            # The target's authority replaces Host (RFC 9112 §3.2.2).
            ex.parts = [p for i in range(1, len(ex.parts), 4)
                        if ex.parts[i].lower() != b"host" for p in ex.parts[i:i + 4]]
            ex.parts.insert(0, b"")
            ex.parts += (b"Host", _COLON, authority, _CRLF)
            ex.host = authority
        else:
            path = url
        ex.path = path.decode("latin-1")
        if ex.connection is not None:
            self._drop_connection_options(ex)
        parts = ex.parts
        parts[0] = method + b" " + url + _HTTP11
        xff = self.peer if ex.xff is None else ex.xff + b", " + self.peer
        parts += (b"X-Forwarded-For: ", xff, _CRLF, _PROTO_HTTP)
        host = ex.host
        if host is None:
            host = ex.host = ctx.listen_hosts[self.listen_key]
            parts += (b"Host: ", host, _CRLF)
        parts += (b"X-Forwarded-Host: ", host, _CRLF)
        if ex.request_id is None:
            ex.request_id = ctx.next_request_id()
            parts += (ctx.request_id_field, ex.request_id, _CRLF)
        if ex.chunked:
            parts.append(_CHUNKED)
        if ex.upgrade and ex.upgrade_value is not None:
            parts += (b"Connection: upgrade\r\nUpgrade: ", ex.upgrade_value, _CRLF)
        else:
            ex.upgrade = False
        parts.append(_CRLF)
        ex.head = b"".join(parts)

    @staticmethod
    def _drop_connection_options(ex: Exchange) -> None:
        """RFC 9110 §7.6.1: the fields a Connection field names are hop-by-hop too."""
        options = http11.connection_tokens(ex.connection or b"")
        options -= {b"close", b"keep-alive", b"upgrade"}
        if options:
            parts = ex.parts
            kept = [parts[0]]
            for i in range(1, len(parts), 4):  # forwarded fields: (name, ": ", value, CRLF)
                if parts[i].lower() not in options:
                    kept += parts[i:i + 4]
            ex.parts = kept

    def _dispatch(self, ex: Exchange) -> None:
        """Route the request and start its first try."""
        self.requests += 1
        table = self.ctx.runtime.tables.get(self.listen_key)
        # (the host is always set by now, and virtual_host falls back to the default)
        vhost = table.virtual_host(ex.host.decode("latin-1")) if table is not None and ex.host \
            else None
        target = vhost.match(ex.path) if vhost is not None else None
        if vhost is not None:
            ex.vhost_name = vhost.name
        if target is None:
            self._reply(ex, NoRoute())
            return
        ex.target = target
        if ex.expect_continue and ex.has_body and not ex.http10:
            # Answered here, Expect stripped (Envoy's default): the member sees a plain request.
            self.transport.write(http11.CONTINUE_100)
        self._try(ex)

    def _try(self, ex: Exchange) -> None:
        pool = ex.target.pool  # type: ignore[union-attr]
        now = self.loop.time()
        member = pool.pick(ex.tried or (), now)
        if member is None:
            self._reply(ex, UpstreamConnectError("every try failed") if ex.attempts
                        else NoHealthyMember(f"no member of {pool.name} is available"))
            return
        ex.attempts += 1
        ex.member = member
        ex.member_address = member.address
        member.active += 1
        member.requests += 1
        self.deadline = now + pool.read_timeout
        self.deadline_kind = EXCHANGE
        conn = pool.take_idle(member, now)
        if conn is not None:
            self._send(ex, conn, True)
        else:
            self._open(ex, pool, member)

    def _open(self, ex: Exchange, pool: Pool, member: MemberState) -> None:
        """Connect to ``member`` for ``ex``; a newer generation abandons an older connect."""
        ex.generation += 1
        self.loop.create_task(self._connect(ex, pool, member, ex.generation))

    async def _connect(self, ex: Exchange, pool: Pool, member: MemberState,
                       generation: int) -> None:
        loop = self.loop
        try:
            async with asyncio.timeout(pool.connect_timeout):
                _, conn = await loop.create_connection(
                    partial(UpstreamConnection, pool, member), member.host, member.port)
        except (OSError, TimeoutError) as exc:
            if ex.aborted or ex.generation != generation or ex.response_started:
                return
            self._connect_failed(ex, pool, member, exc)
            return
        if ex.aborted or ex.generation != generation or ex.response_done:
            pool.put_idle(member, conn, loop.time())
            return
        self._send(ex, conn, False)

    def _connect_failed(self, ex: Exchange, pool: Pool, member: MemberState,
                        exc: BaseException) -> None:
        pool.record_failure(member, self.loop.time(), connect=True)
        self._release_member(ex)
        self._retry_elsewhere(ex, pool, member,
                              UpstreamConnectError(f"{member.address}: {exc or 'timed out'}"))

    def _retry_elsewhere(self, ex: Exchange, pool: Pool, failed: MemberState,
                         error: ProxyError) -> None:
        tried = ex.tried
        if tried is None:
            tried = ex.tried = []
        tried.append(failed)
        if ex.attempts < pool.tries:
            pool.stats.count_retry(pool.name)
            self._rewind_body(ex)
            self._try(ex)
        else:
            self._reply(ex, error)

    def _send(self, ex: Exchange, conn: UpstreamConnection, reused: bool) -> None:
        ex.conn = conn
        ex.reused = reused
        ex.upstream_start = self.loop.time()
        buffer = ex.buffer
        if buffer:
            ex.buffer = None
            ex.buffered = 0
            conn.send(self, b"".join((ex.head, *buffer)), ex.method == b"HEAD")
            self._resume_reading(PAUSE_BUFFER)
        else:
            conn.send(self, ex.head, ex.method == b"HEAD")
        if self.write_paused and conn.transport is not None:
            conn.transport.pause_reading()

    def _body_piece(self, ex: Exchange, piece: bytes) -> None:
        """A piece of request body, framed for the member: sent now or held until connected."""
        if ex.target is not None:
            self.deadline = self.loop.time() + ex.target.pool.read_timeout
        if ex.replay_bytes <= REPLAY_LIMIT:
            replay = ex.replay
            if replay is None:
                replay = ex.replay = []
            replay.append(piece)
            ex.replay_bytes += len(piece)
            if ex.replay_bytes > REPLAY_LIMIT:
                ex.replay = None  # too large to keep: no retry once sent
        conn = ex.conn
        if conn is not None and conn.transport is not None:
            conn.transport.write(piece)
            return
        buffer = ex.buffer
        if buffer is None:
            buffer = ex.buffer = []
        buffer.append(piece)
        ex.buffered += len(piece)
        if ex.buffered > BUFFER_LIMIT:
            self._pause_reading(PAUSE_BUFFER)

    # -- upstream callbacks ------------------------------------------------------------------

    def upstream_head(self, conn: UpstreamConnection, status: int) -> None:
        ex = self.exchanges[0]
        if status < 200:
            if status == 101:
                if not ex.upgrade:
                    conn.close()
                    self._upstream_failed(ex, conn, UpstreamProtocolError("unexpected 101"))
                    return
                ex.status = 101
                ex.response_started = True
                head = [http11.status_line(101, conn.reason)]
                for name, value in conn.headers:
                    head += (name, _COLON, value, _CRLF)
                head += (b"Upgrade: ", conn.upgrade or ex.upgrade_value or b"", _CRLF)
                head.append(b"Connection: upgrade\r\n\r\n")
                self.transport.write(b"".join(head))
            elif status != 100 and not ex.http10:
                head = [http11.status_line(status, conn.reason)]
                for name, value in conn.headers:
                    head += (name, _COLON, value, _CRLF)
                head.append(_CRLF)
                self.transport.write(b"".join(head))
            return
        ex.status = status
        ex.response_started = True
        head = [http11.status_line(status, conn.reason)]
        for name, value in conn.headers:
            head += (name, _COLON, value, _CRLF)
        framing = conn.framing
        if framing == FRAMING_LENGTH or (framing == FRAMING_NONE and status != 204
                                         and conn.content_length is not None):
            head += (b"Content-Length: ", conn.content_length or b"0", _CRLF)
        elif framing != FRAMING_NONE:
            if ex.http10:
                ex.keep_alive = False  # the body ends when the connection does
            else:
                ex.response_chunked = True
                head.append(_CHUNKED)
        if ex.upgrade:
            ex.keep_alive = False  # the request parser is past an upgrade: nothing more to read
        if not self._keep_alive_after(ex):
            ex.keep_alive = False
            head.append(_CLOSE)
        elif ex.http10:
            head.append(_KEEP_ALIVE)
        head.append(_CRLF)
        # Held until the body (or the end of this read from the member) joins it: one write
        # per response instead of two, and on loopback a write is most of a request's cost.
        self.out = [b"".join(head)]

    def upstream_body(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._tunnel_progress()
            self.transport.write(data)
            return
        ex = self.exchanges[0]
        self.deadline = self.loop.time() + ex.target.pool.read_timeout  # type: ignore[union-attr]
        ex.bytes_sent += len(data)
        out = self.out
        if out is None:
            out = self.out = []
        if ex.response_chunked:
            out += (b"%x\r\n" % len(data), data, _CRLF)
        else:
            out.append(data)

    def upstream_flush(self) -> None:
        """The end of one read from the member: write what it produced, at once."""
        out = self.out
        if out is not None:
            self.out = None
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def upstream_complete(self, conn: UpstreamConnection) -> None:
        ex = self.exchanges[0]
        if ex.response_chunked:
            out = self.out
            if out is None:
                out = self.out = []
            out.append(http11.CHUNK_END)
        self.upstream_flush()
        member = ex.member
        pool = ex.target.pool  # type: ignore[union-attr]
        ex.conn = None
        conn.owner = None
        if self.write_paused and conn.transport is not None:
            conn.transport.resume_reading()
        if conn.keep_alive and ex.request_done and member is not None:
            pool.put_idle(member, conn, self.loop.time())
        else:
            conn.close()
        if member is not None:
            member.record_success()
        self._release_member(ex)
        self._response_finished(ex)

    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None:
        self.upstream_flush()
        ex = self.exchanges[0]
        pool = ex.target.pool  # type: ignore[union-attr]
        self.tunnel = conn
        self._release_member(ex)
        ex.response_done = True
        self._account(ex)
        if data:
            self.transport.write(data)
        buffer = ex.buffer
        if buffer and conn.transport is not None:
            conn.transport.writelines(buffer)
        ex.buffer = None
        self.deadline = self.loop.time() + pool.tunnel_idle
        self.deadline_kind = TUNNEL
        self.read_paused = 0
        self.transport.resume_reading()

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        if self.tunnel is conn:
            self.tunnel = None
            self.transport.close()
            return
        if not self.exchanges or self.exchanges[0].conn is not conn:
            return
        ex = self.exchanges[0]
        ex.conn = None
        conn.owner = None
        pool = ex.target.pool  # type: ignore[union-attr]
        member = ex.member
        if (ex.reused and not ex.stale_retried and member is not None
                and self._may_resend(ex, pool, conn)):
            # A pooled connection the member had closed: not the member's fault; try afresh.
            ex.stale_retried = True
            pool.stats.count_retry(pool.name)
            self._rewind_body(ex)
            self._open(ex, pool, member)
            return
        self._upstream_failed(ex, conn, UpstreamProtocolError(error))

    def _upstream_failed(self, ex: Exchange, conn: UpstreamConnection,
                         error: ProxyError) -> None:
        pool = ex.target.pool  # type: ignore[union-attr]
        member = ex.member
        ex.conn = None
        if member is not None and not (ex.reused and not conn.bytes_received):
            # (a pooled connection closed under a new request is the keep-alive race, not a
            # failing member)
            pool.record_failure(member, self.loop.time())
        self._release_member(ex)
        if ex.response_started:
            self._abort_response(ex, "UC")  # upstream connection terminated mid-response
        elif member is not None and self._may_resend(ex, pool, conn):
            self._retry_elsewhere(ex, pool, member, error)
        else:
            self._reply(ex, error)

    @staticmethod
    def _may_resend(ex: Exchange, pool: Pool, conn: UpstreamConnection) -> bool:
        """Nothing came back, and the request may be sent again (RFC 9110 §9.2.2): an
        idempotent method (or the group allows any) and a body we still have."""
        return (not conn.bytes_received and not ex.response_started
                and (ex.method in http11.IDEMPOTENT or pool.retry_non_idempotent)
                and (ex.replay is not None or not ex.has_body))

    @staticmethod
    def _rewind_body(ex: Exchange) -> None:
        if ex.replay is not None:
            ex.buffer = list(ex.replay)

    def _abort_response(self, ex: Exchange, flag: str) -> None:
        """A response already on its way cannot be replaced: end it by closing."""
        self.upstream_flush()
        ex.flag = flag
        ex.response_done = True
        self._account(ex)
        self.transport.close()

    def pause_client_reading(self) -> None:
        self._pause_reading(PAUSE_UPSTREAM)

    def resume_client_reading(self) -> None:
        self._resume_reading(PAUSE_UPSTREAM)

    # -- ending an exchange ------------------------------------------------------------------

    def _keep_alive_after(self, ex: Exchange) -> bool:
        return (ex.keep_alive and not self.ctx.draining
                and self.requests < self.ctx.settings.keepalive_requests
                and (ex.request_done or not ex.has_body))

    def _reply(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with one of the proxy's own responses."""
        if ex.response_started:
            self.upstream_flush()
            self.transport.close()
            return
        ex.status = error.status
        ex.flag = error.flag
        close = error.close or not self._keep_alive_after(ex)
        if close:
            ex.keep_alive = False
        self.transport.write(http11.CANNED[error.status, close])
        ex.response_started = True
        self._response_finished(ex)

    def _response_finished(self, ex: Exchange) -> None:
        ex.response_done = True
        self._account(ex)
        if not ex.keep_alive:
            self.exchanges.clear()
            self.transport.close()
            return
        if ex.request_done:
            self._next_exchange()
        else:
            ex.discard = True  # on_message_complete moves on once the body is read

    def _next_exchange(self) -> None:
        exchanges = self.exchanges
        if exchanges and exchanges[0].response_done:
            exchanges.popleft()
        self._resume_reading(PAUSE_PIPELINE | PAUSE_UPSTREAM)
        if exchanges:
            nxt = exchanges[0]
            if nxt.head_done:
                self._dispatch(nxt)
            else:
                self.deadline = nxt.start + self.ctx.settings.header_timeout
                self.deadline_kind = HEADER
            return
        if self.ctx.draining:
            self.transport.close()
            return
        self.deadline = self.loop.time() + self.ctx.settings.keepalive_timeout
        self.deadline_kind = IDLE

    def _account(self, ex: Exchange) -> None:
        ctx = self.ctx
        target = ex.target
        now = self.loop.time()
        if target is not None:
            target.latency.observe(now - ex.start)
            ctx.stats.count_request(ex.vhost_name, target.pool.name, ex.member_address,
                                    ex.status)
        else:
            ctx.stats.count_request(ex.vhost_name, "", "", ex.status)  # (client errors: _fail)
        if ctx.access_log is not None:
            ctx.access_log.log(self.peer, ex, now)

    def _fail(self, error: ProxyError) -> None:
        """The request stream is broken (a rule or a limit): answer if we still can, close."""
        self.ctx.stats.count_client_error(error.status)
        ex = self.parsing or (self.exchanges[-1] if self.exchanges else None)
        self.in_head = False
        if ex is not None and ex.response_started:
            self.transport.close()
            return
        if ex is not None and self.exchanges and self.exchanges[0] is not ex:
            self.transport.close()  # a pipelined request broke: drop the rest
            return
        if ex is not None:
            ex.status = error.status
            ex.flag = error.flag
            ex.response_started = ex.response_done = True
            self._detach_upstream(ex)
            if ex.head_done:
                self._account(ex)
        self.exchanges.clear()
        self.transport.write(http11.CANNED[error.status, True])
        self._linger()

    def _linger(self) -> None:
        """Close after an error answer without losing it (RFC 9112 §9.6).

        Closing while the client still sends makes the kernel reset the connection, and a reset
        can destroy the answer before the client reads it. So: shut our side, read and drop
        what still comes, close when the client does or after LINGER_TIMEOUT (nginx's
        lingering close).
        """
        self.lingering = True
        self.parsing = None
        transport = self.transport
        if transport.is_closing():
            return
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.read_paused = 0
        transport.resume_reading()
        self.deadline = self.loop.time() + LINGER_TIMEOUT
        self.deadline_kind = IDLE

    # -- time --------------------------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        self.upstream_flush()
        kind = self.deadline_kind
        self.deadline = INFINITY
        if kind in (IDLE, TUNNEL):
            self.transport.close()
        elif kind == HEADER:
            if self.parsing is not None and not self.parsing.head_done:
                self._fail(RequestTimeout("request head not complete in time"))
            else:
                self.transport.close()
        elif kind == EXCHANGE and self.exchanges:
            ex = self.exchanges[0]
            if not ex.request_done:
                self._fail(RequestTimeout("request body stalled"))
                return
            if ex.member is not None:
                ex.target.pool.record_failure(ex.member, now)  # type: ignore[union-attr]
            self._detach_upstream(ex)
            ex.generation += 1  # a connect still in flight is abandoned
            if ex.response_started:
                self._abort_response(ex, "UT")
            else:
                self._reply(ex, UpstreamTimeout("no response in time"))

    def _tunnel_progress(self) -> None:
        conn = self.tunnel
        if conn is not None:
            self.deadline = self.loop.time() + conn.pool.tunnel_idle

    # -- helpers -----------------------------------------------------------------------------

    def _active_upstream(self) -> UpstreamConnection | None:
        if self.tunnel is not None:
            return self.tunnel
        return self.exchanges[0].conn if self.exchanges else None

    @classmethod
    def _detach_upstream(cls, ex: Exchange) -> None:
        """Drop the exchange's upstream connection (not reusable: mid-exchange) and member."""
        conn = ex.conn
        if conn is not None:
            ex.conn = None
            conn.close()  # also clears its owner
        cls._release_member(ex)

    @staticmethod
    def _release_member(ex: Exchange) -> None:
        member = ex.member
        if member is not None:
            member.active -= 1
            ex.member = None

    def _pause_reading(self, reason: int) -> None:
        if not self.read_paused:
            self.transport.pause_reading()
        self.read_paused |= reason

    def _resume_reading(self, reasons: int) -> None:
        if self.read_paused & reasons:
            self.read_paused &= ~reasons
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def close_if_idle(self) -> None:
        """Graceful drain: close now if no request is in progress."""
        if not self.exchanges and self.tunnel is None:
            self.transport.close()
