"""``slb.balancing.pool``: selection with passive health, and idle connections on members."""

from __future__ import annotations

from dataclasses import dataclass

from slb.balancing.member import STATE_DRAIN, IdleConnection, MemberState
from slb.balancing.pool import Pool
from slb.metrics import Stats
from slb.model import Group, parse_config


def group(**changes: object) -> Group:
    body = {"name": "g", "members": [{"address": f"10.0.0.{i}:80"} for i in (1, 2, 3)],
            "passive_health": {"max_fails": 1, "base_ejection": 10, "panic_threshold": 50},
            "keepalive": {"max_idle": 2, "max_requests": 3}, "timeouts": {"idle": 4}}
    body.update(changes)
    return parse_config({"groups": [body]}).groups[0]


def pool(g: Group | None = None) -> Pool:
    g = g or group()
    members = {m.address: MemberState(m.address, m.address[:-3], 80) for m in g.members}
    for m in g.members:
        members[m.address].state = m.state
    return Pool(g, members, Stats(), set())


@dataclass(eq=False)
class FakeConnection:
    requests: int = 0
    idle_since: float = 0.0
    owner: object | None = "exchange"
    closed: bool = False

    def usable(self, now: float, idle_timeout: float) -> bool:
        return not self.closed and now - self.idle_since < idle_timeout

    def close(self) -> None:
        self.closed = True


def test_a_fake_connection_is_an_idle_connection() -> None:
    conn: IdleConnection = FakeConnection()  # the protocol is all the pool needs
    assert conn.usable(1.0, 4.0)


def test_ejected_members_are_skipped_and_counted() -> None:
    p = pool()
    a = p.members["10.0.0.1:80"]
    p.record_failure(a, now=100.0, connect=True)
    assert a.ejected_until == 110.0
    assert {p.pick((), 105.0).address for _ in range(20)} == {"10.0.0.2:80", "10.0.0.3:80"}
    assert p.stats.connect_failures == {("g", "10.0.0.1:80"): 1}
    assert p.stats.ejections == {("g", "10.0.0.1:80"): 1}


def test_in_panic_every_member_is_tried_again() -> None:
    p = pool()
    for address in ("10.0.0.1:80", "10.0.0.2:80"):
        p.record_failure(p.members[address], now=100.0)
    picked = {p.pick((), 105.0).address for _ in range(30)}
    assert picked == {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}


def test_idle_connections_are_reused_last_parked_first() -> None:
    p = pool()
    m = p.members["10.0.0.1:80"]
    first, second = FakeConnection(), FakeConnection()
    p.put_idle(m, first, now=1.0)
    p.put_idle(m, second, now=2.0)
    assert first.owner is None and p.idle_pools == {p}
    assert p.take_idle(m, now=3.0) is second
    assert p.take_idle(m, now=3.0) is first
    assert p.take_idle(m, now=3.0) is None


def test_parking_closes_what_should_not_be_kept() -> None:
    p = pool(group(members=[{"address": "10.0.0.1:80", "state": "drain"},
                            {"address": "10.0.0.2:80"}]))
    drained, live = p.members["10.0.0.1:80"], p.members["10.0.0.2:80"]
    assert drained.state == STATE_DRAIN
    worn, spare = FakeConnection(requests=3), FakeConnection()
    p.put_idle(drained, spare, now=0.0)
    p.put_idle(live, worn, now=0.0)
    assert spare.closed and worn.closed
    conns = [FakeConnection() for _ in range(3)]
    for conn in conns:
        p.put_idle(live, conn, now=0.0)
    assert conns[0].closed and live.idle == conns[1:]  # max_idle 2: the oldest goes


def test_expiry_closes_connections_idle_longer_than_the_idle_timeout() -> None:
    p = pool()
    m = p.members["10.0.0.1:80"]
    old, new = FakeConnection(), FakeConnection()
    p.put_idle(m, old, now=0.0)
    p.put_idle(m, new, now=3.0)
    assert p.expire_idle(now=5.0) is True
    assert old.closed and m.idle == [new]
    assert p.expire_idle(now=7.0) is False and new.closed
    assert p.take_idle(m, now=7.0) is None


def test_set_members_swaps_members_and_balancer_together() -> None:
    p = pool()
    only = MemberState("10.0.0.9:80", "10.0.0.9", 80)
    p.set_members({only.address: only})
    assert p.balancer.members == (only,)
    assert p.pick((), 0.0) is only


def test_set_members_over_its_own_dict_rebuilds_the_balancer_and_keeps_the_horizon() -> None:
    p = pool()
    first, second, third = p.members.values()
    p.record_failure(first, now=100.0)  # max_fails 1: ejected for 10 s
    horizon = p.ejected_horizon
    second.state = STATE_DRAIN  # changed in place, as carry_members does on a health flip
    p.set_members(p.members)
    assert p.balancer.members == (first, third)
    assert p.ejected_horizon == horizon == 110.0
    assert p.pick((), 105.0) is third
