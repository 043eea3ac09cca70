"""The request path's own cost, in process: CPU microseconds per keep-alive request, no sockets.

A real ``ClientProtocol`` and real ``UpstreamConnection``s, compiled from config/slb.yaml, on fake
transports and a fake loop: each request is fed as one read from the client, its member answers
with one read (100-byte body), and nothing else runs. What is left is the Python work of the
request path (parsing callbacks, rules, routing, balancing, framing, accounting) without the
system calls and the event loop, so two trees can be compared on a busy machine: CPU time
(``time.process_time``) is what is measured, the minimum and median of ``--repeat`` runs.

    .venv/bin/python bench/request_path.py [--requests 200000] [--repeat 5] [--traffic bench]

``--traffic bench`` feeds what the comparison (bench.py) carries instead: wrk's request (Host
only) and the nginx backends' answer to a static file (nine fields, ``Connection: keep-alive``).
Run from another tree's root (``cd OTHER && python /this/tree/bench/request_path.py``), it
measures that tree's request path: a before/after in one session.

It also runs on the tree before the layout change (``slb.protocol`` instead of
``slb.proxy.client``), run from that tree's root: the issue-9 before/after figures came from it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))

from slb.model import parse_config  # noqa: E402

try:
    from slb.proxy.client import ClientProtocol
    from slb.proxy.context import ProxyContext
    from slb.proxy.upstream import UpstreamConnection
except ImportError:  # the tree before the layout change
    from slb.context import ProxyContext  # type: ignore[no-redef]
    from slb.protocol import ClientProtocol  # type: ignore[no-redef]
    from slb.upstream import UpstreamConnection  # type: ignore[no-redef]

REQUEST = (b"GET /api/items?id=7 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: wrk\r\n"
           b"Accept: */*\r\nAccept-Encoding: gzip\r\nCookie: a=b\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
            b"Content-Length: 100\r\nX-Backend: a\r\n\r\n" + b"x" * 100)
# --traffic bench: wrk's request and nginx's static-file answer, as in bench.py's small case
BENCH_REQUEST = b"GET /small HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n"
BENCH_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Tue, 01 Dec 2026 09:00:00 GMT\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n"
                  b"Last-Modified: Tue, 01 Dec 2026 08:00:00 GMT\r\nConnection: keep-alive\r\n"
                  b"ETag: \"692d5a80-64\"\r\nX-Backend: b1\r\nAccept-Ranges: bytes\r\n\r\n"
                  + b"x" * 100)


class Loop:
    """The time, and a place for the connect task the first request of a member asks for."""

    def __init__(self) -> None:
        self.pending: Any = None

    def time(self) -> float:
        return 1000.0

    def create_task(self, coro: Any) -> None:
        self.pending = coro


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("10.0.0.1", 50000) if name == "peername" else default

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...
    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None: ...


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--traffic", choices=("shop", "bench"), default="shop",
                        help="shop: a browser-like request to config/slb.yaml's shop (default); "
                             "bench: what bench.py's small case carries")
    args = parser.parse_args()
    request, response = ((BENCH_REQUEST, BENCH_RESPONSE) if args.traffic == "bench"
                         else (REQUEST, RESPONSE))

    document = yaml.safe_load((ROOT / "config" / "slb.yaml").read_text())
    loop = Loop()
    ctx = ProxyContext(loop, parse_config(document))  # type: ignore[arg-type]
    client = ClientProtocol(ctx, document["virtual_servers"][0]["listen"])
    transport = Transport()
    client.connection_made(transport)

    def member_connection() -> Any:
        ex = client.exchanges[0]
        conn = ex.conn
        if conn is None:  # a member seen for the first time: complete its connect
            conn = UpstreamConnection(ex.target.pool, ex.member)
            conn.connection_made(Transport())
            client._send(ex, conn, False)
            loop.pending.close()
        return conn

    def run(count: int) -> None:
        for _ in range(count):
            client.data_received(request)
            member_connection().data_received(response)

    run(2000)
    gc.collect()
    per_request = []
    for _ in range(args.repeat):
        start = time.process_time()
        run(args.requests)
        per_request.append((time.process_time() - start) / args.requests * 1e6)
    print(f"request path: {min(per_request):.2f} us/request min, "
          f"{statistics.median(per_request):.2f} median over {args.repeat} x {args.requests} "
          f"requests ({client.requests} routed, {transport.written} bytes written)")


if __name__ == "__main__":
    main()
