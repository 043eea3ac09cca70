"""The response, framed for the client: the callbacks of ``UpstreamConnection``.

Mixed into ``ClientProtocol`` (``client.py``), whose state it uses.

The member's response is re-framed, never copied blindly (RFC 9112 §6): its head is rebuilt from
the fields ``UpstreamConnection`` kept (hop-by-hop ones dropped), and its framing is decided by
this table, from what the member sent and what the client can read:

| member sent                       | HTTP/1.1 client               | HTTP/1.0 client          |
|-----------------------------------|-------------------------------|--------------------------|
| Content-Length                    | Content-Length                | Content-Length           |
| no body (HEAD, 1xx, 204, 304)     | the member's Content-Length   | the same                 |
| chunked, or read-until-close      | chunked (re-chunked)          | until close, then close  |
| other codings (``gzip, chunked``) | ``gzip, chunked``, re-chunked | 502                      |

Interim responses (1xx but 100, which the proxy answers itself) are passed on to HTTP/1.1
clients; a 101 to an Upgrade request turns the connection into a tunnel. Bytes produced by one
read from the member are written with one ``write`` (``out``, flushed by ``upstream_flush``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slb.errors import UpstreamProtocolError
from slb.proxy.fields import CHUNK_END, CHUNKED, CRLF, without_fields
from slb.proxy.flow import TUNNEL
from slb.proxy.head import status_line
from slb.proxy.upstream import FRAMING_LENGTH, FRAMING_NONE

if TYPE_CHECKING:
    from slb.proxy.exchange import Exchange
    from slb.proxy.upstream import UpstreamConnection

_CLOSE = b"Connection: close\r\n"
_KEEP_ALIVE = b"Connection: keep-alive\r\n"

def _head_of(status: int, conn: UpstreamConnection) -> list[bytes]:
    """The status line and the member's forwarded fields: the connection's own list (reset
    for each response), its first slot filled, so no field is copied."""
    head = conn.headers
    head[0] = status_line(status, conn.reason)
    return head


def _edited_head(status: int, conn: UpstreamConnection,
                 edit: tuple[frozenset[bytes], bytes]) -> list[bytes]:
    """``_head_of`` with a route's response rules (``Exchange.response_edit``): the member's
    fields of the names in ``drop`` left out, the route's rendered fields added."""
    drop, add = edit
    head = without_fields(conn.headers, drop)
    head[0] = status_line(status, conn.reason)
    head.append(add)
    return head


