"""Consul as a member source: ``members_from_health`` and the blocking watch (sources/consul.py).

``members_from_health`` is fed Consul-shaped ``/v1/health/service`` entries. The watcher runs
against the Consul double (tests/consul_double) on the test's loop, with py-consul's asyncio
client, as the admin runs it; what it hands to ``on_members`` and ``on_error`` is recorded.
Request counts come from the double (``double.requests``), so a busy loop or a missing backoff
shows as too many requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from admin.domain.members import Discovered
from admin.sources.consul import (
    READ_BURST,
    READS_PER_SECOND,
    ConsulWatcher,
    members_from_health,
)
from tests.consul_double import ConsulDouble

HEALTH_PATH = "/v1/health/service/web"
WEB = [{"name": "g", "consul": {"service": "web", "tag": None}}]


# -- members_from_health --------------------------------------------------------------------------


def check(status: str, check_id: str = "service:web-1", name: str = "", notes: str = "",
          service_id: str = "web-1") -> dict[str, Any]:
    return {"Node": "n1", "CheckID": check_id, "Name": name or f"check {check_id}",
            "Status": status, "Notes": notes, "Output": "", "ServiceID": service_id,
            "ServiceName": "web", "ServiceTags": [], "Type": "", "CreateIndex": 5,
            "ModifyIndex": 5}


def serf(status: str = "passing") -> dict[str, Any]:
    return check(status, "serfHealth", "Serf Health Status", service_id="")


def entry(service_address: str = "10.0.0.1", port: int = 8080, *,
          node_address: str = "10.9.9.9", checks: list[dict[str, Any]] | None = None,
          weights: dict[str, int] | None = None, service_id: str = "web-1"
          ) -> dict[str, Any]:
    """One ``/v1/health/service/web`` entry as Consul returns it."""
    return {
        "Node": {"ID": "0c3b", "Node": "n1", "Address": node_address, "Datacenter": "dc1",
                 "TaggedAddresses": None, "Meta": None, "CreateIndex": 3, "ModifyIndex": 3},
        "Service": {"ID": service_id, "Service": "web", "Tags": [], "Address": service_address,
                    "Meta": None, "Port": port,
                    "Weights": weights if weights is not None else {"Passing": 1,
                                                                    "Warning": 1},
                    "EnableTagOverride": False, "CreateIndex": 4, "ModifyIndex": 4},
        "Checks": checks if checks is not None else [serf(), check("passing")],
    }


def only(entries: list[dict[str, Any]]) -> Discovered:
    [member] = members_from_health(entries)
    return member


def test_service_address_is_used_and_an_empty_one_falls_back_to_the_node_address() -> None:
    members = members_from_health([
        entry("10.0.0.1", 8080, node_address="10.9.9.1", service_id="web-1"),
        entry("", 8081, node_address="10.9.9.2", service_id="web-2"),
    ])
    assert [m.address for m in members] == ["10.0.0.1:8080", "10.9.9.2:8081"]
    assert all(m.source == "consul" for m in members)


def test_ipv6_address_is_bracketed() -> None:
    assert only([entry("2001:db8::5", 443)]).address == "[2001:db8::5]:443"


def test_all_checks_passing_is_passing_with_the_passing_weight() -> None:
    member = only([entry(weights={"Passing": 7, "Warning": 2})])
    assert (member.health, member.weight, member.maintenance) == ("passing", 7, False)
    assert member.health_detail == ""


def test_worst_check_wins() -> None:
    warned = only([entry(checks=[serf(), check("passing", "service:web-1:1"),
                                 check("warning", "service:web-1:2", "disk")])])
    assert warned.health == "warning"
    assert warned.health_detail == "disk: warning"
    failed = only([entry(checks=[serf(), check("warning", "service:web-1:1", "disk"),
                                 check("critical", "service:web-1:2", "http")])])
    assert failed.health == "critical"
    assert failed.health_detail == "disk: warning; http: critical"


def test_unknown_check_status_counts_as_critical() -> None:
    assert only([entry(checks=[check("exploded")])]).health == "critical"


def test_critical_node_check_makes_the_member_critical() -> None:
    member = only([entry(checks=[serf("critical"), check("passing")])])
    assert member.health == "critical"
    assert "Serf Health Status: critical" in member.health_detail


def test_service_maintenance_is_reported_apart_with_its_reason() -> None:
    member = only([entry(checks=[
        serf(), check("critical", "_service_maintenance:web-1", "Service Maintenance Mode",
                      notes="kernel upgrade"), check("passing")])])
    assert (member.maintenance, member.maintenance_reason) == (True, "kernel upgrade")
    assert member.health == "passing"  # its own checks still pass: only maintenance holds it


def test_node_maintenance_puts_the_member_in_maintenance() -> None:
    member = only([entry(checks=[
        check("critical", "_node_maintenance", "Node Maintenance Mode", notes="rack move",
              service_id=""), serf(), check("passing")])])
    assert (member.maintenance, member.maintenance_reason, member.health) == (
        True, "rack move", "passing")


def test_warning_member_takes_the_warning_weight() -> None:
    member = only([entry(weights={"Passing": 10, "Warning": 3},
                         checks=[serf(), check("warning")])])
    assert (member.health, member.weight) == ("warning", 3)


def test_warning_weight_zero_gives_weight_zero() -> None:
    member = only([entry(weights={"Passing": 10, "Warning": 0},
                         checks=[serf(), check("warning")])])
    assert member.weight == 0
    assert only([entry(weights={"Passing": 10, "Warning": 0})]).weight == 10


def test_weight_above_the_proxy_maximum_is_capped() -> None:
    # Consul takes any positive weight; the data plane's range is 0..10000, and one member
    # out of range would make the whole cluster's snapshot invalid
    assert only([entry(weights={"Passing": 65535, "Warning": 1})]).weight == 10000


def test_missing_weights_default_to_one() -> None:
    raw = entry()
    del raw["Service"]["Weights"]
    assert only([raw]).weight == 1


def test_entries_without_port_or_address_are_skipped() -> None:
    assert members_from_health([entry(port=0), entry("", 80, node_address="")]) == []


def test_same_address_twice_keeps_the_worse_health() -> None:
    members = members_from_health([
        entry("10.0.0.1", 80, service_id="web-1", checks=[serf(), check("passing")]),
        entry("10.0.0.1", 80, service_id="web-2",
              checks=[serf(), check("critical", "service:web-2", service_id="web-2")]),
    ])
    assert [(m.address, m.health) for m in members] == [("10.0.0.1:80", "critical")]


def test_members_are_sorted_by_address() -> None:
    members = members_from_health([entry("10.0.0.3", 80, service_id="c"),
                                   entry("10.0.0.1", 80, service_id="a"),
                                   entry("10.0.0.2", 80, service_id="b")])
    assert [m.address for m in members] == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]


async def test_entries_from_the_consul_double_read_the_same_way() -> None:
    double = ConsulDouble()  # not listening: only its catalog is used
    try:
        double.register("web", "web-1", "", 8080, node="n1", node_address="10.1.0.1",
                        weights={"Passing": 4, "Warning": 1})
        double.register("web", "web-2", "10.0.0.2", 8080, node="n2", status="warning")
        double.register("web", "web-3", "10.0.0.3", 8080, node="n3")
        double.maintenance("web-3", True, "patching")
        double.register("web", "web-4", "10.0.0.4", 8080, node="n4")
        double.set_node_health("n4", "critical")
        members = members_from_health(double.health("web"))
    finally:
        await double.close()
    assert [(m.address, m.health, m.weight, m.maintenance, m.maintenance_reason)
            for m in members] == [
        ("10.0.0.2:8080", "warning", 1, False, ""),
        ("10.0.0.3:8080", "passing", 1, True, "patching"),
        ("10.0.0.4:8080", "critical", 1, False, ""),
        ("10.1.0.1:8080", "passing", 4, False, ""),
    ]


# -- the watcher against the double ----------------------------------------------------------------


@dataclass
class Recorder:
    """The watcher's sink: every delivery and every error, with their times."""

    known: bool = False  # what has_members answers: last known members exist
    deliveries: list[tuple[float, str, list[Discovered]]] = field(default_factory=list)
    errors: list[tuple[float, str, str]] = field(default_factory=list)

    def on_members(self, source: str, group: str, members: list[Discovered]) -> None:
        self.deliveries.append((time.monotonic(), group, members))

    def on_source_error(self, source: str, group: str, message: str) -> None:
        self.errors.append((time.monotonic(), group, message))

    def has_members(self, group: str) -> bool:
        return self.known

    def health(self) -> dict[str, str]:
        """address -> health of the last delivery."""
        assert self.deliveries, "nothing delivered"
        return {m.address: m.health for m in self.deliveries[-1][2]}

    async def delivered(self, expected: dict[str, str], timeout: float = 2.0) -> float:
        """Wait for a delivery equal to ``expected``; returns when it arrived."""
        deadline = time.monotonic() + timeout
        while True:
            for at, _, members in reversed(self.deliveries):
                if {m.address: m.health for m in members} == expected:
                    return at
            if time.monotonic() > deadline:
                last = self.health() if self.deliveries else None
                raise AssertionError(f"no delivery of {expected} in {timeout}s; last: {last}; "
                                     f"errors: {self.errors[-3:]}")
            await asyncio.sleep(0.005)

    async def error_count(self, count: int, timeout: float = 3.0) -> None:
        await until(lambda: len(self.errors) >= count, timeout,
                    f"{count} errors (got {len(self.errors)})")


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


