"""Sampling the nodes' counters into the traffic window, every ``interval`` seconds.

Why the admin pulls rather than the nodes push: the nodes already export their counters on
their control listener, the admin already knows every node's control URL,
and pulling keeps a node free of any idea of who watches it (a node never waits on its admin).
A node that does not answer in time is left out of that tick; its counters are compared with
its last answer when it comes back.

What is read is ``GET /v1/stats`` (``parse_stats``): the request counters of ``/metrics`` as
compact JSON, without a zero. The Prometheus text names every member and every latency bucket
of every group whether or not it saw a request: at 10,000 groups x 10 members, 7 MB per node,
1.2 s of the node's event loop to render and 2.4 s of the admin's to parse, per node and per
tick, which left the nodes deaf to their control API and the admin at 500-800 MB. A node
without ``/v1/stats`` (404: an older version during an upgrade) is read from ``/metrics``
(``parse_metrics``); both give the same ``NodeCounters``.

Each tick: every node's counters are read, compared with the same node's
previous answer (``NodeCounters.increase``, counter resets counted from zero), turned into
per-second rates over the time between the two answers, and summed per scope
(``Aggregate``): the site, the node's cluster, the virtual server, the group, the member.
Latency bucket *increases* are summed across nodes before percentiles are taken, since
percentiles cannot be added. The first answer of a node is only a baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from admin.traffic.window import QUANTILES, TrafficWindow, counter_increase, histogram_quantile

log = logging.getLogger("admin.traffic")

Key = tuple[str, ...]
TIMEOUT = 2.0  # seconds to wait for one node's /metrics


@dataclass
class NodeCounters:
    """One answer of one node: counters and gauges by (metric, labels...)."""

    at: float
    counters: dict[Key, float] = field(default_factory=dict)
    gauges: dict[Key, float] = field(default_factory=dict)


def parse_metrics(text: str, at: float) -> NodeCounters:
    """The samples the window uses, from a node's Prometheus text.

    Kept until the node's next answer, for every node: so label values are interned (one
    string per group and member name, shared by every key and node), and an in-flight gauge
    or latency bucket at zero is left out (a node reports them for every member and group;
    at 10,000 groups x 10 idle members those keys were most of the admin's memory)."""
    out = NodeCounters(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: sys.intern(v) for k, v in sample.labels.items()}
            name = sample.name
            if name == "slb_requests_total":
                out.counters[("req", labels["virtual_server"], labels["group"],
                              labels["member"], labels["code"])] = sample.value
            elif name == "slb_request_duration_seconds_bucket" and sample.value:
                # (a bucket at zero adds nothing: left out, like an absent one; a node
                # reports every bucket of every group, requested or not)
                out.counters[("lat", labels["virtual_server"], labels["group"],
                              labels["le"])] = sample.value
            elif name == "slb_ejections_total":
                out.counters[("ej", labels["group"], labels["member"])] = sample.value
            elif name == "slb_retries_total":
                out.counters[("retry", labels["group"])] = sample.value
            elif name == "slb_member_active_requests" and sample.value:
                out.gauges[("active", labels["group"], labels["member"])] = sample.value
    return out


def parse_stats(data: dict[str, Any], at: float) -> NodeCounters:
    """The same samples as ``parse_metrics``, from a node's ``/v1/stats`` answer."""
    out = NodeCounters(at)
    name = sys.intern
    for vs, group, member, code, value in data["requests"]:
        out.counters[("req", name(vs), name(group), name(member), name(code))] = value
    bounds = [name(le) for le in data["latency_bounds"]]
    for vs, group, buckets in data["latency"]:
        for le, value in zip(bounds, buckets, strict=True):
            if value:  # as in parse_metrics: a bucket at zero adds nothing
                out.counters[("lat", name(vs), name(group), le)] = value
    for group, member, value in data["ejections"]:
        out.counters[("ej", name(group), name(member))] = value
    for group, value in data["retries"]:
        out.counters[("retry", name(group))] = value
    for group, member, value in data["active"]:
        if value:
            out.gauges[("active", name(group), name(member))] = value
    return out


def increase(previous: NodeCounters, current: NodeCounters) -> dict[Key, float]:
    """Every counter's increase between two answers of one node (resets from zero)."""
    return {key: counter_increase(previous.counters.get(key), value)
            for key, value in current.counters.items()}


class Aggregate:
    """Per-scope sums of one tick; ``figures`` gives the window's values."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = {}
        self.buckets: dict[str, dict[float, float]] = {}  # scope -> upper bound -> increase

    def _add(self, scopes: Iterable[str], name: str, value: float) -> None:
        for scope in scopes:
            sums = self.sums.setdefault(scope, {})
            sums[name] = sums.get(name, 0.0) + value

    def node(self, cluster: str, increases: dict[Key, float], seconds: float,
             gauges: dict[Key, float]) -> None:
        """One node's increases over ``seconds``, and its gauges."""
        wide = ("site", f"cluster/{cluster}")
        for key, grown in increases.items():
            kind = key[0]
            if kind == "req":
                _, vs, group, member, code = key
                scopes = [*wide, f"virtual_server/{vs}"] if vs else list(wide)
                if group:
                    scopes += [f"group/{group}", f"member/{group}/{member}"]
                rate = grown / seconds
                self._add(scopes, "rps", rate)
                if code in ("4xx", "5xx"):
                    self._add(scopes, f"rate_{code}", rate)
            elif kind == "lat":
                _, vs, group, le = key
                bound = math.inf if le == "+Inf" else float(le)
                scopes = [*wide, f"virtual_server/{vs}", f"group/{group}"]
                for scope in scopes:
                    buckets = self.buckets.setdefault(scope, {})
                    buckets[bound] = buckets.get(bound, 0.0) + grown
            elif kind == "ej":
                self._add([*wide, f"group/{key[1]}", f"member/{key[1]}/{key[2]}"],
                          "ejections", grown / seconds)
            elif kind == "retry":
                self._add([*wide, f"group/{key[1]}"], "retries", grown / seconds)
        for (_, group, member), value in gauges.items():
            self._add([*wide, f"group/{group}", f"member/{group}/{member}"], "in_flight",
                      value)
        # Only non-zero gauges are kept (``parse_metrics``): a group or member without one
        # has nothing in flight, and gets no scope of its own for that (a scope is a row of
        # rings in the window, 52 KB: one per idle member was 5.7 GB at 10,000 groups).
        self._add(wide, "in_flight", 0.0)

    def figures(self) -> dict[str, dict[str, float]]:
        out = {scope: dict(sums) for scope, sums in self.sums.items()}
        for scope, sums in out.items():
            if "rps" in sums:  # requests seen and none of a class: that rate is zero
                sums.setdefault("rate_4xx", 0.0)
                sums.setdefault("rate_5xx", 0.0)
                if scope.startswith(("group/", "member/")):  # and no gauge: none in flight
                    sums.setdefault("in_flight", 0.0)
        for scope, cumulative in self.buckets.items():
            bounds = sorted(cumulative)
            # the exposition's buckets are cumulative: their increases are too
            counts, below = [], 0.0
            for bound in bounds:
                counts.append(max(0.0, cumulative[bound] - below))
                below = max(below, cumulative[bound])
            for name, q in QUANTILES.items():
                value = histogram_quantile(q, bounds, counts)
                if value is not None:
                    out.setdefault(scope, {})[name] = value
        return out


class Sampler:
    """Scrapes every node each ``window.interval`` seconds into ``window``."""

    def __init__(self, window: TrafficWindow, nodes: Callable[[], list[dict[str, Any]]],
                 timeout: float = TIMEOUT) -> None:
        self.window = window
        self.nodes = nodes  # the node bodies (name, cluster, control_url, token)
        self.timeout = timeout
        self.last: dict[str, NodeCounters] = {}  # node name -> previous answer
        self.errors: dict[str, str] = {}  # node name -> why its last scrape failed
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.sample()
            except Exception:  # a bug here must not stop the charts for good
                log.exception("traffic sampling failed")
            next_at += self.window.interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def sample(self) -> None:
        """One tick: ask every node, add what changed since its last answer."""
        nodes = self.nodes()
        answers = await asyncio.gather(*(self._scrape(n) for n in nodes))
        aggregate = Aggregate()
        for node, answer in zip(nodes, answers, strict=True):
            if answer is None:
                continue
            previous = self.last.get(node["name"])
            self.last[node["name"]] = answer
            if previous is None or answer.at <= previous.at:
                continue  # a baseline: rates need two answers
            aggregate.node(node["cluster"], increase(previous, answer), answer.at - previous.at,
                           answer.gauges)
        known = {n["name"] for n in nodes}
        self.last = {k: v for k, v in self.last.items() if k in known}
        self.window.add(time.time(), aggregate.figures())

    async def _scrape(self, node: dict[str, Any]) -> NodeCounters | None:
        assert self._client is not None
        token = node.get("token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = node["control_url"]
        try:
            reply = await self._client.get(f"{url}/v1/stats", headers=headers)
            at = time.monotonic()
            if reply.status_code == 404:  # a node from before /v1/stats: its Prometheus text
                reply = await self._client.get(f"{url}/metrics", headers=headers)
                reply.raise_for_status()
                # in a thread, so the API and the UI keep answering while it is parsed
                counters = await asyncio.to_thread(parse_metrics, reply.text, at)
            else:
                reply.raise_for_status()
                counters = parse_stats(reply.json(), at)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            if self.errors.get(node["name"]) is None:  # once per outage, not once per tick
                log.warning("traffic: no metrics from node %s: %s", node["name"], exc)
            self.errors[node["name"]] = str(exc) or type(exc).__name__
            return None
        self.errors.pop(node["name"], None)
        return counters
