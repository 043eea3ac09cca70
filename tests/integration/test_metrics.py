"""The control listener: Prometheus metrics, health endpoints, and the access log.

Metrics are fetched from ``GET /metrics`` on the control port and parsed with prometheus-client's
own text parser, as a Prometheus server would read them.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.support.backends import free_port, response
from tests.support.client import Connection, raw_exchange, request, status_of
from tests.support.proxy import simple_config

Families = dict[str, Metric]


async def scrape(proxy: Any) -> Families:
    reply = await request(proxy.control_port, "GET", "/metrics", host="127.0.0.1")
    assert reply.status == 200
    assert (reply.header("content-type") or "").startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(reply.body.decode())}


def value(families: Families, sample: str, **labels: str) -> float | None:
    """The value of the sample ``sample`` whose labels include ``labels`` (None if absent)."""
    family = families[sample.removesuffix("_total").removesuffix("_bucket")
                      .removesuffix("_count").removesuffix("_sum")]
    found = [s.value for s in family.samples
             if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, f"{sample} {labels} matches {len(found)} samples"
    return found[0] if found else None


async def wait_for(condition: Any, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def routed_config(live: str, dead: str) -> dict[str, Any]:
    """/ok → a live member, /dead → a refused member, /empty → a group with no member."""
    return {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{
            "name": "shop", "listen": "127.0.0.1:0", "domains": ["example.com"],
            "routes": [{"path": "/ok", "group": "web"},
                       {"path": "/dead", "group": "broken"},
                       {"path": "/empty", "group": "empty"}]}],
        "groups": [
            {"name": "web", "members": [{"address": live}]},
            {"name": "broken", "members": [{"address": dead}], "retry": {"tries": 1}},
            {"name": "empty", "members": []},
        ],
    }


async def test_requests_total_counts_by_virtual_server_group_member_and_code_class(
        backend_factory, proxy_factory):
    backend = await backend_factory(name="a")
    dead = f"127.0.0.1:{free_port()}"
    proxy = await proxy_factory(routed_config(backend.address, dead))
    conn = await Connection.open(proxy.port)
    statuses = [(await conn.request("GET", path)).status
                for path in ("/ok", "/ok/1", "/ok/2", "/nowhere", "/dead", "/empty")]
    await conn.close()
    assert statuses == [200, 200, 200, 404, 502, 503]

    families = await scrape(proxy)
    assert value(families, "slb_requests_total", virtual_server="shop", group="web",
                 member=backend.address, code="2xx") == 3
    assert value(families, "slb_requests_total", virtual_server="shop", group="",
                 member="", code="4xx") == 1
    assert value(families, "slb_requests_total", virtual_server="shop", group="broken",
                 member=dead, code="5xx") == 1
    assert value(families, "slb_requests_total", virtual_server="shop", group="empty",
                 code="5xx") == 1
    total = sum(s.value for s in families["slb_requests"].samples
                if s.name == "slb_requests_total")
    assert total == len(statuses)


async def test_request_duration_histogram_counts_every_request_in_cumulative_buckets(
        backend_factory, proxy_factory):
    async def handler(req, writer, backend):
        if req.path == "/slow":
            await asyncio.sleep(0.15)
        writer.write(response(200, b"done\n"))

    backend = await backend_factory(handler=handler)
    proxy = await proxy_factory(simple_config([backend.address]))
    conn = await Connection.open(proxy.port)
    for path in ("/fast", "/fast", "/fast", "/slow"):
        assert (await conn.request("GET", path)).status == 200
    await conn.close()

    families = await scrape(proxy)
    labels = {"virtual_server": "vs", "group": "g"}
    assert value(families, "slb_request_duration_seconds_count", **labels) == 4
    total_seconds = value(families, "slb_request_duration_seconds_sum", **labels)
    assert total_seconds is not None and total_seconds >= 0.14  # the slow one alone
    buckets = sorted(
        (float(s.labels["le"]), s.value) for s in families["slb_request_duration_seconds"].samples
        if s.name == "slb_request_duration_seconds_bucket"
        and all(s.labels.get(k) == v for k, v in labels.items()))
    assert buckets[-1] == (float("inf"), 4)
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    below_slow = max(count for bound, count in buckets if bound <= 0.1)
    at_slow = min(count for bound, count in buckets if bound >= 0.25)
    assert below_slow == 3  # the three fast requests, not the slow one
    assert at_slow == 4


async def test_connection_gauges_reflect_open_client_and_upstream_connections(
        backend_factory, proxy_factory):
    release = asyncio.Event()

    async def handler(req, writer, backend):
        await release.wait()
        writer.write(response(200, b"held\n"))

    backend = await backend_factory(handler=handler)
    proxy = await proxy_factory(simple_config([backend.address]))
    conns = [await Connection.open(proxy.port) for _ in range(3)]
    pending = [asyncio.ensure_future(c.request("GET", f"/{i}")) for i, c in enumerate(conns)]

    async def three_in_flight() -> bool:
        return len(backend.requests) == 3

    await wait_for(three_in_flight)
    families = await scrape(proxy)
    assert value(families, "slb_client_connections") == 3
    assert value(families, "slb_upstream_connections") == 3
    assert value(families, "slb_member_active_requests", group="g",
                 member=backend.address) == 3

    release.set()
    assert [r.status for r in await asyncio.gather(*pending)] == [200, 200, 200]
    families = await scrape(proxy)
    assert value(families, "slb_client_connections") == 3  # keep-alive: still open
    assert value(families, "slb_upstream_connections") == 3  # idle in the pool
    assert value(families, "slb_member_active_requests", group="g",
                 member=backend.address) == 0

    for conn in conns:
        await conn.close()
    backend.close_idle_connections()

    async def all_closed() -> bool:
        families = await scrape(proxy)
        return (value(families, "slb_client_connections") == 0
                and value(families, "slb_upstream_connections") == 0)

    await wait_for(all_closed)


async def test_refused_member_counts_connect_failure_retry_and_ejection(
        backend_factory, proxy_factory):
    backend = await backend_factory(name="live")
    dead = f"127.0.0.1:{free_port()}"
    proxy = await proxy_factory(simple_config(
        [dead, backend.address], retry={"tries": 3},
        passive_health={"max_fails": 1, "base_ejection": 30}))
    conn = await Connection.open(proxy.port)
    for i in range(4):
        reply = await conn.request("GET", f"/{i}")
        assert reply.status == 200
        assert reply.body.startswith(b"live ")
    await conn.close()

    families = await scrape(proxy)
    # wrr alternates between the two, so the refused member is tried once, then ejected
    assert value(families, "slb_upstream_connect_failures_total", group="g", member=dead) == 1
    assert value(families, "slb_retries_total", group="g") == 1
    assert value(families, "slb_ejections_total", group="g", member=dead) == 1
    assert value(families, "slb_ejections_total", group="g", member=backend.address) is None
    assert value(families, "slb_requests_total", group="g", member=backend.address,
                 code="2xx") == 4


async def test_bad_request_counts_as_client_error(backend_factory, proxy_factory):
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    families = await scrape(proxy)
    assert value(families, "slb_client_errors_total", code="400") is None

    raw = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\n\r\n")  # no Host field
    assert status_of(raw) == 400
    raw = await raw_exchange(proxy.port,
                             b"GET / HTTP/1.1\r\nHost: example.com\r\nBad Field\r\n\r\n")
    assert status_of(raw) == 400

    families = await scrape(proxy)
    assert value(families, "slb_client_errors_total", code="400") == 2
    assert backend.requests == []


async def test_body_over_the_limit_counts_once_as_client_error_and_as_request(backend_factory,
                                                                              proxy_factory):
    backend = await backend_factory()
    config = simple_config([backend.address])
    config["http"] = {"max_body_bytes": 1000}
    proxy = await proxy_factory(config)
    chunk = b"%x\r\n%s\r\n" % (800, b"x" * 800)
    raw = await raw_exchange(proxy.port, b"POST / HTTP/1.1\r\nHost: example.com\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunk + chunk)
    assert status_of(raw) == 413

    families = await scrape(proxy)
    assert value(families, "slb_client_errors_total", code="413") == 1
    assert value(families, "slb_requests_total", virtual_server="vs", group="g",
                 code="4xx") == 1


async def test_health_ready_and_unknown_control_paths(backend_factory, proxy_factory):
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    assert (await request(proxy.control_port, "GET", "/healthz", host="127.0.0.1")).status == 200
    assert (await request(proxy.control_port, "GET", "/ready", host="127.0.0.1")).status == 200
    missing = await request(proxy.control_port, "GET", "/nothing-here", host="127.0.0.1")
    assert missing.status == 404
    assert missing.header("content-type") == "application/json"
    body = json.loads(missing.body)
    assert body["error"] == "not_found"  # the error shape shared with the admin's API
    assert "/nothing-here" in body["message"] and body["details"] == []


# -- access log ----------------------------------------------------------------------------

LOG_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) "
    r'(?P<peer>\S+) "(?P<method>\S+) (?P<url>\S+)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r"vs=(?P<vs>\S+) group=(?P<group>\S+) member=(?P<member>\S+) "
    r"upstream_time=(?P<upstream>\S+) total_time=(?P<total>\S+) flag=(?P<flag>\S+) "
    r"id=(?P<id>\S+) tls=(?P<tls>\S+)$")


async def test_access_log_writes_one_line_per_request(backend_factory, proxy_factory,
                                                      tmp_path: Path):
    backend = await backend_factory(name="a")
    log_path = tmp_path / "access.log"
    config = simple_config([backend.address])
    config["virtual_servers"][0]["routes"] = [{"path": "/app", "group": "g"}]
    config["access_log"] = {"enabled": True, "path": str(log_path)}
    proxy = await proxy_factory(config)
    conn = await Connection.open(proxy.port)
    ok = await conn.request("GET", "/app/page?x=1")
    created = await conn.request("POST", "/app/form", body=b"a=1")
    missing = await conn.request("GET", "/elsewhere")
    await conn.close()
    assert (ok.status, created.status, missing.status) == (200, 200, 404)

    async def three_lines_flushed() -> bool:  # the sweeper flushes every half second
        return log_path.exists() and log_path.read_text().count("\n") >= 3

    await wait_for(three_lines_flushed)
    lines = log_path.read_text().splitlines()
    assert len(lines) == 3
    entries = []
    for line in lines:
        match = LOG_LINE.match(line)
        assert match, line
        entries.append(match.groupdict())
    first, second, third = entries
    assert (first["method"], first["url"], first["status"]) == ("GET", "/app/page?x=1", "200")
    assert first["bytes"] == str(len(ok.body))
    assert (first["vs"], first["group"], first["member"]) == ("vs", "g", backend.address)
    assert float(first["upstream"]) <= float(first["total"]) < 5
    assert first["peer"] == "127.0.0.1"
    assert first["tls"] == "-"  # a plain connection
    assert first["id"] == backend.requests[0].header("x-request-id")
    assert (second["method"], second["url"], second["status"]) == ("POST", "/app/form", "200")
    assert second["bytes"] == str(len(created.body))
    assert (third["method"], third["url"], third["status"]) == ("GET", "/elsewhere", "404")
    assert (third["member"], third["upstream"], third["flag"]) == ("-", "-", "NR")
    assert float(third["total"]) >= 0


async def test_closing_the_proxy_flushes_the_access_log(backend_factory, proxy_factory,
                                                        tmp_path: Path):
    backend = await backend_factory()
    log_path = tmp_path / "access.log"
    config = simple_config([backend.address])
    config["access_log"] = {"enabled": True, "path": str(log_path)}
    proxy = await proxy_factory(config)
    assert (await request(proxy.port, "GET", "/bye")).status == 200
    await proxy.close()
    lines = log_path.read_text().splitlines()
    assert len(lines) == 1
    assert '"GET /bye" 200 ' in lines[0]


async def test_access_log_is_off_by_default(backend_factory, proxy_factory, tmp_path: Path):
    backend = await backend_factory()
    log_path = tmp_path / "access.log"
    config = simple_config([backend.address])
    config["access_log"] = {"path": str(log_path)}  # a path, but not enabled
    proxy = await proxy_factory(config)
    assert (await request(proxy.port, "GET", "/quiet")).status == 200
    await proxy.close()
    assert not log_path.exists()