Watch = Callable[..., Awaitable[tuple[ConsulWatcher, Recorder]]]


@pytest.fixture
async def watch(double: ConsulDouble) -> AsyncIterator[Watch]:
    """``await watch(**kwargs)``: a started ConsulWatcher on group ``g`` (service ``web``)."""
    started: list[ConsulWatcher] = []

    async def make(token: str | None = None, wait: float = 2, watchdog: float = 60,
                   groups: list[dict[str, Any]] | None = None, address: str | None = None,
                   has_members: bool = False, **kwargs: Any) -> tuple[ConsulWatcher, Recorder]:
        recorder = Recorder(known=has_members)
        watcher = ConsulWatcher(address or double.address, token, recorder, wait=wait,
                                watchdog=watchdog, **kwargs)
        started.append(watcher)
        watcher.sync(WEB if groups is None else groups)
        return watcher, recorder

    yield make
    for watcher in started:
        await watcher.close()


def register_web(double: ConsulDouble) -> dict[str, str]:
    double.register("web", "web-1", "10.0.0.1", 8080)
    double.register("web", "web-2", "10.0.0.2", 8080, status="warning")
    return {"10.0.0.1:8080": "passing", "10.0.0.2:8080": "warning"}


async def blocking(double: ConsulDouble) -> None:
    """Wait until the watch's query is parked in the double (a blocking query in flight)."""
    await until(lambda: double.blocking_queries == 1, 2.0, "the watch to block")


