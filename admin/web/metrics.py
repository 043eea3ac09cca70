"""The admin's own /metrics: pushes, node lag, Consul watches.

A custom collector reads the live objects at scrape time (no counters to keep in step):

- ``slb_admin_push_duration_seconds{cluster,node}``: histogram of successful pushes;
- ``slb_admin_node_lag_versions{cluster,node}``: desired minus applied version;
- ``slb_admin_node_in_sync{cluster,node}``: 1 when the node's applied hash is the desired one;
- ``slb_admin_consul_watch_errors_total{group}``;
- ``slb_admin_consul_last_contact_seconds{group}``: seconds since Consul last answered for it;
- ``slb_admin_group_stale{group}``: 1 while the group's members are last-known, not current;
- ``slb_admin_certificate_expiry_timestamp_seconds{certificate,subject}``: the not-after of
  each certificate the admin holds (alert on ``... - time() < 30 * 86400``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from admin.domain import certificates

if TYPE_CHECKING:
    from admin.domain.service import AdminService


class AdminCollector:
    def __init__(self, service: AdminService, watch_errors: Any = None) -> None:
        self.service = service
        self.watch_errors = watch_errors  # callable -> {group: errors}

    def collect(self) -> Iterator[Metric]:
        service = self.service
        push = HistogramMetricFamily("slb_admin_push_duration_seconds",
                                     "Time to push a change to a node and have it applied",
                                     labels=["cluster", "node"])
        lag = GaugeMetricFamily("slb_admin_node_lag_versions",
                                "Desired minus applied version per node",
                                labels=["cluster", "node"])
        in_sync = GaugeMetricFamily("slb_admin_node_in_sync",
                                    "1 when the node applied the desired snapshot",
                                    labels=["cluster", "node"])
        for cluster, pusher in sorted(service.publisher.pushers.items()):
            for status in pusher.status():
                node = status["name"]
                histogram = pusher.push_durations.get(node)
                if histogram is not None:
                    buckets = [("+Inf" if b == float("inf") else repr(b), c)
                               for b, c in histogram.cumulative()]
                    push.add_metric([cluster, node], buckets, histogram.sum)
                if status["lag"] is not None:
                    lag.add_metric([cluster, node], status["lag"])
                in_sync.add_metric([cluster, node], 1.0 if status["in_sync"] else 0.0)
        yield push
        yield lag
        yield in_sync
        errors = CounterMetricFamily("slb_admin_consul_watch_errors",
                                     "Consul watch requests that failed", labels=["group"])
        for group, count in sorted((self.watch_errors() if self.watch_errors else {}).items()):
            errors.add_metric([group], count)
        yield errors
        now = time.time()
        contact = GaugeMetricFamily("slb_admin_consul_last_contact_seconds",
                                    "Seconds since the group's source last answered",
                                    labels=["group"])
        for group, at in sorted(service.last_contact.items()):
            contact.add_metric([group], now - at)
        yield contact
        stale = GaugeMetricFamily("slb_admin_group_stale",
                                  "1 while a group's members are last known, not current",
                                  labels=["group"])
        for group in sorted(service.last_contact.keys() | service.stale.keys()):
            stale.add_metric([group], 1.0 if group in service.stale else 0.0)
        yield stale
        yield certificate_expiry(service)


def certificate_expiry(service: AdminService) -> Metric:
    expiry = GaugeMetricFamily("slb_admin_certificate_expiry_timestamp_seconds",
                               "When each certificate of the admin expires (Unix time)",
                               labels=["certificate", "subject"])
    for row in service.store.objects(certificates.KIND):
        expiry.add_metric([row.name, row.body["subject"]], row.body["not_after"])
    return expiry


class AdminMetrics:
    def __init__(self, service: AdminService, watch_errors: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(AdminCollector(service, watch_errors))
