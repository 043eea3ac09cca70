"""A client protocol without sockets: a fake transport and a loop whose clock the test moves.

``FakeClient`` builds a real ``ClientProtocol`` over a real ``ProxyContext`` compiled from a
configuration, with a ``FakeLoop`` (``time()`` is a number the test sets; tasks are recorded,
not run, so no member is ever connected) and a ``FakeTransport`` that records what the proxy
writes and whether it paused, shut or closed. Tests feed raw bytes and read the answers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from typing import Any

from slb.model import parse_config
from slb.proxy.client import ClientProtocol
from slb.proxy.context import ProxyContext
from slb.proxy.upstream import UpstreamConnection

_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*\r\n")


class FakeLoop:
    """The two things the request path asks of its loop: the time, and a task for a connect."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.tasks: list[Coroutine[Any, Any, Any]] = []

    def time(self) -> float:
        return self.now

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(coro)

    def close(self) -> None:
        for coro in self.tasks:
            coro.close()  # never run: no "coroutine was never awaited" warning
        self.tasks.clear()


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.reading = True
        self.closed = False
        self.aborted = False
        self.eof_written = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("203.0.113.7", 50000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.written += data

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def write_eof(self) -> None:
        self.eof_written = True

    def can_write_eof(self) -> bool:
        return True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class FakeMember:
    """The member end of one upstream connection: what it received, and a way to answer."""

    def __init__(self, conn: UpstreamConnection, transport: FakeTransport) -> None:
        self.conn = conn
        self.transport = transport

    @property
    def received(self) -> bytes:
        return bytes(self.transport.written)

    def respond(self, raw: bytes) -> None:
        self.conn.data_received(raw)

    def close(self) -> None:
        self.conn.connection_lost(None)


def one_group_config(**http: Any) -> dict[str, Any]:
    """One virtual server (example.com) on one listener; everything to group ``g``."""
    return {
        "http": http,
        "virtual_servers": [{"name": "vs", "listen": "127.0.0.1:8080",
                             "domains": ["example.com"],
                             "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "members": [{"address": "127.0.0.1:9"}]}],
    }


class FakeClient:
    """A ``ClientProtocol`` on a fake transport; see the module docstring."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.loop = FakeLoop()
        self.ctx = ProxyContext(self.loop, parse_config(config or one_group_config()))  # type: ignore[arg-type]
        self.transport = FakeTransport()
        self.protocol = ClientProtocol(self.ctx, "127.0.0.1:8080")
        self.protocol.connection_made(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    @property
    def written(self) -> bytes:
        return bytes(self.transport.written)

    def statuses(self) -> list[int]:
        """Status codes of the responses written so far, in order."""
        return [int(m.group(1)) for m in _STATUS_LINE.finditer(self.written)]

    def forwarded(self) -> list[bytes]:
        """Heads of the requests that reached the forwarding stage (a connect was asked)."""
        return [ex.head for ex in self.protocol.exchanges if ex.attempts]

    def connect(self) -> FakeMember:
        """Complete the connect the first exchange is waiting for, as the loop would."""
        ex = self.protocol.exchanges[0]
        assert ex.target is not None and ex.member is not None and ex.conn is None
        conn = UpstreamConnection(ex.target.pool, ex.member)
        transport = FakeTransport()
        conn.connection_made(transport)
        self.protocol._send(ex, conn, False)
        return FakeMember(conn, transport)

    def advance(self, seconds: float) -> None:
        """Move the clock and fire the deadline if it has passed, as the sweeper would."""
        self.loop.now += seconds
        if self.protocol.deadline <= self.loop.now:
            self.protocol.on_deadline(self.loop.now)

    def close(self) -> None:
        self.loop.close()
