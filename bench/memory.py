"""Memory per idle keep-alive client connection: proxy RSS with N idle connections open.

The proxy is warmed up first (its upstream pools, caches and code paths in place), then its
RSS (VmRSS summed over its process tree) is read: the baseline. N client connections are
opened in batches, each sends one request and reads the whole answer (so every connection has
been through a full exchange, parser and buffers included) and then stays open and idle. RSS
is read again; (after - baseline) / N is the cost of one idle connection.

The file-descriptor limit of this process is raised to its hard limit by ``raise_fd_limit``
before any proxy starts, so the proxies inherit it (nginx also gets `worker_rlimit_nofile`).
"""

from __future__ import annotations

import contextlib
import resource
import socket
from pathlib import Path
from typing import Any

from harness import BODY, HOST, PATH, BenchError

BATCH = 500  # below the listen backlog: a full backlog would stall connect() for a second
REQUEST = f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: slb-bench-idle\r\n\r\n".encode()


def raise_fd_limit(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (at most the hard limit); the limit
    now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def rss_kb(pids: list[int]) -> int:
    """VmRSS summed over pids, in KB (a process gone counts 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def _read_answer(sock: socket.socket) -> None:
    """Read one answer to REQUEST (the bench body, framed by Content-Length)."""
    data = b""
    while not data.endswith(BODY):
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchError("the proxy closed an idle-test connection before answering")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"idle-test request got {data[:40]!r}")


def idle_connections(port: int, count: int, pids: list[int]) -> dict[str, Any]:
    """Open ``count`` idle keep-alive connections to ``port``; the RSS of ``pids`` before and
    with them open. Every socket is closed before returning."""
    socks: list[socket.socket] = []
    before = rss_kb(pids)
    try:
        while len(socks) < count:
            batch = []
            for _ in range(min(BATCH, count - len(socks))):
                s = socket.create_connection((HOST, port), timeout=10)
                batch.append(s)
                socks.append(s)
            for s in batch:
                s.sendall(REQUEST)
            for s in batch:
                _read_answer(s)
        after = rss_kb(pids)
    except OSError as exc:
        raise BenchError(f"idle connection {len(socks) + 1} of {count} to port {port} failed: "
                         f"{exc}") from None
    finally:
        for s in socks:
            s.close()
    return {"connections": count, "rss_before_kb": before, "rss_after_kb": after,
            "kb_per_connection": (after - before) / count,
            "mb_total": (after - before) / 1024}
