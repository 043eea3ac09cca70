"""``python -m tests.consul_double --port N``: run the double as a process.

Prints its address (``127.0.0.1:PORT``) on the first stdout line, then serves until SIGTERM or
SIGINT. Test hooks are reachable over HTTP under ``/_double/`` (see README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from .server import ConsulDouble


async def _main(args: argparse.Namespace) -> None:
    double = await ConsulDouble.start(
        port=args.port, acl_token=args.acl_token, read_tokens=args.read_token or (),
        node_name=args.node_name, datacenter=args.datacenter,
        max_conns_per_client=args.max_conns_per_client, streaming=args.streaming,
        session_ttl_min=args.session_ttl_min, session_ttl_multiplier=args.session_ttl_multiplier)
    print(double.address, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await double.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.consul_double",
                                     description="Consul HTTP API double")
    parser.add_argument("--port", type=int, default=0, help="0: kernel-chosen (default)")
    parser.add_argument("--acl-token", default=None, help="enable ACLs with this token")
    parser.add_argument("--read-token", action="append", help="a read-only token (repeatable)")
    parser.add_argument("--node-name", default="consul-double")
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--max-conns-per-client", type=int, default=200)
    parser.add_argument("--streaming", action="store_true",
                        help="omit KnownLeader/LastContact on blocking reads, as streaming does")
    parser.add_argument("--session-ttl-min", type=float, default=10.0,
                        help="shortest session TTL accepted, in seconds (Consul: 10)")
    parser.add_argument("--session-ttl-multiplier", type=float, default=2.0,
                        help="a session expires TTL x this after its last renew (Consul: 2)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
