"""One request and its response: the ``Exchange``, the only per-request object.

An exchange is made in ``on_message_begin`` and lives in its connection's queue until its answer
is written. Its fields fall into three groups, filled in this order:

- recorded by the parser callbacks (``url``, ``parts``: the request line then the forwarded
  fields as ``(name, ": ", value, CRLF)`` quadruples, ``host``, framing, the fields the proxy
  handles itself);
- decided when the head is complete (``method``, ``head``: the bytes sent upstream, ``path``,
  ``keep_alive``, ``target``);
- the forwarding state (``conn``, ``member``, tries, body buffers) and the response state
  (``response_started``/``response_done``, ``status``, ``flag`` for the access log).

Slotted and built field by field: an exchange costs one allocation and no dict.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slb.proxy.fields import REQUEST_FIELDS

if TYPE_CHECKING:
    from slb.balancing.member import MemberState
    from slb.errors import ProxyError
    from slb.proxy.target import Target
    from slb.proxy.upstream import UpstreamConnection


class Exchange:
    """One request and its response (see the module docstring)."""

    __slots__ = (
        "aborted", "attempts", "body_received", "buffer", "buffered", "bytes_sent", "chunked",
        "conn", "connection", "content_length", "discard", "error", "expect_continue", "fields",
        "flag", "generation", "has_body", "head", "head_done", "header_bytes", "header_count",
        "hop", "host", "http10", "keep_alive", "member", "member_address", "method", "parts",
        "path", "replay", "replay_bytes", "request_done", "request_id", "response_chunked",
        "response_done", "response_edit", "response_started", "reused", "stale_retried", "start",
        "status", "target", "te", "tried", "upgrade", "upgrade_value", "upstream_start", "url",
        "vhost_name", "watched", "xff",
    )

    def __init__(self, start: float, fields: dict[bytes, int] = REQUEST_FIELDS) -> None:
        self.start = start
        self.fields = fields  # the field table its head is parsed with (lowercased name -> kind)
        # a field a route's condition asks for (fields.WATCHED) was seen: without one, a route
        # testing such a field is passed over without a scan (router.VirtualHost.match)
        self.watched = False
        # recorded by the parser callbacks
        self.url = b""
        self.parts: list[bytes] = [b""]  # request line, then forwarded fields
        self.header_count = 0
        self.header_bytes = 0
        self.host: bytes | None = None
        self.content_length = 0
        self.chunked = False
        self.te: bytes | None = None
        self.connection: bytes | None = None
        self.upgrade_value: bytes | None = None
        self.expect_continue = False
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.hop = False  # a hop-by-hop field other than Connection (Proxy-Connection, TE, ...)
        # set once the head is complete (on_headers_complete)
        self.method = b""
        self.http10 = False
        self.upgrade = False
        self.has_body = False
        self.head = b""
        self.path = ""
        self.keep_alive = True
        self.head_done = False
        self.request_done = False
        self.error: ProxyError | None = None  # the rule it broke, answered in its turn
        # request body
        self.body_received = 0
        self.discard = False  # answered early: the rest of its body is read and dropped
        self.buffer: list[bytes] | None = None  # body held until a member connection is ready
        self.buffered = 0
        self.replay: list[bytes] | None = None  # body kept to send again on another try
        self.replay_bytes = 0
        # forwarding
        self.target: Target | None = None
        self.vhost_name = ""
        self.conn: UpstreamConnection | None = None
        self.member: MemberState | None = None
        self.member_address = ""
        self.tried: list[MemberState] | None = None
        self.attempts = 0  # tries on members, counted against retry.tries
        self.generation = 0  # bumped to abandon a connect in flight
        self.reused = False
        self.stale_retried = False
        self.upstream_start = 0.0
        # response
        self.response_started = False
        self.response_done = False
        self.response_chunked = False
        self.aborted = False
        self.status = 0
        self.flag = "-"
        self.bytes_sent = 0
        # a route's response rules (slb.proxy.actions): member fields dropped, fields added
        self.response_edit: tuple[frozenset[bytes], bytes] | None = None
