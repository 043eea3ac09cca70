"""Flow control and time for a client connection: paired pause/resume, deadlines, linger.

Mixed into ``ClientProtocol`` (``client.py``), whose state it uses; it owns none of its own.

Flow control is paired. A client that reads slowly pauses reading from the member
(``pause_writing`` → ``pause_reading`` on the upstream transport), and a member that reads
slowly pauses reading from the client (``pause_client_reading``). Reading from the client stops
for named reasons (``PAUSE_*``, a bit set): it resumes only when every reason is gone, so pausing
and resuming are idempotent and independent.

Timeouts are deadlines, not timers: each connection has one ``deadline`` and what it means
(``deadline_kind``), and the sweeper (``slb.proxy.context.Sweeper``) calls ``on_deadline`` for the
ones past. Setting a float per request costs nothing; a ``call_later`` per request costs
microseconds. Tests drive the clock through the loop's ``time``.

After an Upgrade request, reading stops and what the client already sent is held (``held``)
until the member answers: a 101 hands it to the tunnel, anything else drops it with the
connection. The Upgrade request's own Content-Length body is framed here, since llhttp stops at
the end of the head.

Closing after an error answer lingers (RFC 9112 §9.6, nginx's lingering close): our side is
shut, what the client still sends is read and dropped, and the close comes when the client
closes or after ``LINGER_TIMEOUT``, so a reset cannot destroy the answer before it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slb.errors import RequestTimeout, UpstreamTimeout

if TYPE_CHECKING:
    from slb.proxy.upstream import UpstreamConnection

# deadline kinds
IDLE = 0  # between requests: close quietly
HEADER = 1  # a request head is arriving: 408
EXCHANGE = 2  # waiting on the member or on the client's body
TUNNEL = 3  # an upgraded connection with no traffic

# reasons to stop reading from the client
PAUSE_UPSTREAM = 1  # the member's socket buffer is full
PAUSE_BUFFER = 2  # too much body buffered while connecting or queued
PAUSE_PIPELINE = 4  # too many pipelined requests queued
PAUSE_STOPPED = 8  # no more requests are read from this client (close, error or upgrade)

BUFFER_LIMIT = 1 << 20  # body bytes held for a request that has no connection yet
LINGER_TIMEOUT = 2.0  # seconds to drain a client after an error answer
INFINITY = float("inf")


class FlowControl:
    """Pause/resume both ways, deadlines and lingering close (see the module docstring)."""

    __slots__ = ()

    # -- the member is slow or fast (called by UpstreamConnection) -----------------------

    def pause_client_reading(self) -> None:
        self._pause_reading(PAUSE_UPSTREAM)

    def resume_client_reading(self) -> None:
        self._resume_reading(PAUSE_UPSTREAM)

    # -- the client is slow or fast (asyncio.Protocol) -------------------------------------

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

    def _active_upstream(self) -> UpstreamConnection | None:
        if self.tunnel is not None:
            return self.tunnel
        return self.exchanges[0].conn if self.exchanges else None

    def _pause_reading(self, reason: int) -> None:
        if not self.read_paused:
            self.transport.pause_reading()
        self.read_paused |= reason

    def _resume_reading(self, reasons: int) -> None:
        if self.read_paused & reasons:
            self.read_paused &= ~reasons
            if not self.read_paused and not self.transport.is_closing():
                self.transport.resume_reading()

    def _stop(self) -> None:
        """No more requests are read from this client; those already parsed are answered."""
        self.stopped = True
        self._pause_reading(PAUSE_STOPPED)

    def _hold(self, data: bytes) -> None:
        """Keep client bytes that follow an Upgrade request, within the buffer limit."""
        held = self.held
        assert held is not None
        if data:
            held.append(data)
        if sum(map(len, held)) > BUFFER_LIMIT:
            self.held = None
            self.transport.close()

    # -- after an Upgrade request ------------------------------------------------------------

    def _upgrade_requested(self, rest: bytes) -> None:
        """llhttp stopped at the end of an Upgrade request's head; ``rest`` follows it.

        Nothing after the request is HTTP until the member says 101 (RFC 9110 §7.8): it is held
        and reading stops until the member answers. llhttp leaves the request's own body
        (Content-Length; a chunked one is refused by ``rules.reject_chunked_upgrade``) to us:
        it is framed here and forwarded as any body.
        """
        self.stopped = True
        self.held = []
        ex = self.exchanges[-1] if self.exchanges else None
        if ex is not None and ex.content_length and not ex.response_done:
            ex.request_done = False
            self.upgrade_body = ex.content_length
        self._upgrade_data(rest)

    def _upgrade_data(self, data: bytes) -> None:
        left = self.upgrade_body
        if left:
            ex = self.exchanges[-1]
            piece = data[:left]
            data = data[left:]
            self.upgrade_body = left = left - len(piece)
            ex.body_received += len(piece)
            self._body_piece(ex, piece)
            if not left:
                ex.request_done = True
        if data:
            self._hold(data)
        if not left:
            self._stop()

    # -- time --------------------------------------------------------------------------------

    def _deadline_passed(self, now: float) -> None:
        """``deadline`` has passed: what happens depends on ``deadline_kind``."""
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
                ex.target.pool.record_failure(ex.member, now)
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

    # -- closing -----------------------------------------------------------------------------

    def _linger(self) -> None:
        """Close after an answer without losing it (see the module docstring)."""
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

    def close_if_idle(self) -> None:
        """Graceful drain: close now if no request is in progress."""
        if not self.exchanges and self.tunnel is None:
            self.transport.close()
