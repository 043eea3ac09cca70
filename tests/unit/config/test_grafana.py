"""The Grafana dashboard and Prometheus example in config/grafana/ query what SLB exports.

Every query of the dashboard (panels and template variables) must name at least one metric,
and every metric it names must be one the nodes (``slb.metrics``) or the admin
(``admin.web.metrics``) export, by its exposed sample name (``_total``, ``_bucket``...). A
renamed metric then fails here instead of leaving an empty panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.core import Metric

from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.web.metrics import AdminCollector
from slb.metrics import Stats, StatsCollector, member_gauges

GRAFANA = Path(__file__).resolve().parents[3] / "config" / "grafana"
METRIC = re.compile(r"\b(slb_[a-z0-9_]+)\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",)}


def sample_names(families: Iterator[Metric]) -> set[str]:
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def exported(tmp_path: Path) -> set[str]:
    node = sample_names(StatsCollector(Stats, lambda: member_gauges({})).collect())
    store = Store(str(tmp_path / "admin.db"))
    try:
        admin = sample_names(AdminCollector(AdminService(store)).collect())
    finally:
        store.close()
    return node | admin


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def test_every_dashboard_query_names_an_exported_metric(tmp_path: Path) -> None:
    dashboard = json.loads((GRAFANA / "slb-dashboard.json").read_text())
    known = exported(tmp_path)
    assert {"slb_requests_total", "slb_admin_node_lag_versions"} <= known  # the test sees both
    exprs = queries(dashboard)
    assert len(exprs) >= 10
    for expr in exprs:
        names = METRIC.findall(expr)
        assert names, f"query names no metric: {expr}"
        unknown = set(names) - known
        assert not unknown, f"{sorted(unknown)} not exported (query: {expr})"


def test_the_prometheus_example_scrapes_the_nodes_and_the_admin() -> None:
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"slb-nodes", "slb-admin"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
