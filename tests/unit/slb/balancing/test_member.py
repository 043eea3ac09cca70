"""``slb.balancing.member``: which members take traffic."""

from __future__ import annotations

from itertools import product

from slb.balancing.member import STATE_DOWN, STATE_DRAIN, STATE_UP, MemberState, taking_traffic


def test_taking_traffic_keeps_the_members_whose_property_says_so_in_order() -> None:
    members = [MemberState(f"10.0.0.{i}:80", f"10.0.0.{i}", 80, weight=weight, state=state,
                           checked_down=down)
               for i, (weight, state, down) in enumerate(
                   product((0, 1, 5), (STATE_UP, STATE_DOWN, STATE_DRAIN), (False, True)))]
    live = taking_traffic(members)
    assert live == tuple(m for m in members if m.takes_traffic)
    assert [(m.weight, m.state, m.checked_down) for m in live] == [(1, STATE_UP, False),
                                                                    (5, STATE_UP, False)]
