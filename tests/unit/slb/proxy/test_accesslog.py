"""``slb.proxy.accesslog``: one line per request, written in batches."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from slb.model import AccessLog as Settings
from slb.proxy.accesslog import AccessLog


@dataclass
class Named:
    name: str


@dataclass
class Routed:
    pool: Named


@dataclass
class Finished:
    method: bytes | None = b"GET"
    url: bytes = b"/api/x?y=1"
    status: int = 200
    bytes_sent: int = 1234
    vhost_name: str | None = "shop"
    target: Routed | None = None
    member_address: str | None = "10.0.0.5:80"
    upstream_start: float = 10.0
    start: float = 9.999
    flag: str = "-"
    request_id: bytes | None = b"9f2c01aa-1b"


def test_a_line_names_the_request_its_route_and_its_timings(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(Settings(enabled=True, path=str(path)))
    log.log(b"127.0.0.1", Finished(target=Routed(Named("api"))), now=10.002)
    log.log(b"::1", Finished(method=None, target=None, member_address=None, upstream_start=0.0,
                             status=404, flag="NR", request_id=None), now=10.0)
    assert path.read_text() == ""  # batched: nothing written before a flush
    log.close()
    first, second = path.read_text().splitlines()
    assert re.fullmatch(r'\S+Z 127\.0\.0\.1 "GET /api/x\?y=1" 200 1234 vs=shop group=api '
                        r'member=10\.0\.0\.5:80 upstream_time=0\.0020 total_time=0\.0030 '
                        r'flag=- id=9f2c01aa-1b tls=-', first)
    assert second.endswith('"- /api/x?y=1" 404 1234 vs=shop group=- member=- upstream_time=- '
                           'total_time=0.0010 flag=NR id=- tls=-')


def test_json_format_writes_one_object_per_line_with_nulls_for_missing(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(Settings(enabled=True, path=str(path), format="json"))
    log.log(b"127.0.0.1", Finished(target=Routed(Named("api"))), now=10.002, tls="TLSv1.3")
    log.log(b"::1", Finished(method=None, target=None, member_address=None, upstream_start=0.0,
                             status=404, flag="NR", request_id=None), now=10.0)
    log.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert {k: first[k] for k in ("client", "method", "target", "status", "group", "member",
                                  "upstream_time", "id", "tls")} == {
        "client": "127.0.0.1", "method": "GET", "target": "/api/x?y=1", "status": 200,
        "group": "api", "member": "10.0.0.5:80", "upstream_time": 0.002, "id": "9f2c01aa-1b",
        "tls": "TLSv1.3"}
    assert (second["method"], second["group"], second["upstream_time"], second["flag"],
            second["id"], second["tls"]) == (None, None, None, "NR", None, None)
