"""Counters of one proxy process, kept in plain ints and exported by one custom collector.

The request path only does dict and list arithmetic (tens of nanoseconds, against about a
microsecond for prometheus-client's ``labels().inc()``). ``StatsCollector`` turns the numbers into
metric families at scrape time, and ``Stats.export``/``merge`` let a supervisor add up the
counters of several worker processes into one view of the node.

Names follow Prometheus conventions: ``slb_`` prefix, ``_total`` for counters, ``_seconds``.

``traffic_counters`` is the same request counters in a compact JSON form for the admin's
traffic sampler (``GET /v1/stats``), which reads every node every few seconds. At 10,000 groups
x 10 members the Prometheus text is 7 MB, 1.2 s to render on the node's event loop (the one
that answers the control API and takes pushes) and 2.4 s to parse on the admin, per node and
per tick: the nodes stopped answering and the admin's CPU and memory went to parsing. The
compact form carries only what has counts (a member with no request and nothing in flight is
absent, which the sampler reads as zero), so its size follows the traffic, not the topology.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

# Request duration buckets, seconds: a proxy adds well under a millisecond, so start low.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)
CODE_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class LatencyHistogram:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class Stats:
    """Counters of this process. Keys are plain strings so they survive configuration swaps."""

    def __init__(self) -> None:
        # (virtual_server, group, member, code_class) -> requests
        self.requests: dict[tuple[str, str, str, str], int] = {}
        # (virtual_server, group) -> request duration
        self.latency: dict[tuple[str, str], LatencyHistogram] = {}
        self.client_connections = 0
        self.upstream_connections = 0
        self.connect_failures: dict[tuple[str, str], int] = {}
        self.upstream_failures: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.ejections: dict[tuple[str, str], int] = {}
        self.client_errors: dict[str, int] = {}  # status -> requests refused by the rules
        self.internal_errors = 0  # bugs caught at the request path's edge
        # (virtual_server, route index, reason "rate_limit" | "deny") -> requests a route's
        # rules refused
        self.route_refusals: dict[tuple[str, str, str], int] = {}
        self.tls_handshakes: dict[str, int] = {}  # TLS version -> handshakes completed
        self.tls_handshake_failures: dict[str, int] = {}  # reason -> handshakes that failed

    def histogram(self, virtual_server: str, group: str) -> LatencyHistogram:
        key = (virtual_server, group)
        found = self.latency.get(key)
        if found is None:
            found = self.latency[key] = LatencyHistogram()
        return found

    def count_request(self, virtual_server: str, group: str, member: str, status: int) -> None:
        key = (virtual_server, group, member, CODE_CLASSES[status // 100] if status < 600
               else "5xx")
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def count_connect_failure(self, group: str, member: str) -> None:
        _bump(self.connect_failures, (group, member))

    def count_upstream_failure(self, group: str, member: str) -> None:
        _bump(self.upstream_failures, (group, member))

    def count_retry(self, group: str) -> None:
        _bump(self.retries, group)

    def count_ejection(self, group: str, member: str) -> None:
        _bump(self.ejections, (group, member))

    def count_client_error(self, status: int) -> None:
        _bump(self.client_errors, str(status))

    def count_internal_error(self) -> None:
        self.internal_errors += 1

    def count_route_refusal(self, virtual_server: str, route: str, reason: str) -> None:
        _bump(self.route_refusals, (virtual_server, route, reason))
    def count_handshake(self, version: str) -> None:
        _bump(self.tls_handshakes, version)

    def count_handshake_failure(self, reason: str) -> None:
        _bump(self.tls_handshake_failures, reason)

    # -- across processes -------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """A JSON-able copy of the counters, for a supervisor to add up."""
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "latency": [[*k, h.counts, h.total] for k, h in self.latency.items()],
            "client_connections": self.client_connections,
            "upstream_connections": self.upstream_connections,
            "connect_failures": [[*k, v] for k, v in self.connect_failures.items()],
            "upstream_failures": [[*k, v] for k, v in self.upstream_failures.items()],
            "retries": [[k, v] for k, v in self.retries.items()],
            "ejections": [[*k, v] for k, v in self.ejections.items()],
            "client_errors": [[k, v] for k, v in self.client_errors.items()],
            "internal_errors": self.internal_errors,
            "route_refusals": [[*k, v] for k, v in self.route_refusals.items()],
            "tls_handshakes": [[k, v] for k, v in self.tls_handshakes.items()],
            "tls_handshake_failures": [[k, v] for k, v in self.tls_handshake_failures.items()],
        }

    def merge(self, exported: dict[str, Any]) -> None:
        for *key, value in exported["requests"]:
            _bump(self.requests, tuple(key), value)
        for vs, group, counts, total in exported["latency"]:
            hist = self.histogram(vs, group)
            hist.counts = [a + b for a, b in zip(hist.counts, counts, strict=True)]
            hist.total += total
        self.client_connections += exported["client_connections"]
        self.upstream_connections += exported["upstream_connections"]
        for name in ("connect_failures", "upstream_failures", "ejections"):
            table = getattr(self, name)
            for group, member, value in exported[name]:
                _bump(table, (group, member), value)
        for group, value in exported["retries"]:
            _bump(self.retries, group, value)
        for status, value in exported["client_errors"]:
            _bump(self.client_errors, status, value)
        self.internal_errors += exported.get("internal_errors", 0)
        for vs, route, reason, value in exported.get("route_refusals", ()):
            _bump(self.route_refusals, (vs, route, reason), value)
        for name in ("tls_handshakes", "tls_handshake_failures"):
            for key, value in exported.get(name, ()):
                _bump(getattr(self, name), key, value)


def _bump(table: dict[Any, int], key: Any, by: int = 1) -> None:
    table[key] = table.get(key, 0) + by


class StatsCollector:
    """A prometheus-client collector over a function that returns the node's Stats."""

    def __init__(self, source: Any, gauges: Any = None) -> None:
        self._source = source
        self._gauges = gauges  # optional callable yielding extra metric families

    def collect(self) -> Iterator[Metric]:
        stats: Stats = self._source()
        requests = CounterMetricFamily(
            "slb_requests", "Requests answered, by virtual server, group, member and status class",
            labels=["virtual_server", "group", "member", "code"])
        for (vs, group, member, code), value in sorted(stats.requests.items()):
            requests.add_metric([vs, group, member, code], value)
        yield requests

        latency = HistogramMetricFamily(
            "slb_request_duration_seconds",
            "Time from a request's head to the end of its response",
            labels=["virtual_server", "group"])
        for (vs, group), hist in sorted(stats.latency.items()):
            latency.add_metric([vs, group], list(zip(LATENCY_LE, _cumulative(hist.counts),
                                                     strict=True)), hist.total)
        yield latency

        yield GaugeMetricFamily("slb_client_connections", "Open client connections",
                                value=stats.client_connections)
        yield GaugeMetricFamily("slb_upstream_connections",
                                "Open connections to members, busy and idle",
                                value=stats.upstream_connections)
        yield _per_member("slb_upstream_connect_failures",
                          "Connections to a member that failed or timed out",
                          stats.connect_failures)
        yield _per_member("slb_upstream_failures",
                          "Requests a member failed: reset, timeout or malformed response",
                          stats.upstream_failures)
        yield _per_member("slb_ejections", "Times a member was ejected by passive health",
                          stats.ejections)
        retries = CounterMetricFamily("slb_retries", "Requests sent to another try",
                                      labels=["group"])
        for group, value in sorted(stats.retries.items()):
            retries.add_metric([group], value)
        yield retries
        errors = CounterMetricFamily("slb_client_errors",
                                     "Requests refused by HTTP rules or limits",
                                     labels=["code"])
        for status, value in sorted(stats.client_errors.items()):
            errors.add_metric([status], value)
        yield errors
        internal = CounterMetricFamily("slb_internal_errors",
                                       "Bugs caught on the request path (logged, answered 500)")
        internal.add_metric([], stats.internal_errors)
        yield internal
        refusals = CounterMetricFamily(
            "slb_route_refusals", "Requests refused by a route's rules (rate_limit, deny)",
            labels=["virtual_server", "route", "reason"])
        for (vs, route, reason), value in sorted(stats.route_refusals.items()):
            refusals.add_metric([vs, route, reason], value)
        yield refusals
        yield _by_label("slb_tls_handshakes", "TLS handshakes completed, by protocol version",
                        "version", stats.tls_handshakes)
        yield _by_label("slb_tls_handshake_failures",
                        "TLS handshakes that failed, by reason (plain_http, protocol_version, "
                        "malformed, timeout, closed, ...)", "reason",
                        stats.tls_handshake_failures)
        if self._gauges is not None:
            yield from self._gauges()