def requests(double: ConsulDouble) -> int:
    return double.requests[HEALTH_PATH]


async def test_first_answer_delivers_every_instance_with_its_health(
        double: ConsulDouble, watch: Watch) -> None:
    expected = register_web(double)
    _, seen = await watch()
    await seen.delivered(expected)
    assert seen.deliveries[0][1] == "g"
    assert seen.errors == []


async def test_change_is_delivered_at_once_by_the_blocking_query(
        double: ConsulDouble, watch: Watch) -> None:
    expected = register_web(double)
    _, seen = await watch()
    await seen.delivered(expected)
    await blocking(double)
    before = requests(double)
    changed_at = time.monotonic()
    double.set_check("web-1", "critical")
    arrived = await seen.delivered({**expected, "10.0.0.1:8080": "critical"})
    assert arrived - changed_at < 0.2
    # the answer came from the parked query: one request answered, no polling
    assert requests(double) - before <= 1
    await blocking(double)  # and the watch parks again


async def test_tag_filter_watches_only_tagged_instances(double: ConsulDouble,
                                                        watch: Watch) -> None:
    double.register("web", "web-1", "10.0.0.1", 8080, tags=["canary"])
    double.register("web", "web-2", "10.0.0.2", 8080, tags=["stable"])
    _, seen = await watch(groups=[{"name": "g", "consul": {"service": "web",
                                                           "tag": "canary"}}])
    await seen.delivered({"10.0.0.1:8080": "passing"})