class ResponseRelay:
    """Framing of the member's response for the client (see the module docstring)."""

    __slots__ = ()

    def upstream_head(self, conn: UpstreamConnection, status: int) -> None:
        ex = self.exchanges[0]
        if status < 200:
            self._interim_head(ex, conn, status)
            return
        framing = conn.framing
        codings = conn.codings
        if codings and ex.http10 and framing != FRAMING_NONE:
            # A transfer coding an HTTP/1.0 client cannot receive (RFC 9112 §6.1): 502.
            ex.conn = None
            conn.close()
            self._release_member(ex)
            self._reply(ex, UpstreamProtocolError(f"transfer coding {codings!r} for HTTP/1.0"))
            return
        ex.status = status
        ex.response_started = True
        edit = ex.response_edit
        head = _head_of(status, conn) if edit is None else _edited_head(status, conn, edit)
        if framing == FRAMING_LENGTH or (framing == FRAMING_NONE and status != 204
                                         and conn.content_length is not None):
            head += (b"Content-Length: ", conn.content_length or b"0", CRLF)
        elif framing != FRAMING_NONE:
            if ex.http10:
                ex.keep_alive = False  # the body ends when the connection does
            else:
                ex.response_chunked = True
                # Codings other than chunked are kept, the body re-chunked (RFC 9112 §6.1).
                head.append(b"Transfer-Encoding: %s, chunked\r\n" % codings if codings
                            else CHUNKED)
        if ex.upgrade:
            ex.keep_alive = False  # the request parser is past an upgrade: nothing more to read
        if not self._keep_alive_after(ex):
            ex.keep_alive = False
            head.append(_CLOSE)
        elif ex.http10:
            head.append(_KEEP_ALIVE)
        head.append(CRLF)
        # Held until the body (or the end of this read from the member) joins it: one write
        # per response instead of two, and on loopback a write is most of a request's cost.
        # The head's own list (the connection's, reset for the next response) takes the body
        # too: one join for head and body (two joins and a list before: ~0.15 us a response).
        self.out = head

    def _keep_alive_after(self, ex: Exchange) -> bool:
        """Whether the client connection stays open once ``ex`` is answered."""
        return (ex.keep_alive and not self.ctx.draining
                and self.requests < self.rt.limits.keepalive_requests
                and (ex.request_done or not ex.has_body))

    def _interim_head(self, ex: Exchange, conn: UpstreamConnection, status: int) -> None:
        if status == 101:
            if not ex.upgrade:
                conn.close()
                self._upstream_failed(ex, conn, UpstreamProtocolError("unexpected 101"))
                return
            ex.status = 101
            ex.response_started = True
            head = _head_of(101, conn)
            head += (b"Upgrade: ", conn.upgrade or ex.upgrade_value or b"", CRLF)
            head.append(b"Connection: upgrade\r\n\r\n")
            self.transport.write(b"".join(head))
        elif status != 100 and not ex.http10:
            head = _head_of(status, conn)
            head.append(CRLF)
            self.transport.write(b"".join(head))

    def upstream_body(self, data: bytes) -> None:
        if self.tunnel is not None:
            self._tunnel_progress()
            self.transport.write(data)
            return
        ex = self.exchanges[0]
        # (the read timeout restarts once per read, in upstream_read_end, not per piece)
        ex.bytes_sent += len(data)
        out = self.out
        if out is None:
            out = self.out = []
        if ex.response_chunked:
            out += (b"%x\r\n" % len(data), data, CRLF)
        else:
            out.append(data)

    def upstream_read_end(self) -> None:
        """A read from the member ended mid-response: the read timeout starts again, and what
        the read produced is written."""
        # (here, not per body piece: a response read at once reads the clock once, ~0.07 us)
        exchanges = self.exchanges
        if exchanges:
            target = exchanges[0].target
            if target is not None:
                self.deadline = self.loop.time() + target.read_timeout
        self.upstream_flush()

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
            out.append(CHUNK_END)
        self.upstream_flush()
        member = ex.member
        pool = ex.target.pool
        ex.conn = None
        conn.owner = None
        if self.write_paused and conn.transport is not None:
            conn.transport.resume_reading()
        # Reused only after a whole exchange with known framing and no Upgrade asked (RFC 9112
        # §9.3); the connection has dropped itself (keep_alive off) if surplus bytes came.
        now = self.loop.time()  # (the one clock read of the response's end: ~0.07 us each)
        if conn.keep_alive and ex.request_done and not ex.upgrade and member is not None:
            pool.put_idle(member, conn, now)
        else:
            conn.close()
        if member is not None:
            member.record_success()
        self._release_member(ex)
        self._response_finished(ex, now)

    def upstream_tunnel(self, conn: UpstreamConnection, data: bytes) -> None:
        """The member said 101: from now on bytes are copied both ways, unparsed."""
        self.upstream_flush()
        ex = self.exchanges[0]
        pool = ex.target.pool
        self.tunnel = conn
        self._release_member(ex)
        ex.response_done = True
        self._account(ex, self.loop.time())
        if data:
            self.transport.write(data)
        buffer = ex.buffer
        if buffer and conn.transport is not None:
            conn.transport.writelines(buffer)
        ex.buffer = None
        held = self.held
        self.held = None
        if held and conn.transport is not None:
            conn.transport.writelines(held)  # the member agreed: now they are its protocol's
        self.deadline = self.loop.time() + pool.tunnel_idle
        self.deadline_kind = TUNNEL
        self.read_paused = 0
        self.transport.resume_reading()

    def _abort_response(self, ex: Exchange, flag: str) -> None:
        """A response already on its way cannot be replaced: end it by closing."""
        self.upstream_flush()
        ex.flag = flag
        ex.response_done = True
        self._account(ex, self.loop.time())
        self.transport.close()
