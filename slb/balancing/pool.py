"""A group at run time: its members, its balancer, its settings and its idle connections.

A ``Pool`` is compiled from one snapshot and never changes its settings; the next snapshot builds
a new one over the same ``MemberState`` objects for members that survive, so counters and idle
connections carry over. A pool delta replaces members and balancer in one step
(``set_members``). ``pick`` folds passive health into selection (``slb.balancing.outlier``):
ejected members are skipped unless the pool is in panic, in which case all of them are tried.
A ``hash`` or ``ip_hash`` group has a ``ConsistentHash`` (``slb.balancing.hashing``) and a
``hash_key`` saying what of the request is hashed; the proxy extracts it and calls
``pick_hashed``.

Idle keep-alive connections are parked on their member (``MemberState.idle``, LIFO) and expired
by the proxy's sweeper through ``expire_idle``; the pool registers itself in ``idle_pools`` when
it parks one, so the sweep visits only pools that have some.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING

from slb.balancing.balancer import Balancer, make_balancer
from slb.balancing.hashing import ConsistentHash
from slb.balancing.member import STATE_UP, IdleConnection, MemberState
from slb.balancing.outlier import ejection_horizon, in_panic, record_failure

if TYPE_CHECKING:
    from slb.metrics import Stats
    from slb.model import Group


class Pool:
    __slots__ = (
        "algorithm", "balancer", "connect_timeout", "ejected_horizon", "hash_key", "idle_pools",
        "idle_timeout", "max_idle", "max_requests", "members", "name", "passive_health",
        "read_timeout", "retry_non_idempotent", "stats", "tries", "tunnel_idle",
    )

    def __init__(self, group: Group, members: dict[str, MemberState], stats: Stats,
                 idle_pools: set[Pool], replacing: Pool | None = None) -> None:
        """``replacing``: the pool of the same name in the runtime this one's replaces (a full
        apply): a hash group takes over its table when its ring is unchanged, as on a delta
        (``slb.balancing.hashing.ConsistentHash``)."""
        self.name = group.name
        self.algorithm = group.algorithm
        self.stats = stats
        self.idle_pools = idle_pools  # pools with idle connections, for the idle sweep
        # read per request: plain slots (the settings objects are frozen, nothing goes stale)
        self.connect_timeout = group.timeouts.connect
        self.read_timeout = group.timeouts.read
        self.idle_timeout = group.timeouts.idle
        self.tunnel_idle = group.timeouts.tunnel_idle
        self.max_idle = group.keepalive.max_idle
        self.max_requests = group.keepalive.max_requests
        self.tries = group.retry.tries
        self.retry_non_idempotent = group.retry.non_idempotent
        self.passive_health = group.passive_health  # read on failures only
        self.hash_key = hash_key_of(group)
        self.members: dict[str, MemberState] = {}  # (``_install`` puts ``members``)
        self._install(members, replacing.balancer if replacing is not None else None)

    def set_members(self, members: dict[str, MemberState]) -> None:
        """New members and balancer in one step (a pool delta), settings unchanged.

        ``members`` may be the pool's own dict, its states' weights or states changed in
        place (``carry_members`` on a health flip, an active health result): then only the
        balancer is rebuilt. The ejection horizon stands, as the members are the same ones.
        """
        self._install(members, self.balancer)

    def _install(self, members: dict[str, MemberState], previous: Balancer | None) -> None:
        """``members`` and a balancer over them; ``previous``: the balancer replaced (a hash
        group's takes over its table when the ring is the same)."""
        if members is not self.members:
            self.members = members
            self.ejected_horizon = ejection_horizon(members.values())
        self.balancer: Balancer
        if self.hash_key is not None:
            # the ring: every member with a weight, whatever its state (slb.balancing.hashing)
            self.balancer = ConsistentHash(tuple([m for m in members.values() if m.weight > 0]),
                                           previous if isinstance(previous, ConsistentHash)
                                           else None)
        else:
            self.balancer = make_balancer(self.algorithm, members.values())

    def pick(self, skip: Container[MemberState], now: float) -> MemberState | None:
        panic = self.ejected_horizon > now and in_panic(
            self.balancer.members, now, self.passive_health.panic_threshold)
        return self.balancer.pick(skip, now, panic)

    def pick_hashed(self, key: bytes, skip: Container[MemberState], now: float
                    ) -> MemberState | None:
        """``pick`` for a hash group: ``key`` is what ``hash_key`` names, from the request."""
        panic = self.ejected_horizon > now and in_panic(
            self.balancer.members, now, self.passive_health.panic_threshold)
        balancer = self.balancer
        assert isinstance(balancer, ConsistentHash)
        return balancer.pick_key(key, skip, now, panic)

    def record_failure(self, member: MemberState, now: float, connect: bool = False) -> None:
        """A failed try on ``member``: counted, and held against it by passive health."""
        if connect:
            self.stats.count_connect_failure(self.name, member.address)
        else:
            self.stats.count_upstream_failure(self.name, member.address)
        if record_failure(member, now, self.passive_health):
            self.ejected_horizon = max(self.ejected_horizon, member.ejected_until)
            self.stats.count_ejection(self.name, member.address)

    # -- idle keep-alive connections ---------------------------------------------------------

    def take_idle(self, member: MemberState, now: float) -> IdleConnection | None:
        idle = member.idle
        while idle:
            conn = idle.pop()
            if conn.usable(now, self.idle_timeout):
                return conn
            conn.close()
        return None

    def put_idle(self, member: MemberState, conn: IdleConnection, now: float) -> None:
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


# What a hash group hashes, as (kind, name): the proxy reads it per request, so it is parsed here.
KEY_CLIENT_IP = 0  # the client address (hash_key: client_ip)
KEY_PATH = 1
KEY_HEADER = 2  # name: the lowercased field name
KEY_COOKIE = 3
KEY_CLIENT_NET = 4  # ip_hash: the first three octets of an IPv4 client address


def hash_key_of(group: Group) -> tuple[int, bytes] | None:
    if group.algorithm == "ip_hash":
        return (KEY_CLIENT_NET, b"")
    if group.algorithm != "hash" or group.hash_key is None:
        return None
    kind, _, name = group.hash_key.partition(":")
    kinds = {"client_ip": KEY_CLIENT_IP, "path": KEY_PATH, "header": KEY_HEADER,
             "cookie": KEY_COOKIE}
    return (kinds[kind], name.lower().encode() if kind == "header" else name.encode())
