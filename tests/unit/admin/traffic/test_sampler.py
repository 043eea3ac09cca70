"""From nodes' Prometheus text to per-scope rates: sums over nodes, resets, percentiles."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from admin.traffic.query import StatsQueryError, stats_answer
from admin.traffic.sampler import Aggregate, increase, parse_metrics, parse_stats
from admin.traffic.window import TrafficWindow
from slb.metrics import Stats, StatsCollector, member_gauges, traffic_counters

A, B = "10.0.0.1:80", "10.0.0.2:80"


def metrics(ok_a: int, err_b: int, fast: int = 0, slow: int = 0, active: int = 0) -> str:
    """What a node's /metrics says, reduced to the lines the sampler reads."""
    return f"""# TYPE slb_requests counter
slb_requests_total{{virtual_server="shop",group="web",member="{A}",code="2xx"}} {ok_a}
slb_requests_total{{virtual_server="shop",group="web",member="{B}",code="5xx"}} {err_b}
# TYPE slb_request_duration_seconds histogram
slb_request_duration_seconds_bucket{{virtual_server="shop",group="web",le="0.01"}} {fast}
slb_request_duration_seconds_bucket{{virtual_server="shop",group="web",le="0.1"}} {fast + slow}
slb_request_duration_seconds_bucket{{virtual_server="shop",group="web",le="+Inf"}} {fast + slow}
slb_request_duration_seconds_count{{virtual_server="shop",group="web"}} {fast + slow}
slb_request_duration_seconds_sum{{virtual_server="shop",group="web"}} 0
# TYPE slb_member_active_requests gauge
slb_member_active_requests{{group="web",member="{A}"}} {active}
"""


def tick(*nodes: tuple[str, str, str, float]) -> dict[str, dict[str, float]]:
    """(cluster, before, after, seconds) per node -> the tick's figures."""
    aggregate = Aggregate()
    for cluster, before, after, seconds in nodes:
        old, new = parse_metrics(before, 0.0), parse_metrics(after, seconds)
        aggregate.node(cluster, increase(old, new), seconds, new.gauges)
    return aggregate.figures()


def test_rates_are_per_second_and_split_by_scope() -> None:
    figures = tick(("c1", metrics(100, 0), metrics(150, 10, active=3), 5.0))
    assert figures["site"]["rps"] == pytest.approx(12.0)
    assert figures["member/web/" + A]["rps"] == pytest.approx(10.0)
    assert figures["member/web/" + B]["rate_5xx"] == pytest.approx(2.0)
    assert figures["virtual_server/shop"]["rate_5xx"] == pytest.approx(2.0)
    assert figures["group/web"]["in_flight"] == 3
    assert figures["site"]["rate_4xx"] == 0.0  # requests and no 4xx: zero, not a gap
    assert "p50" not in figures["member/web/" + A]  # a member has no histogram of its own


def test_an_idle_member_or_group_costs_the_window_no_series() -> None:
    c = "10.0.0.3:80"
    idle = f'slb_member_active_requests{{group="web",member="{c}"}} 0\n'
    figures = tick(("c1", metrics(0, 0) + idle, metrics(0, 0) + idle, 5.0))
    assert figures["group/web"]["in_flight"] == 0
    # A has a request counter (its series stays, in flight 0); C only an idle gauge: none
    assert figures["member/web/" + A]["in_flight"] == 0
    assert "member/web/" + c not in figures
    shop = f'slb_member_active_requests{{group="shop",member="{c}"}} 0\n'
    figures = tick(("c1", metrics(0, 0) + shop, metrics(0, 0) + shop, 5.0))
    assert "group/shop" not in figures  # a group without requests or any in flight: none
    assert figures["site"]["in_flight"] == 0


def test_two_nodes_add_up_in_the_site_and_stay_apart_by_cluster() -> None:
    figures = tick(("c1", metrics(0, 0), metrics(50, 0), 5.0),
                   ("c2", metrics(0, 0), metrics(25, 0), 5.0))
    assert figures["site"]["rps"] == pytest.approx(15.0)
    assert (figures["cluster/c1"]["rps"], figures["cluster/c2"]["rps"]) == (
        pytest.approx(10.0), pytest.approx(5.0))


def test_a_restarted_node_gives_no_negative_rate() -> None:
    figures = tick(("c1", metrics(5000, 400), metrics(20, 0), 5.0))
    assert figures["site"]["rps"] == pytest.approx(4.0)
    assert all(v >= 0 for scope in figures.values() for v in scope.values())


def test_percentiles_come_from_bucket_increases_summed_over_nodes() -> None:
    # node 1: 90 fast requests; node 2: 10 slow ones. p50 is fast, p99 is slow.
    figures = tick(("c1", metrics(0, 0), metrics(0, 0, fast=90), 5.0),
                   ("c1", metrics(0, 0), metrics(0, 0, slow=10), 5.0))
    group = figures["group/web"]
    assert group["p50"] < 0.01 < group["p99"] <= 0.1


def test_the_stats_answer_of_a_group_carries_each_members_series() -> None:
    window = TrafficWindow(interval=5, window=60)
    window.add(1000.0, tick(("c1", metrics(0, 0), metrics(50, 5), 5.0)))
    answer = stats_answer(window, "group/web")
    assert answer["times"] == [1000.0]
    assert set(answer["members"]) == {A, B}
    assert answer["members"][B]["rate_5xx"] == [pytest.approx(1.0)]


@pytest.mark.parametrize(("scope", "since"), [("nodes", None), ("member/web", None),
                                              ("site", "yesterday"), ("site", "nan")])
def test_a_malformed_query_is_refused_with_what_is_expected(scope: str, since: str | None
                                                            ) -> None:
    with pytest.raises(StatsQueryError, match="expected"):
        stats_answer(TrafficWindow(), scope, since)


def test_the_compact_stats_and_the_prometheus_text_give_the_sampler_the_same_counters() -> None:
    """/v1/stats is what the sampler reads; /metrics is the fallback: same figures from both."""
    stats = Stats()
    for _ in range(7):
        stats.count_request("shop", "web", A, 200)
    stats.count_request("shop", "web", B, 503)
    stats.count_request("shop", "", "", 404)  # no route: no group, no member
    for seconds in (0.0004, 0.003, 0.2, 90.0):
        stats.histogram("shop", "web").observe(seconds)
    stats.count_ejection("web", B)
    stats.count_retry("web")
    status = {"web": {A: {"active": 2}, B: {"active": 0}}, "idle": {"10.0.0.9:80": {"active": 0}}}

    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(lambda: stats, lambda: member_gauges(status)))
    from_text = parse_metrics(generate_latest(registry).decode(), 1.0)
    from_json = parse_stats(traffic_counters(stats, status), 1.0)

    assert from_json.counters == from_text.counters
    assert from_json.gauges == from_text.gauges == {("active", "web", A): 2}
    assert from_json.counters[("lat", "shop", "web", "+Inf")] == 4


def test_the_compact_stats_of_an_idle_node_name_no_member() -> None:
    status = {f"g{i}": {f"10.0.{i}.{m}:80": {"active": 0} for m in range(10)} for i in range(100)}
    compact = traffic_counters(Stats(), status)
    assert compact["requests"] == compact["latency"] == compact["active"] == []
