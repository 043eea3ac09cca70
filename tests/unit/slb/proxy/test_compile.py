"""``slb.proxy.compile``: a Config compiled into a Runtime, member state carried over."""

from __future__ import annotations

from dataclasses import dataclass

from slb.metrics import Stats
from slb.model import Config, parse_config
from slb.proxy.compile import build_runtime, carry_members, close_idle_of_leaving, retire
from slb.proxy.exchange import Exchange


def config(*members: tuple[str, str]) -> Config:
    return parse_config({
        "groups": [{"name": "web", "members": [{"address": a, "state": s} for a, s in members]}],
        "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080", "domains": ["a.test"],
                             "routes": [{"path": "/", "group": "web"}]}]})


@dataclass(eq=False)
class Conn:
    requests: int = 0
    idle_since: float = 0.0
    owner: object | None = None
    closed: bool = False

    def usable(self, now: float, idle_timeout: float) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True


def test_the_runtime_routes_to_the_pools_it_built() -> None:
    runtime = build_runtime(config(("10.0.0.1:80", "up")), None, Stats(), set())
    route = runtime.tables["127.0.0.1:8080"].virtual_host("a.test").match(
        "/x", Exchange(0.0), b"127.0.0.1")
    assert route is not None and route.target is not None
    assert route.target.pool is runtime.pools["web"]
    assert route.actions is None  # a plain route: nothing more per request
    assert runtime.settings is runtime.config.http
    assert runtime.listen_addresses == {"127.0.0.1:8080"}


def test_members_that_leave_or_stop_taking_traffic_lose_their_idle_connections() -> None:
    stats, idle = Stats(), set()
    old = build_runtime(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "up"),
                               ("10.0.0.3:80", "up")), None, stats, idle)
    conns = {a: Conn() for a in old.pools["web"].members}
    for address, conn in conns.items():
        old.pools["web"].members[address].idle.append(conn)
    new = build_runtime(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "drain")), old, stats,
                        idle)
    assert new.pools["web"].members["10.0.0.1:80"] is old.pools["web"].members["10.0.0.1:80"]
    retire(old, new)
    assert [conns[a].closed for a in sorted(conns)] == [False, True, True]


def test_a_group_with_the_same_addresses_in_order_keeps_its_dict_with_new_values() -> None:
    runtime = build_runtime(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "up")), None,
                            Stats(), set())
    old = runtime.pools["web"].members
    second = old["10.0.0.2:80"]
    second.requests = 9
    assert carry_members(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "down")).groups[0],
                         old) is old
    assert old["10.0.0.2:80"] is second and (second.state, second.requests) == ("down", 9)


def test_a_changed_member_list_gets_a_new_dict_in_the_new_order() -> None:
    runtime = build_runtime(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "up")), None,
                            Stats(), set())
    old = runtime.pools["web"].members
    for members in ([("10.0.0.2:80", "drain"), ("10.0.0.1:80", "up")],  # reordered
                    [("10.0.0.1:80", "up"), ("10.0.0.3:80", "up")]):  # one replaced
        new = carry_members(config(*members).groups[0], old)
        assert new is not old and list(new) == [a for a, _ in members]
        assert all(new[a] is old[a] for a in new if a in old)
        assert [m.state for m in new.values()] == [s for _, s in members]
    assert new["10.0.0.3:80"].port == 80 and new["10.0.0.3:80"].host == "10.0.0.3"


def test_only_members_with_idle_connections_that_leave_or_stop_are_closed() -> None:
    runtime = build_runtime(config(("10.0.0.1:80", "up"), ("10.0.0.2:80", "up"),
                                   ("10.0.0.3:80", "up")), None, Stats(), set())
    members = runtime.pools["web"].members
    conns = {a: Conn() for a in members}
    for address, conn in conns.items():
        members[address].idle.append(conn)
    members["10.0.0.2:80"].state = "down"
    close_idle_of_leaving(members, members)  # the same members, one of them set down
    assert [conns[a].closed for a in sorted(conns)] == [False, True, False]
    close_idle_of_leaving(members, {})  # all of them left
    assert all(conn.closed for conn in conns.values())


def test_a_full_apply_keeps_a_hash_groups_table_when_its_members_and_weights_stand() -> None:
    # a full apply must not refill a table it already has (4.7 ms a group of 10)
    from slb.balancing import hashing

    def hashed(*weights: int) -> Config:
        return parse_config({
            "groups": [{"name": "web", "algorithm": "hash", "hash_key": "client_ip",
                        "members": [{"address": f"10.0.0.{i}:80", "weight": w}
                                    for i, w in enumerate(weights, 1)]}],
            "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080",
                                 "routes": [{"path": "/", "group": "web"}]}]})

    stats = Stats()
    first = build_runtime(hashed(1, 1, 1), None, stats, set())
    again = build_runtime(hashed(1, 1, 1), first, stats, set())
    assert again.pools["web"].balancer._table is first.pools["web"].balancer._table
    reweighted = build_runtime(hashed(1, 1, 2), again, stats, set())
    assert reweighted.pools["web"].balancer._table is not again.pools["web"].balancer._table
    assert reweighted.pools["web"].balancer._table == hashing.build_table(
        reweighted.pools["web"].balancer._ring, reweighted.pools["web"].balancer._size)
