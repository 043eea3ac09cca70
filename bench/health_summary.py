"""The figures of ``health_bench.py``: latency tables of the steady and the flapping changes.

A change's figure is the time from its control request until **all** nodes show its outcome.
For a flapping check the question is the issue's: does every change that is *not superseded*
reach every node in time? A flip is superseded when the next flip of the same check was sent
before every node showed it; such a flip may legitimately never be shown (the admin coalesces
it away), so it is counted apart, and the others are held to the target. A flip that was not
superseded and that some node never showed is *missed*, which fails the run.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from harness import say

TARGET_P99_MS = 200.0


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def summarize(changes: list[Any], nodes: list[str]) -> dict[str, Any]:
    complete = [c for c in changes if len(c.seen) == len(nodes)]
    rows: dict[str, list[float]] = {
        "all nodes": [(max(c.seen.values()) - c.sent) * 1000 for c in complete],
        "first node": [(min(c.seen.values()) - c.sent) * 1000 for c in complete],
    }
    for node in nodes:
        rows[node] = [(c.seen[node] - c.sent) * 1000 for c in changes if node in c.seen]
    rows["control request"] = [(c.acked - c.sent) * 1000 for c in changes]
    table = {}
    for name, values in rows.items():
        if values:
            table[name] = {"n": len(values), "p50_ms": round(quantile(values, 0.50), 2),
                           "p90_ms": round(quantile(values, 0.90), 2),
                           "p99_ms": round(quantile(values, 0.99), 2),
                           "max_ms": round(max(values), 2),
                           "mean_ms": round(statistics.fmean(values), 2)}
    all_nodes = table.get("all nodes")
    return {"changes": len(changes), "complete": len(complete),
            "missed": len(changes) - len(complete), "table": table,
            "target_p99_ms": TARGET_P99_MS,
            "met": bool(all_nodes) and len(complete) == len(changes)
            and all_nodes["p99_ms"] < TARGET_P99_MS}  # type: ignore[index]


def summarize_flapping(flips: list[Any], nodes: list[str]) -> dict[str, Any]:
    """``summarize`` of the flips that were not superseded, and how many were."""
    flips = sorted(flips, key=lambda c: c.sent)
    kept = [flip for flip, following in zip(flips, [*flips[1:], None], strict=True)
            if following is None or not superseded(flip, following, len(nodes))]
    return {**summarize(kept, nodes), "superseded": len(flips) - len(kept)}


def superseded(flip: Any, following: Any, nodes: int) -> bool:
    """The next flip was sent before every node showed this one."""
    return len(flip.seen) < nodes or max(flip.seen.values()) >= following.sent


def print_table(summary: dict[str, Any]) -> None:
    say("")
    say(f"{'':18}{'n':>6}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'mean ms':>10}")
    for name, row in summary["table"].items():
        say(f"{name:18}{row['n']:>6}{row['p50_ms']:>10.1f}{row['p90_ms']:>10.1f}"
            f"{row['p99_ms']:>10.1f}{row['max_ms']:>10.1f}{row['mean_ms']:>10.1f}")
    say("")
    superseded = (f", superseded (left out): {summary['superseded']}"
                  if "superseded" in summary else "")
    say(f"changes: {summary['changes']}, seen on every node: {summary['complete']}, "
        f"missed: {summary['missed']}{superseded}")
    verdict = "MET" if summary["met"] else "MISSED"
    say(f"target: p99 (all nodes) < {TARGET_P99_MS:.0f} ms and no change missed: {verdict}")
