"""The rolling window of traffic series: fixed memory, one point per scope per sampling tick.

The sampler (``sampler.py``) turns every node's counters into per-scope figures once per tick;
this module keeps them. A *scope* is where traffic is summed:

    site                      every node
    cluster/<name>            the nodes of one cluster
    virtual_server/<name>     one virtual server, over the nodes serving it
    group/<name>              one group
    member/<group>/<address>  one member of one group

and each scope has one series per field of ``FIELDS``: requests, 4xx and 5xx per second, the
50th/95th/99th latency percentiles (seconds; virtual servers, groups and wider: a member has
no histogram of its own), requests in flight (a gauge), ejections and retries per second.

Memory is bounded and known in advance: every series is a ring of ``capacity`` doubles
(``array('d')``, 8 bytes a point), so a scope costs ``len(FIELDS) * capacity * 8`` bytes:
at the default 5 s over one hour (720 points), 52 KB. A scope nobody reported for a whole
window is dropped. Points are aligned on one tick counter shared by every scope, so the
series of one answer line up with its ``times``; a tick where a scope had no data holds NaN
(``null`` in JSON), which charts draw as a gap.

Rates come from counters (``counter_increase``): a counter that went *down* between two samples
was reset (the node or a worker restarted), and its increase is its new value, never negative.
Percentiles come from histogram bucket increases (``histogram_quantile``), interpolated inside
a bucket as Prometheus' ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

FIELDS = ("rps", "rate_4xx", "rate_5xx", "p50", "p95", "p99", "in_flight", "ejections",
          "retries")
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
NAN = float("nan")


def counter_increase(previous: float | None, current: float) -> float:
    """How much a counter grew between two samples; a reset counts from zero.

    ``previous`` is None when the counter was not there before (a new member, a first
    request): it started at zero since the last sample.
    """
    if previous is None or current < previous:
        return current
    return current - previous


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]
                       ) -> float | None:
    """The ``q`` quantile of observations counted per bucket (not cumulative).

    ``bounds`` are the buckets' upper bounds, the last one +Inf. Inside a bucket the
    observations are taken as evenly spread; a quantile in the +Inf bucket is the last finite
    bound (what can be said of it). None when nothing was observed.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count > 0 and seen + count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        if not math.isinf(bound):
            lower = bound
    return lower


class TrafficWindow:
    """Every scope's series over the last ``capacity`` ticks; see the module docstring."""

    def __init__(self, interval: float = 5.0, window: float = 3600.0) -> None:
        self.interval = interval
        self.window = window
        self.capacity = max(2, math.ceil(window / interval))
        self.tick = -1  # the last tick written
        self._times = array("d", [NAN]) * self.capacity
        # scope -> (field rings, last tick it had data)
        self._series: dict[str, tuple[dict[str, array[float]], int]] = {}

    def bytes_per_scope(self) -> int:
        return len(FIELDS) * self.capacity * 8

    def add(self, at: float, figures: dict[str, dict[str, float]]) -> None:
        """One tick at wall time ``at``: ``figures`` maps scope -> field -> value."""
        self.tick += 1
        slot = self.tick % self.capacity
        self._times[slot] = at
        for scope, (rings, last) in list(self._series.items()):
            values = figures.get(scope)
            if values is None and self.tick - last >= self.capacity:
                del self._series[scope]  # silent for a whole window
                continue
            for name, ring in rings.items():
                ring[slot] = values.get(name, NAN) if values else NAN
            if values:
                self._series[scope] = (rings, self.tick)
        for scope, values in figures.items():
            if scope not in self._series:
                rings = {name: array("d", [NAN]) * self.capacity for name in FIELDS}
                for name, ring in rings.items():
                    ring[slot] = values.get(name, NAN)
                self._series[scope] = (rings, self.tick)

    def scopes(self, prefix: str = "") -> list[str]:
        return sorted(s for s in self._series if s.startswith(prefix))

    def read(self, scope: str, since: float | None = None) -> dict[str, object]:
        """The scope's points after ``since`` (all kept points if None), oldest first."""
        ticks = self._ticks(since)
        found = self._series.get(scope)
        series: dict[str, list[float | None]] = {}
        for name in FIELDS:
            ring = found[0][name] if found else None
            series[name] = [_json(ring[t % self.capacity]) if ring is not None else None
                            for t in ticks]
        return {"times": [self._times[t % self.capacity] for t in ticks], "series": series}

    def _ticks(self, since: float | None) -> list[int]:
        first = max(0, self.tick - self.capacity + 1)
        ticks = range(first, self.tick + 1)
        if since is None:
            return list(ticks)
        return [t for t in ticks if self._times[t % self.capacity] > since]


def _json(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 6)
