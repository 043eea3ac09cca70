"""The Consul HTTP API double answers like Consul, through py-consul's asyncio client and raw HTTP.

Each behaviour checked here is one the admin's watch relies on (see tests/consul_double/README.md
and /work/shared/reference/consul.md section A): response shapes, filters, blocking semantics,
index bookkeeping, ACLs and the fault hooks.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import consul
import consul.aio
import pytest

from tests.consul_double import ConsulDouble, start_process
from tests.support.backends import response


def client(d: ConsulDouble, **kwargs: Any) -> consul.aio.Consul:
    return consul.aio.Consul(host=d.host, port=d.port, **kwargs)


async def raw(d: ConsulDouble | str, method: str, target: str, *, body: bytes = b"",
              headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection (Connection: close); (status, headers, body)."""
    address = d if isinstance(d, str) else d.address
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {address}", "Connection: close",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


async def eventually(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def statuses(entry: dict[str, Any]) -> dict[str, str]:
    return {c["CheckID"]: c["Status"] for c in entry["Checks"]}


# ------------------------------------------------------------------------------------ shapes
async def test_health_service_entry_has_node_service_and_checks_like_consul(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        assert await c.agent.service.register(
            "web", service_id="web-1", address="10.0.0.1", port=8080, tags=["v1"],
            meta={"zone": "a"}, check=consul.Check.ttl("10s"))
        index, entries = await c.health.service("web")

    assert isinstance(index, str) and int(index) >= 1
    assert len(entries) == 1
    node, service, checks = entries[0]["Node"], entries[0]["Service"], entries[0]["Checks"]
    assert {"ID", "Node", "Address", "Datacenter", "TaggedAddresses", "Meta"} <= node.keys()
    assert node["Node"] == double.node_name and node["Address"] == "127.0.0.1"
    assert node["Datacenter"] == "dc1"
    assert service["ID"] == "web-1" and service["Service"] == "web"
    assert service["Tags"] == ["v1"] and service["Meta"] == {"zone": "a"}
    assert service["Address"] == "10.0.0.1" and service["Port"] == 8080
    assert service["Weights"] == {"Passing": 1, "Warning": 1}
    assert service["TaggedAddresses"]["lan_ipv4"] == {"Address": "10.0.0.1", "Port": 8080}
    # Node checks come first; a registered TTL check starts critical.
    assert [c["CheckID"] for c in checks] == ["serfHealth", "service:web-1"]
    serf, own = checks
    assert serf["ServiceID"] == "" and serf["ServiceTags"] == [] and serf["Status"] == "passing"
    assert own["Status"] == "critical" and own["Type"] == "ttl"
    assert own["Name"] == "Service 'web' check"
    assert own["ServiceName"] == "web" and own["ServiceTags"] == ["v1"]
    for check in checks:
        assert {"Node", "CheckID", "Name", "Status", "Notes", "Output", "ServiceID",
                "ServiceName", "ServiceTags"} <= check.keys()


async def test_unknown_service_is_an_empty_list_with_index_headers(double: ConsulDouble) -> None:
    async with client(double) as c:
        index, entries = await c.health.service("nope")
    assert entries == [] and int(index) >= 1

    status, headers, body = await raw(double, "GET", "/v1/health/service/nope")
    assert status == 200 and body == b"[]"
    assert headers["content-type"] == "application/json"
    assert int(headers["x-consul-index"]) >= 1
    assert headers["x-consul-knownleader"] == "true"
    assert headers["x-consul-lastcontact"] == "0"


async def test_service_without_tags_or_meta_has_empty_tags_and_null_meta(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.agent.service.register("bare", port=9000)
        _, entries = await c.health.service("bare")
    service = entries[0]["Service"]
    assert service["ID"] == "bare"  # ID defaults to Name
    assert service["Tags"] == [] and service["Meta"] is None and service["Address"] == ""
    assert "TaggedAddresses" not in service  # omitempty when there is no IP address
    assert [c["CheckID"] for c in entries[0]["Checks"]] == ["serfHealth"]


async def test_custom_weights_are_returned_and_zero_passing_weight_is_refused(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.agent.service.register("web", service_id="w1", port=1,
                                       weights={"Passing": 10, "Warning": 0})
        _, entries = await c.health.service("web")
        assert entries[0]["Service"]["Weights"] == {"Passing": 10, "Warning": 0}
        with pytest.raises(consul.exceptions.BadRequest, match="Passing must be greater than 0"):
            await c.agent.service.register("web", service_id="w2", port=2,
                                           weights={"Passing": 0, "Warning": 1})


async def test_registration_accepts_keys_in_any_case_and_snake_case(double: ConsulDouble) -> None:
    body = {"NAME": "api", "Id": "api-1", "port": 81, "TAGS": ["x"],
            "enable_tag_override": True, "Weights": {"passing": 3, "WARNING": 2},
            "Check": {"TTL": "30s", "Status": "passing", "check_id": "api-ttl"}}
    status, _, _ = await raw(double, "PUT", "/v1/agent/service/register",
                             body=json.dumps(body).encode())
    assert status == 200
    [entry] = double.health("api")
    assert entry["Service"]["ID"] == "api-1" and entry["Service"]["Tags"] == ["x"]
    assert entry["Service"]["EnableTagOverride"] is True
    assert entry["Service"]["Weights"] == {"Passing": 3, "Warning": 2}
    assert statuses(entry) == {"serfHealth": "passing", "api-ttl": "passing"}


async def test_invalid_registrations_are_refused_with_400(double: ConsulDouble) -> None:
    cases = [
        ({"port": 1}, "Missing service name"),
        ({"name": "a", "check": {"status": "passing"}}, "TTL must be > 0"),
        ({"name": "a", "check": {"http": "http://x/", "ttl": "1s"}}, "Interval"),
        ({"name": "a", "check": {"ttl": "1s", "status": "up"}}, "Status for checks must"),
    ]
    for body, message in cases:
        status, _, payload = await raw(double, "PUT", "/v1/agent/service/register",
                                       body=json.dumps(body).encode())
        assert status == 400, body
        assert message in payload.decode(), payload
    assert double.health("a") == []


# ------------------------------------------------------------------------------------ filters
async def test_passing_filter_drops_warning_critical_and_node_critical_instances(
        double: ConsulDouble) -> None:
    double.register("web", "ok", "10.0.0.1", 80, node="n1", node_address="10.0.1.1")
    double.register("web", "warn", "10.0.0.2", 80, node="n1", status="warning")
    double.register("web", "crit", "10.0.0.3", 80, node="n1", status="critical")
    double.register("web", "node-down", "10.0.0.4", 80, node="n2", node_address="10.0.1.2")
    double.set_node_health("n2", "critical")

    async with client(double) as c:
        _, everything = await c.health.service("web")
        _, passing = await c.health.service("web", passing=True)
    assert sorted(e["Service"]["ID"] for e in everything) == ["crit", "node-down", "ok", "warn"]
    assert [e["Service"]["ID"] for e in passing] == ["ok"]

    # A bare ?passing means true; ?passing=false means no filter (Go ParseBool spellings).
    for target, expected in [("?passing", 1), ("?passing=T", 1), ("?passing=false", 4),
                             ("?passing=0", 4)]:
        status, _, body = await raw(double, "GET", "/v1/health/service/web" + target)
        assert status == 200 and len(json.loads(body)) == expected, target

    status, headers, body = await raw(double, "GET", "/v1/health/service/web?passing=yes")
    assert status == 400 and body == b"Invalid value for ?passing"
    assert "x-consul-index" in headers


async def test_tag_filter_is_case_insensitive_and_requires_every_tag(
        double: ConsulDouble) -> None:
    double.register("web", "a", "10.0.0.1", 80, tags=["Blue", "canary"])
    double.register("web", "b", "10.0.0.2", 80, tags=["blue"])
    double.register("web", "c", "10.0.0.3", 80)
    async with client(double) as c:
        _, blue = await c.health.service("web", tag="blue")
        _, both = await c.health.service("web", tag=["blue", "CANARY"])
        _, none = await c.health.service("web", tag="green")
    assert sorted(e["Service"]["ID"] for e in blue) == ["a", "b"]
    assert [e["Service"]["ID"] for e in both] == ["a"]
    assert none == []


async def test_entries_are_sorted_by_node_then_service_id(double: ConsulDouble) -> None:
    double.register("web", "z", "10.0.0.1", 80, node="node-b", node_address="10.1.0.2")
    double.register("web", "y", "10.0.0.2", 80, node="node-a", node_address="10.1.0.1")
    double.register("web", "x", "10.0.0.3", 80, node="node-b")
    order = [(e["Node"]["Node"], e["Service"]["ID"]) for e in double.health("web")]
    assert order == [("node-a", "y"), ("node-b", "x"), ("node-b", "z")]


# ------------------------------------------------------------------------------------ blocking
async def test_blocking_query_holds_for_wait_despite_writes_to_other_services(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    async with client(double) as c:
        index, _ = await c.health.service("web")

        async def churn() -> None:
            for i in range(5):
                await asyncio.sleep(0.1)
                double.register("api", f"api-{i}", "10.0.0.9", 80 + i)

        task = asyncio.create_task(churn())
        started = time.monotonic()
        again, entries = await c.health.service("web", index=index, wait="1s")
        elapsed = time.monotonic() - started
        await task
    assert again == index and len(entries) == 1
    assert double.index > int(index)  # the global index moved, the service's did not
    assert 0.95 <= elapsed <= 1.0 * 17 / 16 + 0.3


async def test_blocking_query_returns_promptly_after_a_relevant_change(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    async with client(double) as c:
        index, _ = await c.health.service("web")
        watch = asyncio.create_task(c.health.service("web", index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        changed_at = time.monotonic()
        double.set_check("web-1", "critical", output="connection refused")
        new_index, entries = await asyncio.wait_for(watch, 2)
        latency = time.monotonic() - changed_at
    assert latency < 0.2
    assert int(new_index) > int(index)
    assert statuses(entries[0])["service:web-1"] == "critical"
    assert entries[0]["Checks"][1]["Output"] == "connection refused"


async def test_node_health_change_wakes_watchers_of_services_on_that_node(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80, node="n1", node_address="10.1.0.1")
    async with client(double) as c:
        index, _ = await c.health.service("web")
        watch = asyncio.create_task(c.health.service("web", index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        double.set_node_health("n1", "critical")
        new_index, entries = await asyncio.wait_for(watch, 1)
    assert int(new_index) > int(index)
    assert statuses(entries[0])["serfHealth"] == "critical"
    assert entries[0]["Checks"][0]["Output"] == "Agent not live or unreachable"


async def test_blocking_query_returns_at_once_when_the_client_index_is_behind(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    double.set_check("web-1", "warning")
    current = double.service_index("web")
    async with client(double) as c:
        started = time.monotonic()
        index, entries = await c.health.service("web", index=current - 1, wait="5s")
        elapsed = time.monotonic() - started
    assert elapsed < 0.2
    assert int(index) == current and len(entries) == 1


async def test_index_zero_or_missing_does_not_block(double: ConsulDouble) -> None:
    started = time.monotonic()
    status, headers, _ = await raw(double, "GET", "/v1/health/service/web?index=0&wait=5s")
    status2, _, _ = await raw(double, "GET", "/v1/health/service/web?wait=5s")
    assert status == status2 == 200
    assert time.monotonic() - started < 0.3
    assert int(headers["x-consul-index"]) >= 1  # never 0, or clients would busy-loop


async def test_bad_wait_or_index_values_are_400(double: ConsulDouble) -> None:
    for target, message in [("?index=1&wait=10", b"Invalid wait time"),
                            ("?index=1&wait=soon", b"Invalid wait time"),
                            ("?index=-1", b"Invalid index"),
                            ("?index=abc", b"Invalid index")]:
        status, headers, body = await raw(double, "GET", "/v1/health/service/web" + target)
        assert (status, body) == (400, message), target
        assert "x-consul-index" not in headers


async def test_reset_index_returns_inflight_watch_with_lower_index_and_old_index_then_blocks(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    for i in range(10):
        double.set_check("web-1", "warning" if i % 2 else "passing", output=str(i))
    async with client(double) as c:
        index, _ = await c.health.service("web")
        watch = asyncio.create_task(c.health.service("web", index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        double.reset_index(3)
        restored, entries = await asyncio.wait_for(watch, 1)
        assert int(restored) <= 3 < int(index) and len(entries) == 1

        # A client that kept the old, higher index now waits its whole wait for nothing.
        started = time.monotonic()
        stuck, _ = await c.health.service("web", index=index, wait="0.5s")
        assert time.monotonic() - started >= 0.45
        assert stuck == restored

        # Writes continue from the restored index.
        double.set_check("web-1", "critical")
        assert double.service_index("web") == 4


async def test_touch_service_wakes_watchers_without_changing_content(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    async with client(double) as c:
        index, before = await c.health.service("web")
        watch = asyncio.create_task(c.health.service("web", index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        double.touch_service("web")
        new_index, after = await asyncio.wait_for(watch, 1)
    assert int(new_index) > int(index) and after == before


# ------------------------------------------------------------------------------------ agent API
async def test_ttl_check_follows_pass_warn_fail_and_expires_to_critical(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.agent.service.register("web", service_id="web-1", port=80,
                                       check=consul.Check.ttl("300ms"))
        await c.agent.check.ttl_pass("service:web-1", notes="all good")
        assert statuses(double.health("web")[0])["service:web-1"] == "passing"
        assert double.health("web")[0]["Checks"][1]["Output"] == "all good"
        await c.agent.check.ttl_warn("service:web-1")
        assert statuses(double.health("web")[0])["service:web-1"] == "warning"
        status, _, _ = await raw(double, "PUT", "/v1/agent/check/update/service:web-1",
                                 body=b'{"Status": "passing", "Output": "fine"}')
        assert status == 200
        assert statuses(double.health("web")[0])["service:web-1"] == "passing"
        # No update within the TTL: critical, keeping the last output.
        await eventually(lambda: statuses(double.health("web")[0])["service:web-1"]
                         == "critical", timeout=1.0)
    output = double.health("web")[0]["Checks"][1]["Output"]
    assert output == "TTL expired (last output before timeout follows): fine"


async def test_ttl_update_of_unknown_check_is_404(double: ConsulDouble) -> None:
    status, _, body = await raw(double, "PUT", "/v1/agent/check/pass/missing")
    assert status == 404 and body == b'Unknown check ID "missing"'
    async with client(double) as c:
        assert await c.agent.check.ttl_pass("missing") is False  # py-consul: 404 -> False


async def test_reregistering_a_service_keeps_its_check_status(double: ConsulDouble) -> None:
    async with client(double) as c:
        check = consul.Check.ttl("10s")
        await c.agent.service.register("web", service_id="web-1", port=80, check=check)
        await c.agent.check.ttl_pass("service:web-1")
        check_with_status = {**check, "status": "critical"}
        await c.agent.service.register("web", service_id="web-1", port=81, tags=["new"],
                                       check=check_with_status)
    [entry] = double.health("web")
    assert entry["Service"]["Port"] == 81 and entry["Service"]["Tags"] == ["new"]
    assert statuses(entry)["service:web-1"] == "passing"
    assert entry["Checks"][1]["ServiceTags"] == ["new"]


async def test_service_maintenance_is_a_critical_check_sorted_before_service_checks(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.agent.service.register("web", service_id="web-1", port=80,
                                       check={"ttl": "10s", "status": "passing"})
        assert await c.agent.service.maintenance("web-1", True, reason="deploy 42")
        _, entries = await c.health.service("web")
        _, passing = await c.health.service("web", passing=True)
        checks = entries[0]["Checks"]
        assert [x["CheckID"] for x in checks] == [
            "serfHealth", "_service_maintenance:web-1", "service:web-1"]
        maint = checks[1]
        assert maint["Status"] == "critical" and maint["Notes"] == "deploy 42"
        assert maint["Name"] == "Service Maintenance Mode" and maint["ServiceID"] == "web-1"
        assert passing == []

        assert await c.agent.service.maintenance("web-1", False)
        _, passing = await c.health.service("web", passing=True)
        assert len(passing) == 1

        # Unknown service: 404 (py-consul returns False).
        assert await c.agent.service.maintenance("nope", True) is False


async def test_node_maintenance_takes_every_service_on_the_node_out_of_passing(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    double.register("api", "api-1", "10.0.0.1", 81)
    async with client(double) as c:
        assert await c.agent.maintenance(True)
        _, web = await c.health.service("web", passing=True)
        _, api = await c.health.service("api")
        assert web == []
        node_check = api[0]["Checks"][0]
        assert node_check["CheckID"] == "_node_maintenance"
        assert node_check["Status"] == "critical" and node_check["ServiceID"] == ""
        assert node_check["Notes"].startswith("Maintenance mode is enabled for this node")
        assert await c.agent.maintenance(False)
        _, web = await c.health.service("web", passing=True)
        assert len(web) == 1


async def test_deregister_removes_the_instance_and_unknown_id_is_404(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        await c.agent.service.register("web", service_id="web-1", port=80)
        index, _ = await c.health.service("web")
        assert await c.agent.service.deregister("web-1")
        new_index, entries = await c.health.service("web")
        assert entries == [] and int(new_index) > int(index)
        assert await c.agent.service.deregister("web-1") is False  # 404


async def test_http_check_is_probed_against_the_backend(double: ConsulDouble,
                                                        backend_factory: Any) -> None:
    replies = {"status": 200}

    async def handler(request: Any, writer: asyncio.StreamWriter, backend: Any) -> None:
        writer.write(response(replies["status"], b"hello", reason="X"))

    backend = await backend_factory(handler=handler, name="b")
    async with client(double) as c:
        await c.agent.service.register(
            "web", service_id="web-1", address="127.0.0.1", port=backend.port,
            check=consul.Check.http(f"http://{backend.address}/health", "100ms", timeout="1s"))

        def status() -> str:
            return statuses(double.health("web")[0])["service:web-1"]

        await eventually(lambda: status() == "passing")
        output = double.health("web")[0]["Checks"][1]["Output"]
        assert output == f"HTTP GET http://{backend.address}/health: 200 OK Output: hello"
        replies["status"] = 429
        await eventually(lambda: status() == "warning")
        replies["status"] = 503
        await eventually(lambda: status() == "critical")
    assert backend.requests[0].path == "/health"
    assert backend.requests[0].header("user-agent") == "Consul Health Check"


# ------------------------------------------------------------------------------------ catalog
async def test_catalog_register_puts_services_on_other_nodes(double: ConsulDouble) -> None:
    async with client(double) as c:
        assert await c.catalog.register(
            "node-b", "10.0.2.2",
            service={"Service": "web", "ID": "web-1", "Port": 80, "Tags": ["b"]},
            check={"CheckID": "service:web-1", "Name": "web", "Status": "passing",
                   "ServiceID": "web-1"})
        await c.agent.service.register("web", service_id="web-1", address="10.0.0.1", port=80)
        _, entries = await c.health.service("web")
        # The same service ID on two nodes: two instances (identity is Node + Service.ID).
        assert [(e["Node"]["Node"], e["Service"]["ID"]) for e in entries] == [
            (double.node_name, "web-1"), ("node-b", "web-1")]
        remote = entries[1]
        assert remote["Node"]["Address"] == "10.0.2.2" and remote["Service"]["Address"] == ""
        # A catalog-registered node has no agent, hence no serfHealth.
        assert statuses(remote) == {"service:web-1": "passing"}
        _, catalog_entries = await c.catalog.service("web")
        assert {e["Node"] for e in catalog_entries} == {double.node_name, "node-b"}

        assert await c.catalog.deregister("node-b")
        _, entries = await c.health.service("web")
        assert [e["Node"]["Node"] for e in entries] == [double.node_name]


async def test_catalog_services_moves_on_registrations_not_on_health(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80, tags=["v1"])
    async with client(double) as c:
        index, services = await c.catalog.services()
        assert services == {"consul": [], "web": ["v1"]}

        double.set_check("web-1", "critical")
        started = time.monotonic()
        same, _ = await c.catalog.services(index=index, wait="0.4s")
        assert same == index and time.monotonic() - started >= 0.38

        watch = asyncio.create_task(c.catalog.services(index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        double.register("web", "web-2", "10.0.0.2", 80, tags=["v2"])
        new_index, services = await asyncio.wait_for(watch, 1)
    assert int(new_index) > int(index)
    assert services == {"consul": [], "web": ["v1", "v2"]}


# ------------------------------------------------------------------------------------ ACLs
async def test_acl_unknown_token_is_403_and_missing_token_sees_nothing() -> None:
    d = await ConsulDouble.start(acl_token="s3cret")
    try:
        d.register("web", "web-1", "10.0.0.1", 80)
        async with client(d, token="wrong") as c:
            with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
                await c.health.service("web")
        async with client(d, token="s3cret") as c:
            _, entries = await c.health.service("web")
            assert len(entries) == 1
        status, _, body = await raw(d, "GET", "/v1/health/service/web",
                                    headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and len(json.loads(body)) == 1

        # No token: the anonymous token's reads are filtered (an empty pool!), writes refused.
        status, headers, body = await raw(d, "GET", "/v1/health/service/web")
        assert (status, body) == (200, b"[]") and "x-consul-index" in headers
        async with client(d) as c:
            with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
                await c.agent.service.register("api", port=1)
        assert d.health("api") == []
    finally:
        await d.close()


# ------------------------------------------------------------------------------------ faults
async def test_fail_with_answers_the_next_requests_with_the_error_then_recovers(
        double: ConsulDouble) -> None:
    double.fail_with(500, "No cluster leader", count=2)
    async with client(double) as c:
        for _ in range(2):
            with pytest.raises(consul.ConsulException, match="500 No cluster leader"):
                await c.health.service("web")
        _, entries = await c.health.service("web")
        assert entries == []

        double.fail_with(429, path="/v1/health/")
        with pytest.raises(consul.exceptions.ClientError, match="429"):
            await c.health.service("web")
        assert await c.status.leader() == "127.0.0.1:8300"  # other paths unaffected
        status, headers, _ = await raw(double, "GET", "/v1/health/service/web")
        assert status == 429 and "x-consul-index" not in headers
        double.clear_faults()
        _, entries = await c.health.service("web")
        assert entries == []


async def test_disconnect_closes_the_connection_without_an_answer(double: ConsulDouble) -> None:
    double.disconnect(1)
    reader, writer = await asyncio.open_connection(double.host, double.port)
    writer.write(b"GET /v1/health/service/web HTTP/1.1\r\nHost: x\r\n\r\n")
    status_line = await asyncio.wait_for(reader.read(-1), 2)
    writer.close()
    await writer.wait_closed()
    assert status_line == b""  # closed, nothing sent
    double.disconnect(None)  # every request, until clear_faults()
    async with client(double) as c:
        with pytest.raises(aiohttp.ClientError):
            await c.health.service("web")
        double.clear_faults()
        _, entries = await c.health.service("web")
    assert entries == []


async def test_hang_accepts_but_never_answers_until_the_client_times_out(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    async with client(double, connections_timeout=5) as watcher, \
            client(double, connections_timeout=0.3) as c:
        index, _ = await watcher.health.service("web")
        watch = asyncio.create_task(watcher.health.service("web", index=index, wait="0.2s"))
        await eventually(lambda: double.blocking_queries == 1)
        double.hang(True)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await c.health.service("web")
        assert 0.25 <= time.monotonic() - started < 1
        # The long poll in flight reached its wait (0.2 s + jitter) but is not answered either.
        await asyncio.sleep(0.05)
        assert not watch.done()
        assert double.hung_requests == 2
        double.hang(False)
        _, entries = await c.health.service("web")
        assert len(entries) == 1
        assert not watch.done()  # a request caught by the hang stays unanswered
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)


async def test_stop_refuses_connections_and_restart_serves_the_same_catalog(
        double: ConsulDouble) -> None:
    double.register("web", "web-1", "10.0.0.1", 80)
    address, index = double.address, double.service_index("web")
    async with client(double) as c:
        watch = asyncio.create_task(c.health.service("web", index=index, wait="5s"))
        await eventually(lambda: double.blocking_queries == 1)
        await double.stop()
        with pytest.raises(aiohttp.ClientError):
            await asyncio.wait_for(watch, 1)  # the long poll is cut
        with pytest.raises(aiohttp.ClientConnectorError):
            await c.health.service("web")
        await double.restart()
        assert double.address == address
        new_index, entries = await c.health.service("web")
    assert int(new_index) == index and len(entries) == 1


async def test_connections_over_the_per_client_cap_get_a_raw_429() -> None:
    d = await ConsulDouble.start(max_conns_per_client=2)
    writers = []
    try:
        for _ in range(2):
            _, writer = await asyncio.open_connection(d.host, d.port)
            writers.append(writer)
        await eventually(lambda: d.connections == 2)
        reader, writer = await asyncio.open_connection(d.host, d.port)
        writers.append(writer)
        rejected = await asyncio.wait_for(reader.read(-1), 2)
        assert rejected == b"HTTP/1.1 429 Too Many Requests\r\n\r\n"
        assert d.rejected_connections == 1

        first = writers.pop(0)
        first.close()
        await first.wait_closed()
        await eventually(lambda: d.connections == 1)
        status, _, _ = await raw(d, "GET", "/v1/status/leader")
        assert status == 200
    finally:
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        await d.close()


async def test_counters_report_requests_per_path_and_blocking_queries(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        index, _ = await c.health.service("web")
        await c.health.service("web")
        await c.catalog.services()
        watches = [asyncio.create_task(c.health.service("web", index=index, wait="5s"))
                   for _ in range(3)]
        await eventually(lambda: double.blocking_queries == 3)
        double.register("web", "web-1", "10.0.0.1", 80)
        await asyncio.wait_for(asyncio.gather(*watches), 1)
    assert double.blocking_queries == 0
    assert double.requests["/v1/health/service/web"] == 5
    assert double.requests["/v1/catalog/services"] == 1


async def test_unknown_paths_are_404_and_wrong_methods_405(double: ConsulDouble) -> None:
    status, _, _ = await raw(double, "GET", "/v1/nope")
    assert status == 404
    status, headers, body = await raw(double, "GET", "/v1/agent/service/register")
    assert status == 405 and headers["allow"] == "PUT" and body == b"method GET not allowed"


# ------------------------------------------------------------------------------------ process
async def test_process_mode_prints_its_address_and_serves_the_control_api() -> None:
    async with await start_process() as proc:
        status, _, body = await raw(proc.address, "GET", "/v1/status/leader")
        assert (status, json.loads(body)) == (200, "127.0.0.1:8300")
        registration = {"service": "web", "id": "web-1", "address": "10.0.0.1", "port": 80,
                        "node": "n1", "node_address": "10.1.0.1"}
        status, _, _ = await raw(proc.address, "PUT", "/_double/register",
                                 body=json.dumps(registration).encode())
        assert status == 200
        status, _, _ = await raw(proc.address, "PUT", "/_double/node-health/n1?status=critical")
        assert status == 200
        status, _, body = await raw(proc.address, "GET", "/v1/health/service/web?passing")
        assert (status, json.loads(body)) == (200, [])
        await raw(proc.address, "PUT", "/_double/fail?status=500&count=1")
        status, _, body = await raw(proc.address, "GET", "/v1/health/service/web")
        assert (status, body) == (500, b"No cluster leader")
        status, _, body = await raw(proc.address, "GET", "/_double/stats")
        assert json.loads(body)["requests"]["/v1/health/service/web"] == 2
    assert proc.proc.returncode == 0
