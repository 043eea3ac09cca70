"""Push durations in seconds: Prometheus-style cumulative buckets and their sum.

The admin's metrics collector reads these at scrape time (``admin.web.metrics``), so the pusher
only counts and no registry is kept in step with it.
"""

from __future__ import annotations


class DurationHistogram:
    """Durations in seconds, counted into fixed buckets (nothing else is kept)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # per bucket, the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.buckets) if value <= bound),
                     len(self.buckets))
        self.counts[index] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) with +Inf last, as Prometheus exports them."""
        out, total = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += count
            out.append((bound, total))
        return out