def member_gauges(status: dict[str, dict[str, dict[str, Any]]]) -> Iterator[Metric]:
    """Per member live gauges from the node's member status (``/v1/status``'s ``groups``)."""
    active = GaugeMetricFamily("slb_member_active_requests",
                               "Requests in flight on a member", labels=["group", "member"])
    for group, members in sorted(status.items()):
        for member, figures in sorted(members.items()):
            active.add_metric([group, member], figures.get("active", 0))
    yield active


def traffic_counters(stats: Stats, status: dict[str, dict[str, dict[str, Any]]]
                     ) -> dict[str, Any]:
    """The counters the admin's traffic sampler reads, without a zero (see the docstring).

    ``latency`` rows hold the *cumulative* bucket counts, bounds in ``latency_bounds`` (the
    exposition's ``le`` values), so the sampler treats them exactly like the text's buckets.
    """
    latency = [[vs, group, _cumulative(hist.counts)]
               for (vs, group), hist in stats.latency.items()]
    return {
        "requests": [[*key, value] for key, value in stats.requests.items()],
        "latency_bounds": list(LATENCY_LE),
        "latency": latency,
        "ejections": [[*key, value] for key, value in stats.ejections.items()],
        "retries": [[group, value] for group, value in stats.retries.items()],
        "active": [[group, member, figures["active"]]
                   for group, members in status.items()
                   for member, figures in members.items() if figures.get("active")],
    }


def _cumulative(counts: list[int]) -> list[int]:
    """Per-bucket counts as Prometheus's cumulative ``le`` counts."""
    return list(itertools.accumulate(counts))


def _per_member(name: str, documentation: str,
                table: dict[tuple[str, str], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["group", "member"])
    for (group, member), value in sorted(table.items()):
        family.add_metric([group, member], value)
    return family


def certificate_expiry_family(expiry: list[tuple[str, str, float]]) -> GaugeMetricFamily:
    """``(virtual_server, subject, not_after)`` rows as the expiry gauge operators alert on."""
    family = GaugeMetricFamily("slb_tls_certificate_expiry_timestamp_seconds",
                               "When the certificate a virtual server presents expires (Unix time)",
                               labels=["virtual_server", "subject"])
    for vs, subject, not_after in sorted(expiry):
        family.add_metric([vs, subject], not_after)
    return family


def _by_label(name: str, documentation: str, label: str,
              table: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(table.items()):
        family.add_metric([key], value)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


# the buckets' bounds as the exposition's ``le`` label values (and the stats JSON's)
LATENCY_LE = tuple(_le(bound) for bound in (*LATENCY_BUCKETS, float("inf")))
