"""A featureless uvloop + httptools reverse proxy: the benchmark's floor for a Python proxy.

    python bench/reference_proxy.py --listen 127.0.0.1:8000 --backend 127.0.0.1:9001 \
        --backend 127.0.0.1:9002

Theory of operation. Each client connection is a ``Client`` protocol with an httptools request
parser. A complete request is re-serialised (request line and header lines as received, a
chunked body re-chunked) and queued; requests on one connection are served one after the other
(pipelining is allowed, but never two at a time). The ``Pool`` picks the backends round-robin
and hands the request to an idle keep-alive ``Upstream`` connection of that backend, or opens
one. The upstream's bytes are written to the client as they arrive, unchanged (the backend's
framing, Content-Length or chunked, is the client's framing too); an httptools response parser
only watches them to see where the response ends, when the upstream connection goes back to the
idle list and the client's next request may go.

Nothing else: no routing, header rules, metrics, timeouts, retries or limits. That is the point:
SLB's requests per CPU-second over this proxy's is the cost of SLB's features plus its
inefficiencies. Bad requests get a 400 and a close; a backend that cannot be reached a 502.

``--burn-us N`` (an experiment of ``kernel_cost.py``, off by default) spins N microseconds of
user CPU per request, to see what a slower Python request path costs the kernel on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import time
from collections import deque

import httptools
import uvloop

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a backend, carrying one exchange at a time."""

    def __init__(self, pool: Pool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is not None and client.transport is not None:
            client.transport.write(data)  # streamed as is: the backend's framing is kept
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        if self.parser.should_keep_alive():
            self.pool.idle[self.index].append(self)
        else:
            self.close()
        if client is not None:
            client.response_done()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        idle = self.pool.idle[self.index]
        if self in idle:
            idle.remove(self)
        client, self.client = self.client, None
        if client is not None and client.transport is not None:
            client.transport.close()  # the response was cut short: the client must see it


class Pool:
    """Idle upstream connections per backend; the backend of each request in turn."""

    def __init__(self, backends: list[tuple[str, int]]) -> None:
        self.backends = backends
        self.idle: list[list[Upstream]] = [[] for _ in backends]
        self.turn = itertools.cycle(range(len(backends)))

    def send(self, client: Client, request: bytes) -> None:
        index = next(self.turn)
        idle = self.idle[index]
        if idle:
            self.attach(idle.pop(), client, request)
        else:
            asyncio.get_running_loop().create_task(self.connect(index, client, request))

    async def connect(self, index: int, client: Client, request: bytes) -> None:
        host, port = self.backends[index]
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(
                lambda: Upstream(self, index), host, port)
        except OSError:
            client.fail(BAD_GATEWAY)
            return
        if client.transport is None:  # the client left while we connected: keep the connection
            self.idle[index].append(upstream)
            return
        self.attach(upstream, client, request)

    @staticmethod
    def attach(upstream: Upstream, client: Client, request: bytes) -> None:
        upstream.client = client
        client.upstream = upstream
        assert upstream.transport is not None
        upstream.transport.write(request)


BURN_S = 0.0  # --burn-us, in seconds


class Client(asyncio.Protocol):
    """A client connection: parse, queue, forward one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.waiting: deque[tuple[bytes, bool]] = deque()  # (request, keep-alive)
        self.upstream: Upstream | None = None
        self.parts: list[bytes] = []
        self.url = b""
        self.chunked = False
        self.keep_alive = True  # of the request being served
        self.busy = False  # a request is out (its upstream may still be connecting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.fail(BAD_REQUEST)  # no upgrades here
        except httptools.HttpParserError:
            self.fail(BAD_REQUEST)

    # -- httptools callbacks, in order
    def on_message_begin(self) -> None:
        self.url = b""
        self.parts = [b""]  # [0] becomes the request line
        self.chunked = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.parts.append(b"%s: %s\r\n" % (name, value))
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            self.chunked = value.lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        p = self.parser
        self.parts[0] = b"%s %s HTTP/%s\r\n" % (p.get_method(), self.url,
                                                p.get_http_version().encode())
        self.parts.append(b"\r\n")

    def on_body(self, body: bytes) -> None:
        # httptools hands over the de-chunked body: chunk it again for the backend
        self.parts.append(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def on_message_complete(self) -> None:
        if BURN_S:  # CPU time, not wall time: a preempted spin still burns all of it
            until = time.thread_time() + BURN_S
            while time.thread_time() < until:
                pass
        if self.chunked:
            self.parts.append(b"0\r\n\r\n")
        self.waiting.append((b"".join(self.parts), self.parser.should_keep_alive()))
        if not self.busy:
            self.send_next()

    # -- the exchange
    def send_next(self) -> None:
        request, self.keep_alive = self.waiting.popleft()
        self.busy = True
        self.pool.send(self, request)

    def response_done(self) -> None:
        self.upstream = None
        self.busy = False
        if not self.keep_alive:
            self.fail(b"")
        elif self.waiting:
            self.send_next()

    def fail(self, response: bytes) -> None:
        if self.transport is not None:
            if response:
                self.transport.write(response)
            self.transport.close()

    # -- flow control: a slow client holds its backend back
    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None and upstream.client is self:
            upstream.client = None
            upstream.close()  # half-read response: the connection cannot be reused


def address(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); argparse turns the ValueError into a usage error."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(text)
    return host, int(port)


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    loop = asyncio.get_running_loop()
    pool = Pool(backends)
    server = await loop.create_server(lambda: Client(pool), *listen, backlog=4096,
                                      reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", type=address, required=True, help="host:port to serve")
    ap.add_argument("--backend", type=address, action="append", required=True,
                    help="host:port of a backend (repeat: round-robin)")
    ap.add_argument("--burn-us", type=float, default=0.0,
                    help="spin this many microseconds of CPU per request (an experiment)")
    args = ap.parse_args(argv)
    if not 0 <= args.burn_us <= 1e6:
        ap.error("--burn-us must be between 0 and 1000000")
    global BURN_S
    BURN_S = args.burn_us / 1e6
    uvloop.run(serve(args.listen, args.backend))


if __name__ == "__main__":
    main()
