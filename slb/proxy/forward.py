"""One try of a request on a member, and the rules for trying again.

Mixed into ``ClientProtocol`` (``client.py``), whose state it uses.

A try picks a member (the group's balancer, skipping members already tried for this request),
takes one of its idle connections or opens one, and sends the head and any body at hand
(``_send``). It ends in one of three ways: the response completes (``relay.py``), the connection
fails before a response byte (``upstream_lost``), or the read timeout passes (``flow.py``).

Trying again (RFC 9110 §9.2.2):

- A pooled connection that dies before any response byte is the keep-alive race (the member
  closed it as we sent): the request goes again on a fresh connection to the same member, once,
  and the member is not blamed.
- A connect failure, or a failure before a response byte, moves to another member while
  ``retry.tries`` allows, if the request may be sent again: an idempotent method (or the group
  allows any) and a body still held (``REPLAY_LIMIT``).
- Once a response byte has reached the client, nothing is retried: the response is cut.

Request body pieces (``_body_piece``, already framed for the member) go straight to the
member connection, or are buffered until it is ready; up to ``REPLAY_LIMIT`` bytes are also
kept so the request can be sent again.

A connect in flight carries the exchange's ``generation``: a timeout or a retry bumps it, and a
connect that completes for an older generation gives its connection to the idle pool instead.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from slb.errors import (
    NoHealthyMember,
    ProxyError,
    UpstreamConnectError,
    UpstreamProtocolError,
)
from slb.proxy.actions import hash_key
from slb.proxy.fields import IDEMPOTENT
from slb.proxy.flow import BUFFER_LIMIT, EXCHANGE, PAUSE_BUFFER
from slb.proxy.upstream import UpstreamConnection

if TYPE_CHECKING:
    from slb.balancing.member import MemberState
    from slb.balancing.pool import Pool
    from slb.proxy.exchange import Exchange

REPLAY_LIMIT = 64 * 1024  # body bytes kept so a request can be retried on another connection


class Forwarding:
    """Tries and retries of the first exchange (see the module docstring)."""

    __slots__ = ()

    def _try(self, ex: Exchange) -> None:
        target = ex.target
        pool = target.pool
        now = self.loop.time()
        if pool.hash_key is None:
            member = pool.pick(ex.tried or (), now)
        else:
            member = pool.pick_hashed(hash_key(ex, self.peer, pool.hash_key), ex.tried or (),
                                      now)
        if member is None:
            self._reply(ex, UpstreamConnectError("every try failed") if ex.attempts
                        else NoHealthyMember(f"no member of {pool.name} is available"))
            return
        ex.attempts += 1
        ex.member = member
        ex.member_address = member.address
        member.active += 1
        member.requests += 1
        self.deadline = now + target.read_timeout
        self.deadline_kind = EXCHANGE
        conn = pool.take_idle(member, now)
        if conn is not None:
            self._send(ex, conn, True, now)
        else:
            self._open(ex, pool, member)

    def _open(self, ex: Exchange, pool: Pool, member: MemberState) -> None:
        """Connect to ``member`` for ``ex``; a newer generation abandons an older connect."""
        ex.generation += 1
        self.loop.create_task(self._connect(ex, pool, member, ex.generation))

    async def _connect(self, ex: Exchange, pool: Pool, member: MemberState,
                       generation: int) -> None:
        loop = self.loop
        tls = self.rt.upstream_tls.get(pool.name)
        try:
            async with asyncio.timeout(ex.target.connect_timeout):  # (a TLS handshake included)
                if tls is None:
                    _, conn = await loop.create_connection(
                        partial(UpstreamConnection, pool, member), member.host, member.port)
                else:
                    # upstream_tls: a certificate that fails verification is an OSError
                    # (ssl.SSLCertVerificationError): a connect failure like any other
                    _, conn = await loop.create_connection(
                        partial(UpstreamConnection, pool, member), member.host, member.port,
                        ssl=tls[0], server_hostname=tls[1] or member.host)
        except (OSError, TimeoutError) as exc:
            if ex.aborted or ex.generation != generation or ex.response_started:
                return
            self._guarded(self._connect_failed, ex, pool, member, exc)
            return
        if ex.aborted or ex.generation != generation or ex.response_done:
            pool.put_idle(member, conn, loop.time())
            self.ctx.needs_sweeping()  # (its client may have gone, and the sweeper with it)
            return
        self._guarded(self._send, ex, conn, False)

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

    def _send(self, ex: Exchange, conn: UpstreamConnection, reused: bool,
              now: float | None = None) -> None:
        ex.conn = conn
        ex.reused = reused
        # (an idle connection is sent on in _try, which has read the clock: ~0.07 us)
        ex.upstream_start = self.loop.time() if now is None else now
        head_limit = self.rt.limits.max_response_header_bytes
        buffer = ex.buffer
        if buffer:
            ex.buffer = None
            ex.buffered = 0
            conn.send(self, b"".join((ex.head, *buffer)), ex.method == b"HEAD", head_limit)
            self._resume_reading(PAUSE_BUFFER)
        else:
            conn.send(self, ex.head, ex.method == b"HEAD", head_limit)
        if self.write_paused and conn.transport is not None:
            conn.transport.pause_reading()

    # -- the request body --------------------------------------------------------------------

    def _body_piece(self, ex: Exchange, piece: bytes) -> None:
        """A piece of request body, framed for the member: sent now or held until connected."""
        if ex.target is not None:
            self.deadline = self.loop.time() + ex.target.read_timeout
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

    # -- a try that failed -------------------------------------------------------------------

    def upstream_lost(self, conn: UpstreamConnection, error: str) -> None:
        """The member connection died (or sent what is not HTTP) before its response ended."""
        if self.tunnel is conn:
            self.tunnel = None
            self.transport.close()
            return
        if not self.exchanges or self.exchanges[0].conn is not conn:
            return
        ex = self.exchanges[0]
        ex.conn = None
        conn.owner = None
        pool = ex.target.pool
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
        pool = ex.target.pool
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
                and (ex.method in IDEMPOTENT or pool.retry_non_idempotent)
                and (ex.replay is not None or not ex.has_body))

    @staticmethod
    def _rewind_body(ex: Exchange) -> None:
        if ex.replay is not None:
            ex.buffer = list(ex.replay)

    # -- letting go of a member ----------------------------------------------------------------

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
