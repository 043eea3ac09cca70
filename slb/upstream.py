"""One keep-alive HTTP/1.1 connection from the proxy to a member.

An ``UpstreamConnection`` carries one request at a time for its ``owner`` (the client connection
whose request it serves) and parses the response with httptools, handing each piece to the owner:
``upstream_head``, ``upstream_body``, ``upstream_complete``, and ``upstream_lost`` if the
connection dies. Between requests it sits in its member's idle list with no owner; bytes or EOF
arriving then close it and take it off the list, so a connection the member closed is never used
to fail a request.

Framing quirks llhttp cannot know on its own: a response to HEAD has no body whatever its
Content-Length says (RFC 9112 §6.3 (1)); the parse is stopped at the end of the head and a fresh
parser serves the next response. A response with neither Content-Length nor chunked ends when the
member closes (§6.3 (8)).
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

from slb import http11

if TYPE_CHECKING:
    from slb.balancing.member import MemberState
    from slb.balancing.pool import Pool


class UpstreamOwner(Protocol):
    def upstream_head(self, conn: UpstreamConnection, status: int) -> None: ...
    def upstream_body(self, data: bytes) -> None: ...
    def upstream_complete(self, conn: UpstreamConnection) -> None: ...
    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None: ...
    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None: ...
    def upstream_flush(self) -> None: ...
    def pause_client_reading(self) -> None: ...
    def resume_client_reading(self) -> None: ...


class _StopAtHead(Exception):
    """Raised from the head callback of a bodiless response to stop llhttp there."""


# response framing
FRAMING_LENGTH = 0
FRAMING_CHUNKED = 1
FRAMING_CLOSE = 2
FRAMING_NONE = 3


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_head_seen", "bytes_received", "closed", "connection_options", "content_length", "framing",
        "head_only", "headers", "idle_since", "keep_alive", "member", "owner", "parser", "pool",
        "reason", "requests", "stats", "transport", "tunnel", "upgrade",
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
        self._reset_response()

    def _reset_response(self) -> None:
        self._head_seen = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.content_length: bytes | None = None
        self.connection_options: bytes | None = None
        self.upgrade: bytes | None = None
        self.framing = FRAMING_CLOSE
        self.keep_alive = False

    # -- asyncio.Protocol interface ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=256 * 1024)
        self.stats.upstream_connections += 1

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is None:
            # A pooled connection got bytes nobody asked for: it cannot be trusted any more.
            self.close()
            return
        self.bytes_received += len(data)
        if self.tunnel:
            owner.upstream_body(data)
            return
        try:
            self.parser.feed_data(data)
            owner.upstream_flush()
        except HttpParserUpgrade as upgrade:
            self.tunnel = True
            owner.upstream_tunnel(self, data[upgrade.args[0]:])
        except HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _StopAtHead):
                raise
            self.parser = HttpResponseParser(self)
            if self.owner is None:
                self.close()  # bytes after a complete response: not a member to trust
            else:
                self.upstream_done()
        except HttpParserError as exc:
            self.close()
            owner.upstream_lost(self, f"malformed response: {exc}")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
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
            self.upstream_done()
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
        self._reset_response()

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = http11.RESPONSE_FIELDS.get(name.lower(), 0)
        if kind == http11.OTHER:
            self.headers.append((name, value))
        elif kind == http11.CONTENT_LENGTH:
            self.content_length = value
        elif kind == http11.CONNECTION:
            self.connection_options = value
        elif kind == http11.TRANSFER_ENCODING:
            self.framing = FRAMING_CHUNKED
        elif kind == http11.UPGRADE:
            self.upgrade = value  # forwarded on a 101 only

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        self._head_seen = True
        self.keep_alive = parser.should_keep_alive()
        if self.connection_options is not None:
            self._drop_connection_options()
        if status in http11.NO_BODY_STATUS or self.head_only:
            self.framing = FRAMING_NONE
        elif self.framing != FRAMING_CHUNKED and self.content_length is not None:
            self.framing = FRAMING_LENGTH
        owner = self.owner
        if owner is None:
            raise _StopAtHead  # a response nobody asked for
        owner.upstream_head(self, status)
        if self.head_only and status >= 200:
            raise _StopAtHead

    def on_body(self, body: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_body(body)

    def on_message_complete(self) -> None:
        if self.framing == FRAMING_NONE and self.parser.get_status_code() < 200:
            return  # an interim response: the final one follows
        if not self.parser.should_upgrade():
            self.upstream_done()

    # -- helpers ---------------------------------------------------------------------------

    def upstream_done(self) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_complete(self)

    def _drop_connection_options(self) -> None:
        options = http11.connection_tokens(self.connection_options or b"")
        options.discard(b"close")
        options.discard(b"keep-alive")
        options.discard(b"upgrade")
        if options:
            self.headers = [(n, v) for n, v in self.headers if n.lower() not in options]

    def send(self, owner: UpstreamOwner, data: bytes, head_only: bool) -> None:
        """Start a request: the head (and any body bytes already at hand)."""
        self.owner = owner
        self.head_only = head_only
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