async def test_index_going_backwards_restarts_the_watch_without_a_busy_loop(
        double: ConsulDouble, watch: Watch) -> None:
    expected = register_web(double)
    for i in range(20):  # move the indexes well up
        double.register("other", f"other-{i}", "10.1.0.1", 9000 + i)
    # a fast bucket: only the watch's own index handling may stop a busy loop here
    _, seen = await watch(rate=50)
    await seen.delivered(expected)
    await blocking(double)
    high = double.service_index("web")
    double.reset_index(3)  # snapshot restore: in-flight queries return with a lower index
    assert double.service_index("web") < high
    before = requests(double)
    await asyncio.sleep(0.5)
    # the parked query came back, the watch re-read once, and parked again
    assert requests(double) - before <= 3, "the watch loops on the lowered index"
    await blocking(double)
    assert seen.health() == expected
    changed_at = time.monotonic()
    double.set_check("web-2", "passing")  # the first write after the restore
    arrived = await seen.delivered({**expected, "10.0.0.2:8080": "passing"})
    assert arrived - changed_at < 0.3, "the watch still waits on the pre-restore index"
    assert seen.errors == []


async def test_server_errors_keep_members_and_are_retried_with_growing_backoff(
        double: ConsulDouble, watch: Watch) -> None:
    expected = register_web(double)
    _, seen = await watch(rate=100)
    await seen.delivered(expected)
    await blocking(double)
    double.fail_with(500, count=3, path=HEALTH_PATH)  # the next three queries fail
    double.set_check("web-1", "critical")  # answers the parked query; the re-arm fails
    await seen.delivered({**expected, "10.0.0.1:8080": "critical"})
    delivered = len(seen.deliveries)
    await seen.error_count(3)
    assert [(group, "500" in message) for _, group, message in seen.errors] == [
        ("g", True)] * 3
    gaps = [b[0] - a[0] for a, b in zip(seen.errors, seen.errors[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] > gaps[0], f"no growing backoff: {gaps}"
    # nothing was delivered while failing: the last members stand
    assert len(seen.deliveries) == delivered
    await blocking(double)  # the fourth query succeeded and parked
    double.set_check("web-1", "passing")
    await seen.delivered(expected)
    assert len(seen.errors) == 3


async def test_rate_limited_consul_is_not_hammered_and_the_watch_recovers(
        double: ConsulDouble, watch: Watch) -> None:
    expected = register_web(double)
    _, seen = await watch(rate=100)
    await seen.delivered(expected)
    await blocking(double)
    double.fail_with(429, path=HEALTH_PATH)  # every query from now on, until cleared
    double.set_check("web-2", "passing")
    await seen.delivered({**expected, "10.0.0.2:8080": "passing"})
    failing_from = requests(double)
    await seen.error_count(3)
    spent = seen.errors[-1][0] - seen.errors[0][0]
    assert spent >= 0.2, f"3 failures in {spent:.3f}s: no backoff"
    assert all("429" in message for _, _, message in seen.errors)
    double.clear_faults()
    double.set_check("web-2", "critical")
    await seen.delivered({**expected, "10.0.0.2:8080": "critical"}, timeout=3.0)
    assert requests(double) - failing_from <= 6


async def test_wrong_token_is_an_error_and_delivers_nothing(watch: Watch) -> None:
    acl = await ConsulDouble.start(acl_token="management-secret")
    try:
        acl.register("web", "web-1", "10.0.0.1", 8080)
        _, refused = await watch(token="not-the-token", address=acl.address)
        await refused.error_count(1)
        assert "403" in refused.errors[0][2]
        assert refused.deliveries == []

        _, allowed = await watch(token="management-secret", address=acl.address)
        await allowed.delivered({"10.0.0.1:8080": "passing"})
        sent = [r for r in acl.request_log if r.path == HEALTH_PATH]
        assert sent and all(r.headers.get("x-consul-token") in ("management-secret",
                                                                "not-the-token")
                            and "token" not in r.query for r in sent), \
            "the token must travel in X-Consul-Token, never in the URL"
    finally:
        await acl.close()


async def test_anonymous_read_filtered_to_empty_keeps_known_members(watch: Watch) -> None:
    acl = await ConsulDouble.start(acl_token="management-secret")
    try:
        acl.register("web", "web-1", "10.0.0.1", 8080)
        # the admin restarted with members it knew, and its token is missing
        _, seen = await watch(address=acl.address, has_members=True)
        await seen.error_count(1)
        assert "no instance" in seen.errors[0][2]
        assert seen.deliveries == []
    finally:
        await acl.close()


async def test_hung_consul_times_out_and_the_watch_recovers(double: ConsulDouble,
                                                            watch: Watch) -> None:
    # the HTTP timeout is wait * 17/16 + 5 s: about 6 s with the smallest wait (1 s)
    expected = register_web(double)
    _, seen = await watch(wait=1)
    await seen.delivered(expected)
    double.hang(True)
    double.set_check("web-1", "critical")  # the parked answer is held by the hang
    await seen.error_count(1, timeout=9.0)
    assert "did not answer in time" in seen.errors[0][2]
    assert seen.health() == expected
    double.hang(False)
    await seen.delivered({**expected, "10.0.0.1:8080": "critical"}, timeout=3.0)


async def test_consul_stopped_and_restarted_the_watch_recovers(double: ConsulDouble,
                                                               watch: Watch) -> None:
    expected = register_web(double)
    _, seen = await watch(rate=20)
    await seen.delivered(expected)
    await blocking(double)
    await double.stop()  # the parked query is cut, then connections are refused
    await seen.error_count(2)
    assert seen.health() == expected
    double.set_check("web-2", "critical")  # changed while the watch could not see it
    await double.restart()
    await seen.delivered({**expected, "10.0.0.2:8080": "critical"}, timeout=3.0)


async def test_empty_answer_after_members_keeps_them_and_reports_an_error(
        double: ConsulDouble, watch: Watch) -> None:
    double.register("web", "web-1", "10.0.0.1", 8080)
    _, seen = await watch()
    await seen.delivered({"10.0.0.1:8080": "passing"})
    await blocking(double)
    delivered = len(seen.deliveries)
    double.deregister("web-1")
    await seen.error_count(1)
    assert "no instance" in seen.errors[0][2]
    assert len(seen.deliveries) == delivered
    assert seen.health() == {"10.0.0.1:8080": "passing"}
    double.register("web", "web-9", "10.0.0.9", 8080)
    await seen.delivered({"10.0.0.9:8080": "passing"}, timeout=3.0)


async def test_service_with_no_instance_from_the_start_delivers_an_empty_set(
        watch: Watch) -> None:
    _, seen = await watch()
    await until(lambda: bool(seen.deliveries), 2.0, "a delivery")
    assert seen.deliveries[0][2] == []
    assert seen.errors == []


async def test_flapping_service_is_queried_at_most_burst_plus_rate_times_time(
        double: ConsulDouble, watch: Watch) -> None:
    double.register("web", "web-1", "10.0.0.1", 8080)
    _, seen = await watch()  # the admin's defaults: READS_PER_SECOND, READ_BURST
    await seen.delivered({"10.0.0.1:8080": "passing"})
    start, before = time.monotonic(), requests(double)
    status = "passing"
    for _ in range(150):  # a flip every 10 ms for 1.5 s
        status = "critical" if status == "passing" else "passing"
        double.set_check("web-1", status)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - start
    made = requests(double) - before
    assert made <= READ_BURST + READS_PER_SECOND * elapsed + 1, \
        f"{made} queries for 150 changes in {elapsed:.2f}s"
    # the flapping stopped: the final state arrives within one spacing of the reads (plus
    # the time to answer on a busy machine), never a second later
    stopped = time.monotonic()
    await seen.delivered({"10.0.0.1:8080": status}, timeout=2.5)
    assert time.monotonic() - stopped < 1 / READS_PER_SECOND + 0.6


async def test_sync_stops_the_watch_of_a_group_no_longer_listed(double: ConsulDouble,
                                                               watch: Watch) -> None:
    double.register("web", "web-1", "10.0.0.1", 8080)
    watcher, seen = await watch()
    await seen.delivered({"10.0.0.1:8080": "passing"})
    await blocking(double)
    watcher.sync([])
    await until(lambda: double.blocking_queries == 0, 2.0, "the parked query to go")
    before, delivered = requests(double), len(seen.deliveries)
    double.set_check("web-1", "critical")
    await asyncio.sleep(0.2)
    assert (requests(double), len(seen.deliveries)) == (before, delivered)
