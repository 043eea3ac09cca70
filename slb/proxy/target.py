"""``Target``: what a request is routed to, shared by the router, the actions and the exchange.

Its own module so that the exchange can name it without importing the router (which reads
exchanges through ``slb.proxy.actions.ExchangeView``): imports go one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slb.balancing.pool import Pool
    from slb.metrics import LatencyHistogram


@dataclass(slots=True, frozen=True)
class Target:
    """What a request is routed to: a group, with the names metrics and logs need."""

    virtual_server: str
    route_index: int
    pool: Pool
    latency: LatencyHistogram
    # the group's timeouts, or the route's own (a route's `timeouts`)
    connect_timeout: float
    read_timeout: float
