"""Confirmed delivery: what each node did about a change, not only that the admin stored it.

A change (a member or server operation, an activation, a rollback) is stored first; the
publisher then builds and hands out snapshots with versions above every version handed out
before the change. So "node N applied this change" is exactly "N applied a version above the
*mark*" (the store's push counter read before the change), whatever else was published in
between: every later snapshot is built from a store that already holds the change.

``Ticket`` is taken before the change (``ticket(service, groups)``), and ``confirm`` waits up to
``wait`` seconds for every node of the clusters that serve the touched groups, then reports each:
``{"node", "cluster", "applied", "version"}`` plus ``"error"`` when it did not (its push error,
or "not applied yet"). ``complete`` is true when every node applied: the API answers 200, else
202 with the same body (the change is stored and the pushers keep pushing).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from admin.domain.publisher import Publisher
from admin.domain.store import Store

WAIT_DEFAULT = 10.0  # seconds; Ctrip's operations wait 30
WAIT_MAX = 300.0


@dataclass(frozen=True, slots=True)
class Ticket:
    mark: int  # the last snapshot version handed out before the change


def ticket(store: Store) -> Ticket:
    return Ticket(store.push_version())


@dataclass(slots=True)
class Delivery:
    nodes: list[dict[str, Any]]

    @property
    def complete(self) -> bool:
        return all(node["applied"] for node in self.nodes)

    @property
    def status(self) -> int:
        return 200 if self.complete else 202

    def to_json(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "complete": self.complete}


def parse_wait(value: str | None, default: float = WAIT_DEFAULT, most: float = WAIT_MAX,
               name: str = "wait") -> float:
    """A query's seconds (absent: ``default``); ValueError naming ``name`` otherwise."""
    if value is None or value == "":
        return default
    problem = f"{name}: expected seconds (0-{most:g}), got {value[:40]!r}"
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(problem) from None
    if not 0 <= seconds <= most:  # NaN fails this too
        raise ValueError(problem)
    return seconds


async def confirm(publisher: Publisher, taken: Ticket, groups: set[str] | None,
                  wait: float) -> Delivery:
    """Wait up to ``wait`` seconds for every node serving ``groups`` (None: every cluster) to
    apply a version above the ticket's mark; what each did."""
    version = taken.mark + 1
    pushers = [(cluster, publisher.pushers[cluster])
               for cluster in sorted(publisher.clusters_serving(groups))
               if cluster in publisher.pushers]
    if wait > 0 and pushers:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.gather(*(p.wait_in_sync(version, wait) for _, p in pushers))
    return Delivery([{"cluster": cluster, **node} for cluster, pusher in pushers
                     for node in pusher.deliveries(version)])
