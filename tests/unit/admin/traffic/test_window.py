"""The rolling window: bounded, aligned, rates from counters that may reset, percentiles."""

from __future__ import annotations

import math

import pytest

from admin.traffic.window import FIELDS, TrafficWindow, counter_increase, histogram_quantile

INF = math.inf


def test_a_counter_that_grew_gives_its_increase() -> None:
    assert counter_increase(100, 130) == 30


def test_a_counter_reset_by_a_node_restart_is_counted_from_zero_never_negative() -> None:
    assert counter_increase(1000, 7) == 7


def test_a_counter_seen_for_the_first_time_started_at_zero() -> None:
    assert counter_increase(None, 5) == 5


def test_percentiles_interpolate_inside_the_bucket() -> None:
    bounds = [0.1, 0.2, 0.4, INF]
    counts = [50, 40, 10, 0]  # 100 observations
    assert histogram_quantile(0.5, bounds, counts) == pytest.approx(0.1)
    assert histogram_quantile(0.7, bounds, counts) == pytest.approx(0.15)
    assert histogram_quantile(0.99, bounds, counts) == pytest.approx(0.38)


def test_a_percentile_in_the_inf_bucket_is_the_last_finite_bound() -> None:
    assert histogram_quantile(0.99, [0.1, 1.0, INF], [1, 0, 99]) == 1.0


def test_no_observation_has_no_percentile() -> None:
    assert histogram_quantile(0.5, [0.1, INF], [0, 0]) is None


def test_the_window_keeps_capacity_points_and_forgets_the_oldest() -> None:
    window = TrafficWindow(interval=5, window=20)  # 4 points
    assert window.capacity == 4
    for i in range(6):
        window.add(1000.0 + 5 * i, {"site": {"rps": float(i)}})
    answer = window.read("site")
    assert answer["times"] == [1010.0, 1015.0, 1020.0, 1025.0]
    assert answer["series"]["rps"] == [2.0, 3.0, 4.0, 5.0]


def test_one_hour_at_five_seconds_costs_a_known_amount_per_scope() -> None:
    window = TrafficWindow(interval=5, window=3600)
    assert window.capacity == 720
    assert window.bytes_per_scope() == len(FIELDS) * 720 * 8  # about 52 KB


def test_series_align_on_times_with_gaps_where_a_scope_had_no_data() -> None:
    window = TrafficWindow(interval=5, window=60)
    window.add(1000.0, {"site": {"rps": 1.0}})
    window.add(1005.0, {"site": {"rps": 2.0}, "group/web": {"rps": 2.0}})
    window.add(1010.0, {"site": {"rps": 3.0}})
    assert window.read("group/web")["series"]["rps"] == [None, 2.0, None]
    assert window.read("site", since=1000.0)["times"] == [1005.0, 1010.0]


def test_a_scope_silent_for_a_whole_window_is_dropped() -> None:
    window = TrafficWindow(interval=5, window=15)  # 3 points
    window.add(1000.0, {"group/old": {"rps": 1.0}})
    for i in range(1, 4):
        window.add(1000.0 + 5 * i, {})
    assert window.scopes() == []
