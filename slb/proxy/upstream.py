"""One keep-alive HTTP/1.1 connection from the proxy to a member.

An ``UpstreamConnection`` carries one request at a time for its ``owner`` (the client connection
whose request it serves) and parses the response with httptools, handing each piece to the owner:
``upstream_head``, ``upstream_body``, ``upstream_read_end`` at the end of a read that did not
complete the response, ``upstream_complete``, and ``upstream_lost`` if the connection dies.
Between requests it sits in its member's idle list with no owner; bytes or EOF arriving then
close it and take it off the list, so a connection the member closed is never used to fail a
request.

Framing quirks llhttp cannot know on its own: a response to HEAD has no body whatever its
Content-Length says (RFC 9112 §6.3 (1)); the parse is stopped at the end of the head and a fresh
parser serves the next response. A response with neither Content-Length nor chunked ends when the
member closes (§6.3 (8)), and so does one whose last transfer coding is not chunked (§6.3 (7)).

One response, one exchange (RFC 9112 §9.3): the end of a response is recorded by the parser
callbacks but handed to the owner only once the whole read has been parsed. So the owner, which
may send its next pipelined request on this connection at once, never does so while bytes of
this read are still unparsed; and a read that holds bytes beyond the response's framing (a
second response, a body after 204 or after a HEAD response) marks the connection as not
reusable: those bytes are dropped with it and never reach a client. A response head is limited
(``head_limit``): a member sending more is answered 502 and the connection closed. The fields
are counted one by one only once the reads since the request (``head_bytes``) pass the limit:
below it the head, which they hold, cannot be over it. Trailer fields are dropped unread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpResponseParser,
)

from slb.proxy import fields, rules
from slb.proxy.fields import COLON, CRLF, OTHER, RESPONSE_SPELLINGS

if TYPE_CHECKING:
    from slb.balancing.member import MemberState
    from slb.balancing.pool import Pool


class UpstreamOwner(Protocol):
    def upstream_head(self, conn: UpstreamConnection, status: int) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_complete(self, conn: UpstreamConnection) -> None: ...
    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None: ...
    def upstream_read_end(self) -> None: ...
    def internal_error(self, exc: BaseException) -> None: ...
    def pause_client_reading(self) -> None: ...
    def resume_client_reading(self) -> None: ...


class _StopAtHead(Exception):
    """Raised from the head callback of a bodiless response to stop llhttp there."""


class _Surplus(Exception):
    """Raised when a second response starts in the read that ended the first."""


class _HeadTooLarge(Exception):
    """Raised when a response head grows past ``head_limit``."""


# response framing
FRAMING_LENGTH = 0
FRAMING_CHUNKED = 1
FRAMING_CLOSE = 2
FRAMING_NONE = 3


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_carry", "_counting", "_field_bytes", "_head_seen", "_heads_in_read", "_tail",
        "bytes_received", "closed", "codings", "complete", "connection_options",
        "content_length", "framing",
        "head_bytes", "head_limit", "head_only", "headers", "idle_since", "keep_alive", "member",
        "owner", "parser", "pool", "reason", "requests", "stats", "transfer_encoding",
        "transport", "tunnel", "upgrade",
    )

    def __init__(self, pool: Pool, member: MemberState) -> None:
        self.pool = pool
        self.member = member
        self.stats = pool.stats
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.owner: UpstreamOwner | None = None
        self.requests = 0
        self.idle_since = 0.0
        self.closed = False
        self.tunnel = False
        self.head_only = False  # the request was HEAD
        self.bytes_received = 0  # of the current response
        self.head_bytes = 0  # bytes read before the final response head was complete
        self._field_bytes = 0  # head bytes of the responses to this request, once _counting
        self._counting = False  # the reads since the request have passed head_limit
        self._tail = 0  # bytes of the head's unfinished last line in the reads so far
        self.head_limit = 65536
        self.complete = False  # the response ended in the read being parsed
        self._heads_in_read = 0  # response heads completed in the read being parsed
        self._carry = b""  # the end of the previous read, to find a head's end across reads
        self.on_message_begin()  # (the response state, reset for each response)

    # -- asyncio.Protocol interface ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=256 * 1024)
        self.stats.upstream_connections += 1

    def data_received(self, data: bytes) -> None:
        # (the edge's try is inline, not a wrapper call: a call per read costs ~0.1 us)
        try:
            owner = self.owner
            if owner is None:
                # A pooled connection got bytes nobody asked for: it cannot be trusted any more.
                self.close()
                return
            self.bytes_received += len(data)
            if self.tunnel:
                owner.upstream_body(data)
                return
            if not self._head_seen:
                head_bytes = self.head_bytes
                if head_bytes > self.head_limit:
                    self._fail(owner, "response head too large")
                    return
                self.head_bytes = head_bytes + len(data)
                if self.head_bytes > self.head_limit and not self._counting:
                    # From here on_header counts: the earlier reads were all head, but for
                    # their unfinished line, which on_header counts when it ends.
                    self._counting = True
                    self._field_bytes = head_bytes - self._tail
            self._heads_in_read = 0
            try:
                self.parser.feed_data(data)
            except HttpParserUpgrade as upgrade:
                self.tunnel = True
                owner.upstream_tunnel(self, data[upgrade.args[0]:])
                return
            except HttpParserCallbackError as exc:
                reason = exc.__context__
                if isinstance(reason, _StopAtHead):
                    self._stopped_at_head(data)
                elif isinstance(reason, _Surplus):
                    self.keep_alive = False  # surplus: dropped with the connection
                elif isinstance(reason, _HeadTooLarge):
                    self._fail(owner, "response head too large")
                    return
                else:
                    raise (reason or exc) from None
            except HttpParserError as exc:
                if not self.complete:
                    self._fail(owner, f"malformed response: {exc}")
                    return
                self.keep_alive = False  # garbage after a complete response
            if not self._head_seen:  # (a head across reads: rare, and this read is all head)
                if self.head_only:
                    self._carry = data[-3:]
                if not self._counting:
                    newline = data.rfind(b"\n")
                    self._tail = self._tail + len(data) if newline < 0 else \
                        len(data) - newline - 1
            if self.complete:
                self.complete = False
                owner = self.owner  # (inline, not a helper: a call less a response, ~0.05 us)
                if owner is not None:
                    owner.upstream_complete(self)
            elif self.owner is not None:
                owner.upstream_read_end()
        except Exception as exc:  # a bug: the owner's edge handles it (slb.proxy.client)
            self._bug(exc)

    def _bug(self, exc: BaseException) -> None:
        owner = self.owner
        self.close()
        if owner is not None:
            owner.internal_error(exc)
        else:
            raise exc

    def _stopped_at_head(self, data: bytes) -> None:
        """llhttp was stopped at the end of a bodiless head: anything after it is surplus."""
        self.parser = HttpResponseParser(self)
        if self.owner is None:
            self.close()  # a response nobody asked for
            return
        self.complete = True
        # The head ends at the n-th CRLFCRLF of this read (heads cannot contain one).
        buffer = self._carry + data
        end = -4
        for _ in range(self._heads_in_read):
            end = buffer.find(b"\r\n\r\n", end + 4)
            if end < 0:
                break
        self._carry = b""
        if end < 0 or end + 4 < len(buffer):
            self.keep_alive = False

    def _fail(self, owner: UpstreamOwner, error: str) -> None:
        self.close()
        owner.upstream_lost(self, error)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._lost(exc)
        except Exception as error:
            self._bug(error)

    def _lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stats.upstream_connections -= 1
        owner = self.owner
        if owner is None:
            idle = self.member.idle
            if self in idle:
                idle.remove(self)
            return
        if self.framing == FRAMING_CLOSE and self._head_seen and not self.tunnel:
            # read-until-close body: the close is the end of the message
            self.keep_alive = False
            owner.upstream_complete(self)
            return
        owner.upstream_lost(self, "connection closed by member" if exc is None else str(exc))

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.pause_client_reading()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.resume_client_reading()

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A response starts: its state is reset (inline, a call less a response: ~0.05 us)."""
        if self.complete:
            raise _Surplus
        self._head_seen = False
        # The forwarded fields as (name, ": ", value, CRLF) quadruples after a slot for the
        # status line: the relay fills the slot and joins, no tuple per field.
        self.headers: list[bytes] = [b""]
        self.reason = b""
        self.content_length: bytes | None = None
        self.transfer_encoding: bytes | None = None
        self.codings = b""  # transfer codings kept for the client (all but a final chunked)
        self.connection_options: bytes | None = None
        self.upgrade: bytes | None = None
        self.framing = FRAMING_CLOSE
        self.keep_alive = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_seen:
            return  # a trailer field: the body is re-framed, trailers are not forwarded
        if self._counting:  # (only past the limit: ~0.1 us a field, nine from nginx)
            self._field_bytes += len(name) + len(value) + 4
            if self._field_bytes > self.head_limit:
                raise _HeadTooLarge
        kind = RESPONSE_SPELLINGS.get(name)  # (as sent; then lowercased, once per spelling)
        if kind is None:
            kind = fields.learn(RESPONSE_SPELLINGS, name)
        if kind == OTHER:
            self.headers += (name, COLON, value, CRLF)
        elif kind == fields.CONTENT_LENGTH:
            self.content_length = value
        elif kind == fields.CONNECTION:
            self.connection_options = value
        elif kind == fields.TRANSFER_ENCODING:
            te = self.transfer_encoding
            self.transfer_encoding = value if te is None else te + b"," + value
        elif kind == fields.UPGRADE:
            self.upgrade = value  # forwarded on a 101 only

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        self._head_seen = True
        self._heads_in_read += 1
        self.keep_alive = parser.should_keep_alive()
        if self.connection_options is not None:
            self.headers = fields.drop_named_fields(self.headers, self.connection_options)
        if self.transfer_encoding is not None:
            self.codings, chunked = rules.response_codings(self.transfer_encoding)
            self.framing = FRAMING_CHUNKED if chunked else FRAMING_CLOSE
        if status in fields.NO_BODY_STATUS or self.head_only:
            self.framing = FRAMING_NONE
        elif self.framing != FRAMING_CHUNKED and self.content_length is not None:
            self.framing = FRAMING_LENGTH
        owner = self.owner
        if owner is None:
            raise _StopAtHead  # a response nobody asked for
        owner.upstream_head(self, status)
        if (self.head_only and status >= 200) or self.owner is None:
            raise _StopAtHead  # (no owner: it refused the response and closed the connection)

    def on_body(self, body: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.framing == FRAMING_NONE and self.parser.get_status_code() < 200:
            self._head_seen = False  # an interim response: the final one follows
            return
        if not self.parser.should_upgrade():
            self.complete = True  # handed to the owner once the read is parsed

    # -- helpers ---------------------------------------------------------------------------

    def send(self, owner: UpstreamOwner, data: bytes, head_only: bool, head_limit: int) -> None:
        """Start a request: the head (and any body bytes already at hand)."""
        self.owner = owner
        self.head_only = head_only
        self.head_limit = head_limit
        self.head_bytes = self._field_bytes = self._tail = 0
        self._counting = False
        self._head_seen = False  # (so the first read of the answer counts against head_limit)
        self._carry = b""
        self.bytes_received = 0
        self.requests += 1
        assert self.transport is not None
        self.transport.write(data)

    def usable(self, now: float, idle_timeout: float) -> bool:
        transport = self.transport
        return (not self.closed and transport is not None and not transport.is_closing()
                and now - self.idle_since < idle_timeout)

    def close(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
