"""The client side of the proxy: one ``ClientProtocol`` per client connection.

Request flow (DESIGN.md): parse the head with httptools under limits and the HTTP rules → route
(host, then best path rule) → pick a member (balancer over usable members) → reuse an idle
upstream connection or open one → stream both ways → account → keep the client connection alive.

Read top to bottom: the asyncio interface, then the parser callbacks, which only record into the
``Exchange`` (``exchange.py``) and hand a finished head to ``_dispatch``, then how an exchange
ends. The rest lives beside it, mixed in: the HTTP rules (``rules.py``) and the head sent
upstream (``head.py``); tries, retries and the request body (``forward.py``); the response
framed for the client (``relay.py``); flow control, deadlines, lingering close and the bytes
held after an Upgrade request (``flow.py``).

Exchanges queue in arrival order (HTTP/1.1 pipelining): only the first is forwarded; the bodies
of later ones are buffered, and reading pauses when the queue or the buffer grows.

No byte crosses from one exchange to another (RFC 9112 §9.3, §9.6). Every request gets exactly
one answer, in order: a request that breaks a rule behind others in the queue keeps its error
(``Exchange.error``) until the ones before it are answered, then gets its 400 and the close.
Once a request ends the connection (``Connection: close``, HTTP/1.0, an error), nothing more is
parsed (``stopped``). Bytes after an Upgrade request are held (``held``) until the member
answers 101; they never reach a member that did not agree to switch protocols.

The edge: every way in (``data_received``, ``connection_lost``, ``on_deadline``, the member
connection's callbacks and the connect task) is guarded. An exception that is not a ``ProxyError``
is a bug: logged once with its traceback, counted (``slb_internal_errors_total``), answered 500
if no response byte was sent, and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)

from slb.errors import (
    ClientError,
    HeadersTooLarge,
    Misdirected,
    NoRoute,
    ProxyError,
    RedirectToHttps,
    RouteAnswer,
    UriTooLong,
)
from slb.proxy import fields, head, rules
from slb.proxy.exchange import Exchange
from slb.proxy.fields import COLON, CRLF, OTHER, WATCHED
from slb.proxy.flow import (
    HEADER,
    IDLE,
    INFINITY,
    PAUSE_PIPELINE,
    PAUSE_UPSTREAM,
    FlowControl,
)
from slb.proxy.forward import Forwarding
from slb.proxy.relay import ResponseRelay
from slb.proxy.tls import established

if TYPE_CHECKING:
    from slb.proxy.context import ProxyContext
    from slb.proxy.upstream import UpstreamConnection

log = logging.getLogger("slb.proxy")

PIPELINE_LIMIT = 16  # queued requests before reading from the client pauses


class _StopParsing(Exception):
    """Raised from a parser callback once the connection takes no more requests."""


class ClientProtocol(FlowControl, Forwarding, ResponseRelay, asyncio.Protocol):
    __slots__ = (
        "ctx", "deadline", "deadline_kind", "exchanges", "head_bytes", "held", "in_head",
        "lingering", "listen_key", "loop", "out", "parser", "parsing", "peer", "proto_field",
        "read_paused", "requests", "rt", "stopped", "tls_served", "tls_version", "transport",
        "tunnel", "upgrade_body", "write_paused",
    )

    def __init__(self, ctx: ProxyContext, listen_key: str) -> None:
        self.ctx = ctx
        self.rt = ctx.runtime  # a request's own, bound in on_message_begin (a reload swaps ctx's)
        self.loop = ctx.loop
        self.listen_key = listen_key
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.exchanges: deque[Exchange] = deque()
        self.parsing: Exchange | None = None  # the exchange the parser is filling
        self.deadline = INFINITY
        self.deadline_kind = IDLE
        self.in_head = True
        self.head_bytes = 0
        self.read_paused = 0  # PAUSE_* reasons (flow.py)
        self.write_paused = False
        self.requests = 0
        self.peer = b""
        self.tunnel: UpstreamConnection | None = None
        self.lingering = False
        self.stopped = False  # no more requests are parsed (see the module docstring)
        self.held: list[bytes] | None = None  # client bytes after an Upgrade request
        self.upgrade_body = 0  # body bytes of the Upgrade request still to come
        self.out: list[bytes] | None = None  # response bytes held for one write
        self.proto_field = head.PROTO_HTTP  # the X-Forwarded-Proto field sent upstream
        self.tls_served: frozenset[str] | None = None  # virtual servers of its certificate
        self.tls_version = "-"

    # -- asyncio.Protocol interface ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0].encode() if peer else b"unknown"
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:  # (the transport has done the handshake: slb.proxy.tls)
            self.proto_field, self.tls_version, self.tls_served = established(tls)
        ctx = self.ctx
        ctx.opened(self)
        self.deadline = self.loop.time() + ctx.runtime.limits.header_timeout
        self.deadline_kind = IDLE

    def data_received(self, data: bytes) -> None:
        # (the edge's try is inline, not a wrapper call: a call per read costs ~0.1 us)
        try:
            if self.lingering:
                return
            tunnel = self.tunnel
            if tunnel is not None:
                self._tunnel_progress()
                if tunnel.transport is not None:
                    tunnel.transport.write(data)
                return
            if self.held is not None:
                self._upgrade_data(data)
                return
            if self.stopped:
                return  # (read before the pause took effect) not parsed: see stopped
            if self.in_head:
                if self.head_bytes > self.rt.limits.head_limit:
                    self._fail(HeadersTooLarge("request head too large"))
                    return
                self.head_bytes += len(data)
            try:
                self.parser.feed_data(data)
            except HttpParserUpgrade as upgrade:
                self._upgrade_requested(data[upgrade.args[0]:])
            except HttpParserCallbackError as exc:
                error = exc.__context__
                if isinstance(error, ProxyError):
                    self._fail(error)
                elif not isinstance(error, _StopParsing):
                    raise error or exc from None
            except HttpParserError as exc:
                if not self.stopped:
                    self._fail(ClientError(str(exc)))
                # (after a request that ends the connection llhttp refuses what follows; the
                # answers already due are still given)
        except Exception as exc:  # the edge: see the module docstring
            self.internal_error(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        ctx = self.ctx
        ctx.closed(self)
        self.deadline = INFINITY
        try:
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
                    self._account(ex, self.loop.time())
        except Exception as error:
            self.internal_error(error)

    def on_deadline(self, now: float) -> None:
        """Called by the sweeper once ``deadline`` has passed (flow.py says what it does)."""
        self._guarded(self._deadline_passed, now)

    # -- parser callbacks (record, then hand over) ------------------------------------------

    def on_message_begin(self) -> None:
        if self.stopped:
            raise _StopParsing
        rt = self.rt = self.ctx.runtime
        ex = Exchange(self.loop.time(), rt.request_fields)
        self.parsing = ex
        exchanges = self.exchanges
        exchanges.append(ex)
        if len(exchanges) == 1:
            self.deadline = ex.start + rt.limits.header_timeout
            self.deadline_kind = HEADER
        elif len(exchanges) > PIPELINE_LIMIT:
            self._pause_reading(PAUSE_PIPELINE)

    def on_url(self, url: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.url += url
        if len(ex.url) > self.rt.limits.max_uri_bytes:
            raise UriTooLong("request target too long")  # RFC 9112 §3, 414

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.header_count += 1
        ex.header_bytes += len(name) + len(value) + 4
        limits = self.rt.limits
        if ex.header_count > limits.max_headers or ex.header_bytes > limits.max_header_bytes:
            raise HeadersTooLarge("request header fields too large")  # RFC 6585 §5, 431
        kind = ex.fields.get(name)  # (as sent; then lowercased, once per spelling)
        if kind is None:
            kind = fields.learn(ex.fields, name)
        if kind == OTHER:
            ex.parts += (name, COLON, value, CRLF)
        elif kind == WATCHED:
            ex.watched = True
            ex.parts += (name, COLON, value, CRLF)
        elif kind == fields.HOST:
            rules.reject_second_host(ex.host)
            ex.host = value
            ex.parts += (name, COLON, value, CRLF)
        elif kind == fields.CONTENT_LENGTH:
            ex.content_length = int(value)  # llhttp has checked the digits and duplicates
            ex.parts += (name, COLON, value, CRLF)
        elif kind == fields.TRANSFER_ENCODING:
            ex.te = value if ex.te is None else ex.te + b"," + value
            ex.chunked = True
        elif kind == fields.CONNECTION:
            ex.connection = value if ex.connection is None else ex.connection + b"," + value
        elif kind == fields.UPGRADE:
            ex.upgrade_value = value
        elif kind == fields.EXPECT:
            ex.expect_continue = value.strip().lower() == b"100-continue"
        elif kind == fields.X_FORWARDED_FOR:
            ex.xff = value if ex.xff is None else ex.xff + b", " + value
        elif kind == fields.REQUEST_ID:
            ex.request_id = value
            ex.parts += (name, COLON, value, CRLF)
        elif kind == fields.HOP:
            ex.hop = True  # dropped (X_FORWARDED_SET fields too)

    def on_headers_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        parser = self.parser
        rt = self.rt
        self.in_head = False
        self.head_bytes = 0
        ex.method = parser.get_method()
        ex.keep_alive = keep_alive = parser.should_keep_alive()
        # (llhttp keeps alive with no Connection/Proxy-Connection for 1.1 only: 0.33 us saved)
        version = "1.1" if keep_alive and ex.connection is None and not ex.hop \
            else parser.get_http_version()
        ex.http10 = version == "1.0"
        # (no Upgrade field, no upgrade: CONNECT, llhttp's other case, is refused by the rules)
        ex.upgrade = ex.upgrade_value is not None and parser.should_upgrade()
        rules.check_head(ex, version, rt.limits.max_body_bytes)
        ex.has_body = ex.chunked or ex.content_length > 0
        head.prepare_request_head(ex, self.peer, rt.listen_hosts[self.listen_key],
                                  rt.request_id_field, self.ctx.new_request_id, self.proto_field)
        ex.head_done = True
        if ex is self.exchanges[0]:
            self._dispatch(ex)

    def on_body(self, body: bytes) -> None:
        ex = self.parsing
        assert ex is not None
        ex.body_received += len(body)
        rules.reject_large_body(ex.body_received, self.rt.limits.max_body_bytes)
        if ex.discard:
            return
        if ex.chunked:
            self._body_piece(ex, b"%x\r\n" % len(body))
            self._body_piece(ex, body)
            self._body_piece(ex, CRLF)
        else:
            self._body_piece(ex, body)

    def on_message_complete(self) -> None:
        ex = self.parsing
        assert ex is not None
        self.parsing = None
        self.in_head = True
        ex.request_done = True
        if not ex.keep_alive:
            self._stop()  # the client said this is its last request (RFC 9112 §9.6)
        if ex.discard:
            if ex.response_done:
                self._next_exchange(self.loop.time())
            return
        if ex.chunked:
            self._body_piece(ex, fields.CHUNK_END)

    # -- the request flow -------------------------------------------------------------------

    def _dispatch(self, ex: Exchange) -> None:
        """Route the request and start its first try."""
        self.requests += 1
        table = self.rt.tables.get(self.listen_key)
        # (the host is always set by now, and virtual_host falls back to the default)
        vhost = table.lookup(ex.host) if table is not None and ex.host else None
        if vhost is not None:
            ex.vhost_name = vhost.name
            served = self.tls_served
            if served is not None and vhost.name not in served:
                self._reply(ex, Misdirected())  # the certificate does not speak for this host
                return
            if vhost.redirect_port is not None:
                self._reply(ex, RedirectToHttps(head.https_location(ex, vhost.redirect_port)))
                return
        route = vhost.match(ex.path, ex, self.peer) if vhost is not None else None
        if route is None:
            self._reply(ex, NoRoute())
            return
        actions = route.actions
        if actions is None:
            target = route.target
        else:  # a route with rules (issue 13): it may answer itself
            try:
                target = actions.apply(ex, self.peer, self.loop.time(), self.ctx.stats)
            except RouteAnswer as answer:
                self._reply(ex, answer)
                return
        ex.target = target
        if ex.expect_continue and ex.has_body and not ex.http10:
            # Answered here, Expect stripped (Envoy's default): the member sees a plain request.
            self.transport.write(fields.CONTINUE_100)
        self._try(ex)

    # -- ending an exchange ------------------------------------------------------------------

    def _reply(self, ex: Exchange, error: ProxyError) -> None:
        """Answer with one of the proxy's own responses."""
        if ex.response_started:
            self.upstream_flush()
            self.transport.close()
            return
        ex.status, ex.flag = error.status, error.flag
        self.ctx.answers.answered(self.peer, ex, error)
        close = error.close or not self._keep_alive_after(ex)
        if close:
            ex.keep_alive = False
        self.transport.write(head.canned(ex, error.status, close, error.fields))
        ex.response_started = True
        self._response_finished(ex, self.loop.time())

    def _response_finished(self, ex: Exchange, now: float) -> None:
        ex.response_done = True
        self._account(ex, now)
        if not ex.keep_alive:
            self.exchanges.clear()
            if self.stopped:
                self._linger()  # the client may still be sending: do not reset the answer
            else:
                self.transport.close()
            return
        if ex.request_done:
            self._next_exchange(now)
        else:
            ex.discard = True  # on_message_complete moves on once the body is read

    def _next_exchange(self, now: float) -> None:
        # (``now``: the caller's clock read; one loop.time() here and in _account, not three)
        exchanges = self.exchanges
        if exchanges and exchanges[0].response_done:
            exchanges.popleft()
        if self.read_paused:  # (tested here: no call while reading goes on, ~0.05 us)
            self._resume_reading(PAUSE_PIPELINE | PAUSE_UPSTREAM)
        if exchanges:
            nxt = exchanges[0]
            if nxt.error is not None:
                self._answer_error(nxt)
            elif nxt.head_done:
                self._dispatch(nxt)
            else:
                self.deadline = nxt.start + self.rt.limits.header_timeout
                self.deadline_kind = HEADER
            return
        if self.stopped:
            self._linger()  # (bytes after an Upgrade request nobody switched to, unread)
            return
        if self.ctx.draining:
            self.transport.close()
            return
        self.deadline = now + self.rt.limits.keepalive_timeout
        self.deadline_kind = IDLE

    def _account(self, ex: Exchange, now: float) -> None:
        ctx = self.ctx
        target = ex.target
        if target is not None:
            target.latency.observe(now - ex.start)
            ctx.stats.count_request(ex.vhost_name, target.pool.name, ex.member_address,
                                    ex.status)
        else:
            ctx.stats.count_request(ex.vhost_name, "", "", ex.status)  # (client errors: _fail)
        access_log = self.rt.access_log
        if access_log is not None:
            access_log.log(self.peer, ex, now, self.tls_version)

    def _fail(self, error: ProxyError) -> None:
        """The request stream is broken (a rule or a limit): answer it in its turn, close.

        The request that broke (or, for bytes that never became a request, a new exchange)
        keeps the error; requests queued before it are answered first (RFC 9112 §9.3).
        """
        self.ctx.stats.count_client_error(error.status)
        self.in_head = False
        ex = self.parsing
        self.parsing = None
        exchanges = self.exchanges
        self._stop()
        if ex is not None and ex.response_done:
            # Already answered (its body was being read past an early answer): the rest of
            # the stream cannot be trusted, and this request must not get a second answer.
            exchanges.clear()
            self._linger()
            return
        if ex is None:
            ex = Exchange(self.loop.time(), self.rt.request_fields)
        if ex not in exchanges:
            exchanges.append(ex)
        ex.error = error
        if ex is exchanges[0]:
            self._answer_error(ex)

    def _answer_error(self, ex: Exchange) -> None:
        """Answer a broken request with its error, then close without losing the answer."""
        error = ex.error
        assert error is not None
        if ex.response_started:
            self.upstream_flush()
            self.transport.close()  # a response is on its way: it cannot be replaced
            return
        ex.status, ex.flag = error.status, error.flag
        self.ctx.answers.answered(self.peer, ex, error)
        ex.response_started = ex.response_done = True
        ex.generation += 1  # a connect still in flight is abandoned
        self._detach_upstream(ex)
        if ex.head_done:
            self._account(ex, self.loop.time())
        self.exchanges.clear()
        self.transport.write(head.canned(ex, error.status, True))
        self._linger()

    # -- the edge ----------------------------------------------------------------------------

    def _guarded(self, method: Callable[..., Any], *args: Any) -> None:
        """Call ``method`` as an entry point: a bug in it is handled by ``internal_error``."""
        try:
            method(*args)
        except Exception as exc:
            self.internal_error(exc)

    def internal_error(self, exc: BaseException) -> None:
        """A bug on the request path (see the module docstring): log, count, 500 or close."""
        log.error("internal error on the request path (client %s)", self.peer.decode(),
                  exc_info=exc)
        self.ctx.stats.count_internal_error()
        try:
            self.upstream_flush()
            ex = self.exchanges[0] if self.exchanges else None
            self.stopped = True
            self.held = None
            if ex is None or ex.response_started or self.transport.is_closing():
                self.transport.close()
                return
            ex.status = 500
            ex.flag = "IE"
            ex.response_started = ex.response_done = True
            self._detach_upstream(ex)
            self.exchanges.clear()
            if ex.head_done:
                self._account(ex, self.loop.time())
            self.transport.write(head.canned(ex, 500, True))
            self._linger()
        except Exception:  # the state is not to be trusted: no second attempt
            log.exception("internal error while answering an internal error")
            self.transport.abort()
