"""Traffic seen: the nodes' counters sampled into a bounded rolling window of rates.

    window.py   TrafficWindow (fixed-memory rings per scope), counter resets, percentiles
    sampler.py  Sampler: every node's /metrics each interval, summed per scope
    query.py    the one answer of GET /api/v1/stats and of the UI's charts
"""

from admin.traffic.query import StatsQueryError, stats_answer
from admin.traffic.sampler import Sampler
from admin.traffic.window import FIELDS, TrafficWindow

__all__ = ["FIELDS", "Sampler", "StatsQueryError", "TrafficWindow", "stats_answer"]
