"""Runtime state of one upstream member, kept across configuration changes.

A member's identity is its address (``host:port``). The compiled pools of two snapshots share the
same ``MemberState`` object for a surviving member, so smooth-WRR current weight, in-flight count,
idle connections and passive-health counters carry over a reload (nginx resets all of them on
reload; Envoy keeps per-host state across EDS updates: we do as Envoy).

Passive health follows Envoy's outlier detection: ``max_fails`` consecutive failures eject the
member for ``base_ejection * ejections`` seconds, capped at ``max_ejection``. The multiplier is
forgotten once the member has stayed healthy for ``max_ejection`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slb.proxy.upstream import UpstreamConnection

STATE_UP = "up"
STATE_DOWN = "down"
STATE_DRAIN = "drain"


@dataclass(slots=True, eq=False)
class MemberState:
    address: str
    host: str
    port: int
    weight: int = 1
    state: str = STATE_UP
    # smooth weighted round-robin (nginx ngx_http_upstream_round_robin.c)
    current_weight: int = 0
    # requests in flight on this member (least_conn, random2, drain)
    active: int = 0
    # passive health
    consecutive_failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    # totals, for /v1/status and metrics
    requests: int = 0
    failures: int = 0
    # idle keep-alive connections, most recently used last (LIFO keeps few warm connections)
    idle: list[UpstreamConnection] = field(default_factory=list)

    @property
    def takes_traffic(self) -> bool:
        return self.weight > 0 and self.state == STATE_UP

    def is_ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def record_success(self) -> None:
        self.consecutive_failures = 0

    def record_failure(self, now: float, max_fails: int, base_ejection: float,
                       max_ejection: float) -> bool:
        """Count one failure; returns True when it ejects the member."""
        self.failures += 1
        self.consecutive_failures += 1
        if max_fails <= 0 or self.consecutive_failures < max_fails or self.ejected_until > now:
            return False
        if self.ejections and now - self.ejected_until > max_ejection:
            self.ejections = 0  # healthy long enough: the multiplier decays (Envoy)
        self.ejections += 1
        self.ejected_until = now + min(base_ejection * self.ejections, max_ejection)
        self.consecutive_failures = 0
        return True
