"""A group at run time: its members, its balancer, its settings and its idle connections.

A ``Pool`` is compiled from one snapshot and never changes; the next snapshot builds a new one
over the same ``MemberState`` objects for members that survive, so counters and idle connections
carry over. ``pick`` folds passive health into selection: ejected members are skipped unless
fewer than ``panic_threshold`` percent of the members are usable, in which case all of them are
(Envoy's panic mode: ejection plus a bad deploy must not become a total outage).
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from slb.balancer import make_balancer
from slb.member import STATE_UP, MemberState

if TYPE_CHECKING:
    from slb.metrics import Stats
    from slb.model import Group
    from slb.proxy.upstream import UpstreamConnection


class Pool:
    __slots__ = (
        "algorithm", "balancer", "base_ejection", "connect_timeout", "ejected_horizon",
        "idle_pools", "idle_timeout", "max_ejection", "max_fails", "max_idle", "max_requests",
        "members", "name", "panic_threshold", "read_timeout", "retry_non_idempotent", "stats",
        "tries", "tunnel_idle",
    )

    def __init__(self, group: Group, members: dict[str, MemberState], stats: Stats,
                 idle_pools: set[Pool]) -> None:
        self.name = group.name
        self.algorithm = group.algorithm
        self.members = members
        self.balancer = make_balancer(group.algorithm, members.values())
        # no member is ejected past this time: the common case skips the panic count
        self.ejected_horizon = max((m.ejected_until for m in members.values()), default=0.0)
        self.stats = stats
        self.idle_pools = idle_pools  # pools with idle connections, for the idle sweep
        self.connect_timeout = group.timeouts.connect
        self.read_timeout = group.timeouts.read
        self.idle_timeout = group.timeouts.idle
        self.tunnel_idle = group.timeouts.tunnel_idle
        self.max_idle = group.keepalive.max_idle
        self.max_requests = group.keepalive.max_requests
        self.tries = group.retry.tries
        self.retry_non_idempotent = group.retry.non_idempotent
        self.max_fails = group.passive_health.max_fails
        self.base_ejection = group.passive_health.base_ejection
        self.max_ejection = group.passive_health.max_ejection
        self.panic_threshold = group.passive_health.panic_threshold

    def set_members(self, members: dict[str, MemberState]) -> None:
        """A pool delta: new members and balancer in one step, settings unchanged."""
        self.balancer = make_balancer(self.algorithm, members.values())
        self.members = members
        self.ejected_horizon = max((m.ejected_until for m in members.values()), default=0.0)

    def pick(self, skip: Container[MemberState], now: float) -> MemberState | None:
        panic = self.ejected_horizon > now and self.in_panic(now)
        return self.balancer.pick(skip, now, panic)

    def in_panic(self, now: float) -> bool:
        members = self.balancer.members
        usable = sum(1 for m in members if m.ejected_until <= now)
        return usable * 100 < len(members) * self.panic_threshold

    def record_failure(self, member: MemberState, now: float, connect: bool = False) -> None:
        """A failed try on ``member``: counted, and held against it by passive health."""
        if connect:
            self.stats.count_connect_failure(self.name, member.address)
        else:
            self.stats.count_upstream_failure(self.name, member.address)
        if member.record_failure(now, self.max_fails, self.base_ejection, self.max_ejection):
            self.ejected_horizon = max(self.ejected_horizon, member.ejected_until)
            self.stats.count_ejection(self.name, member.address)

    # -- idle keep-alive connections ---------------------------------------------------------

    def take_idle(self, member: MemberState, now: float) -> UpstreamConnection | None:
        idle = member.idle
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_timeout):
                return conn
            conn.close()
        return None

    def put_idle(self, member: MemberState, conn: UpstreamConnection, now: float) -> None:
        if (self.max_idle == 0 or conn.requests >= self.max_requests
                or member.state != STATE_UP or self.members.get(member.address) is not member):
            conn.close()
            return
        conn.owner = None
        conn.idle_since = now
        idle = member.idle
        if len(idle) >= self.max_idle:
            idle.pop(0).close()
        idle.append(conn)
        self.idle_pools.add(self)

    def expire_idle(self, now: float) -> bool:
        """Close idle connections past the idle timeout; True while some remain.

        Each member's idle list is in parking order, so expired ones are at its front.
        """
        deadline = now - self.idle_timeout
        remaining = False
        for member in self.members.values():
            idle = member.idle
            while idle and idle[0].idle_since <= deadline:
                idle.pop(0).close()
            remaining = remaining or bool(idle)
        return remaining
