"""Listening sockets for virtual servers.

Sockets are made by hand so that SO_REUSEPORT can be set (worker processes share a port, the
kernel spreading connections by 4-tuple hash) and so that a bind failure is known before a new
configuration is swapped in: opening listeners is the only step of an apply that can fail.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from slb.model import split_host_port

BACKLOG = 4096


def bind_socket(address: str, reuse_port: bool = False, backlog: int = BACKLOG
                ) -> socket.socket:
    """A listening, non-blocking socket on ``host:port`` (port 0: the kernel picks); an
    address in use or not local raises ``OSError`` here, before anything serves."""
    host, port = split_host_port(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # a restarted process rebinds at once, past the old connections' TIME_WAIT
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(sock: socket.socket, factory: Callable[[], asyncio.Protocol],
                tls: ssl.SSLContext | None = None,
                handshake_timeout: float | None = None) -> asyncio.Server:
    """Serve ``sock``; with ``tls``, the transport terminates TLS before ``factory``'s protocol
    sees a byte (``slb.proxy.tls``)."""
    loop = asyncio.get_running_loop()
    if tls is None:
        return await loop.create_server(factory, sock=sock, backlog=BACKLOG)
    return await loop.create_server(factory, sock=sock, backlog=BACKLOG, ssl=tls,
                                    ssl_handshake_timeout=handshake_timeout)
