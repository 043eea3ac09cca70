"""The access log: one line per request, off by default (``access_log.enabled``).

    2026-11-26T07:59:03Z 127.0.0.1 "GET /api/x?y=1" 200 1234 vs=shop group=api
    member=10.0.0.5:80 upstream_time=0.0021 total_time=0.0024 flag=- id=9f2c01aa-1b tls=TLSv1.3

With ``format: json`` each line is one JSON object with the same fields (``time``, ``client``,
``method``, ``target``, ``status``, ``bytes``, ``vs``, ``group``, ``member``, ``upstream_time``,
``total_time``, ``flag``, ``id``, ``tls``; a missing value is null).

Lines are collected in memory and written by the sweeper a few times a second with one
``write`` per batch on a file opened with O_APPEND: worker processes sharing one file never
interleave partial lines (a single append is atomic for regular files on Linux). ``flag`` uses
Envoy's response-flag vocabulary (UF, UH, UT, UC, NR, DC, DPE; MR for a 421). ``tls`` is the
connection's TLS version, ``-`` on a plain connection.

The log reads a finished request through ``LoggedExchange``, the few fields a line prints, so it
depends on no module of the client protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Protocol

from slb.model import AccessLog as AccessLogSettings


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Routed(Protocol):
    @property
    def pool(self) -> _Named: ...


class LoggedExchange(Protocol):
    """What a line reads of a finished request (the client protocol's ``Exchange``)."""

    @property
    def method(self) -> bytes | None: ...
    @property
    def url(self) -> bytes: ...
    @property
    def status(self) -> int: ...
    @property
    def bytes_sent(self) -> int: ...
    @property
    def vhost_name(self) -> str | None: ...
    @property
    def target(self) -> _Routed | None: ...
    @property
    def member_address(self) -> str | None: ...
    @property
    def upstream_start(self) -> float: ...
    @property
    def start(self) -> float: ...
    @property
    def flag(self) -> str: ...
    @property
    def request_id(self) -> bytes | None: ...


class AccessLog:
    def __init__(self, settings: AccessLogSettings) -> None:
        self.path = settings.path
        self.format = settings.format
        if settings.path == "-":
            self.fd = 2
        else:
            self.fd = os.open(settings.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def log(self, peer: bytes, ex: LoggedExchange, now: float, tls: str = "-") -> None:
        wall = int(time.time())
        if wall != self._second:  # formatting a time costs more than a request's arithmetic
            self._second = wall
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))
        if self.format == "json":
            self.lines.append(self._json_line(peer, ex, now, tls))
            return
        upstream = f"{now - ex.upstream_start:.4f}" if ex.upstream_start else "-"
        target = ex.target
        method = ex.method or b"-"
        self.lines.append(
            f'{self._stamp} {peer.decode()} "{method.decode()} {ex.url.decode("latin-1")}" '
            f'{ex.status} {ex.bytes_sent} vs={ex.vhost_name or "-"} '
            f'group={target.pool.name if target else "-"} member={ex.member_address or "-"} '
            f'upstream_time={upstream} total_time={now - ex.start:.4f} flag={ex.flag} '
            f'id={(ex.request_id or b"-").decode("latin-1")} tls={tls}\n')

    def _json_line(self, peer: bytes, ex: LoggedExchange, now: float, tls: str) -> str:
        target = ex.target
        return json.dumps({
            "time": self._stamp, "client": peer.decode(),
            "method": ex.method.decode() if ex.method else None,
            "target": ex.url.decode("latin-1"), "status": ex.status, "bytes": ex.bytes_sent,
            "vs": ex.vhost_name or None, "group": target.pool.name if target else None,
            "member": ex.member_address or None,
            "upstream_time": round(now - ex.upstream_start, 4) if ex.upstream_start else None,
            "total_time": round(now - ex.start, 4), "flag": ex.flag,
            "id": ex.request_id.decode("latin-1") if ex.request_id else None,
            "tls": None if tls == "-" else tls,
        }, ensure_ascii=False) + "\n"

    def flush(self) -> None:
        if not self.lines:
            return
        data = "".join(self.lines).encode("utf-8", "replace")
        self.lines.clear()
        with contextlib.suppress(OSError):  # a full disk must not stop the proxy
            os.write(self.fd, data)

    def close(self) -> None:
        self.flush()
        if self.fd != 2:
            os.close(self.fd)
            self.fd = 2
