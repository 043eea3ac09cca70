"""Load-balancing selection (slb.balancing.balancer): wrr, least_conn, random2."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from slb.balancing.balancer import ALGORITHMS, Balancer, make_balancer
from slb.balancing.member import STATE_DOWN, STATE_DRAIN, STATE_UP, MemberState

NOW = 1000.0
NO_SKIP: tuple[MemberState, ...] = ()


def member(name: str, weight: int = 1, *, active: int = 0, state: str = STATE_UP) -> MemberState:
    return MemberState(address=f"{name}:80", host=name, port=80, weight=weight, state=state,
                       active=active)


def pool(**weights: int) -> list[MemberState]:
    return [member(name, weight) for name, weight in weights.items()]


def balancer(algorithm: str, members: list[MemberState], seed: int = 1234) -> Balancer:
    return make_balancer(algorithm, members, rng=random.Random(seed))


def picks(b: Balancer, n: int, skip: tuple[MemberState, ...] | list[MemberState] = NO_SKIP,
          *, now: float = NOW, panic: bool = False) -> str:
    out = []
    for _ in range(n):
        m = b.pick(skip, now, panic)
        out.append("-" if m is None else m.host)
    return "".join(out)


# --- wrr -------------------------------------------------------------------------------------


def test_wrr_weights_5_1_1_give_the_nginx_smooth_sequence_every_cycle() -> None:
    b = balancer("wrr", pool(a=5, b=1, c=1))
    assert picks(b, 28) == "aabacaa" * 4


def test_wrr_current_weights_return_to_zero_after_a_full_cycle() -> None:
    members = pool(a=5, b=1, c=1)
    b = balancer("wrr", members)
    picks(b, 7)
    assert [m.current_weight for m in members] == [0, 0, 0]


def test_wrr_skip_excludes_member_and_the_rest_stay_smooth() -> None:
    a, b_, c = members = pool(a=3, b=2, c=1)
    b = balancer("wrr", members)
    # b and c alone, 2:1, interleaved; the skipped member's state is untouched
    assert picks(b, 9, skip=[a]) == "bcb" * 3
    assert a.current_weight == 0
    # back to the full pool: the 3/2/1 smooth sequence, unperturbed
    assert picks(b, 12) == "abacba" * 2
    assert (b_.current_weight, c.current_weight) == (0, 0)


def test_retry_with_tried_member_in_skip_returns_another_member() -> None:
    members = pool(a=5, b=1, c=1)
    b = balancer("wrr", members)
    first = b.pick(NO_SKIP, NOW, False)
    assert first is members[0]
    second = b.pick([first], NOW, False)
    assert second is not None and second is not first
    third = b.pick([first, second], NOW, False)
    assert third is not None and third not in (first, second)


def test_new_wrr_balancer_over_same_members_continues_the_sequence() -> None:
    members = pool(a=5, b=1, c=1)
    assert picks(balancer("wrr", members), 3) == "aab"
    assert picks(balancer("wrr", members), 4) == "acaa"
    assert picks(balancer("wrr", members), 7) == "aabacaa"


def test_wrr_weight_change_takes_effect_on_next_pick() -> None:
    a, _b = members = pool(a=1, b=1)
    b = balancer("wrr", members)
    assert picks(b, 1) == "a"  # current weights now a=-1, b=1
    a.weight = 10  # with the old weight the next pick would be b
    assert picks(b, 1) == "a"


# --- least_conn ------------------------------------------------------------------------------


def test_least_conn_picks_fewest_active_per_weight() -> None:
    # a: 3 active / weight 2 = 1.5, b: 1 active / weight 1 = 1.0 -> b
    a, b_ = member("a", 2, active=3), member("b", 1, active=1)
    assert make_balancer("least_conn", [a, b_]).pick(NO_SKIP, NOW, False) is b_
    # a: 2 active / weight 3 = 0.67, b: 1 / 1 = 1.0 -> a, although a has more requests in flight
    a, b_ = member("a", 3, active=2), member("b", 1, active=1)
    assert make_balancer("least_conn", [a, b_]).pick(NO_SKIP, NOW, False) is a
    # a: 1 active / weight 3, b: 0 active / weight 1 -> b
    a, b_ = member("a", 3, active=1), member("b", 1, active=0)
    assert make_balancer("least_conn", [a, b_]).pick(NO_SKIP, NOW, False) is b_


def test_least_conn_sole_winner_keeps_its_current_weight() -> None:
    a, b_ = member("a", 1, active=2), member("b", 1, active=0)
    b = make_balancer("least_conn", [a, b_])
    assert picks(b, 5) == "bbbbb"
    assert (a.current_weight, b_.current_weight) == (0, 0)


def test_least_conn_equal_load_follows_the_smooth_wrr_sequence() -> None:
    b = balancer("least_conn", pool(a=5, b=1, c=1))
    assert picks(b, 21) == "aabacaa" * 3


def test_least_conn_ties_are_broken_by_smooth_wrr_among_tied_members_only() -> None:
    a, b_, c = member("a", 5), member("b", 1), member("c", 1, active=1)
    b = make_balancer("least_conn", [a, b_, c])
    # a and b tie at 0 active: smooth WRR 5/1 over them; c (1 active) takes no part
    assert picks(b, 12) == "aaabaa" * 2
    assert c.current_weight == 0
    assert (a.current_weight, b_.current_weight) == (0, 0)


def test_least_conn_weight_change_takes_effect_on_next_pick() -> None:
    a, b_ = member("a", 1, active=2), member("b", 1, active=1)
    b = make_balancer("least_conn", [a, b_])
    assert b.pick(NO_SKIP, NOW, False) is b_
    a.weight = 4  # 2/4 < 1/1
    assert b.pick(NO_SKIP, NOW, False) is a


# --- random2 ---------------------------------------------------------------------------------


def test_random2_share_follows_weights_when_load_is_equal() -> None:
    b = balancer("random2", pool(a=1, b=2, c=3, d=4), seed=7)
    counts = Counter(picks(b, 20_000))
    for name, expected in {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}.items():
        assert counts[name] / 20_000 == pytest.approx(expected, abs=0.015)


def test_random2_prefers_the_less_loaded_of_two_draws() -> None:
    members = [member("a", active=0), member("b", active=5), member("c", active=10)]
    b = balancer("random2", members, seed=11)
    counts = Counter(picks(b, 20_000))
    # distinct pairs, equally likely: a wins 2 of 3, b wins 1 of 3, the most loaded never
    assert counts["c"] == 0
    assert counts["a"] / 20_000 == pytest.approx(2 / 3, abs=0.015)
    assert counts["b"] / 20_000 == pytest.approx(1 / 3, abs=0.015)


def test_random2_compares_load_per_weight() -> None:
    # a: 2 / 1 = 2.0, b: 4 / 4 = 1.0 -> b every time, although b has more requests in flight
    b = balancer("random2", [member("a", 1, active=2), member("b", 4, active=4)])
    assert picks(b, 200) == "b" * 200


def test_random2_weight_change_takes_effect_on_next_pick() -> None:
    a, b_ = members = pool(a=1, b=9)
    b = balancer("random2", members, seed=3)
    assert Counter(picks(b, 5_000))["a"] / 5_000 == pytest.approx(0.1, abs=0.02)
    a.weight, b_.weight = 9, 1  # same total weight: the table must still be rebuilt
    assert Counter(picks(b, 5_000))["a"] / 5_000 == pytest.approx(0.9, abs=0.02)


def test_random2_finds_eligible_members_among_mostly_ineligible_ones() -> None:
    heavy = [member(f"x{i}", 100) for i in range(8)]
    for m in heavy:
        m.ejected_until = NOW + 30
    a, b_ = member("a", 1, active=3), member("b", 1, active=1)
    b = balancer("random2", [*heavy, a, b_], seed=5)
    assert picks(b, 200) == "b" * 200  # draws almost always hit x*: the scan fallback decides
    assert picks(b, 200, skip=[b_]) == "a" * 200  # one eligible member left: returned


def test_random2_single_member_is_returned() -> None:
    only = member("a", 3, active=7)
    b = balancer("random2", [only])
    assert picks(b, 10) == "a" * 10


# --- all algorithms --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_ejected_member_is_skipped_unless_panic(algorithm: str) -> None:
    a, _b = members = pool(a=1, b=1)
    a.ejected_until = NOW + 30
    b = balancer(algorithm, members)
    assert set(picks(b, 100)) == {"b"}
    assert set(picks(b, 100, panic=True)) == {"a", "b"}
    assert set(picks(b, 100, now=NOW + 30)) == {"a", "b"}  # ejection over at ejected_until


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_members_with_weight_0_or_state_down_or_drain_are_never_picked(algorithm: str) -> None:
    up1, up2 = member("a"), member("b")
    members = [member("z", 0), up1, member("d", state=STATE_DOWN), up2,
               member("r", state=STATE_DRAIN)]
    b = balancer(algorithm, members)
    assert b.members == (up1, up2)
    assert set(picks(b, 100)) == {"a", "b"}
    assert set(picks(b, 100, panic=True)) == {"a", "b"}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_weight_set_to_zero_live_stops_traffic_on_next_pick(algorithm: str) -> None:
    a, _b = members = pool(a=1, b=1)
    b = balancer(algorithm, members)
    assert set(picks(b, 50)) == {"a", "b"}
    a.weight = 0
    assert set(picks(b, 50)) == {"b"}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("case", ["no members", "all skipped", "all ejected", "weights zeroed"])
def test_pick_returns_none_when_no_member_is_eligible(algorithm: str, case: str) -> None:
    members = pool(a=2, b=1) if case != "no members" else [member("d", state=STATE_DOWN)]
    b = balancer(algorithm, members)
    skip: list[MemberState] = []
    if case == "all skipped":
        skip = list(members)
    elif case == "all ejected":
        for m in members:
            m.ejected_until = NOW + 1
    elif case == "weights zeroed":
        for m in members:
            m.weight = 0
    assert picks(b, 5, skip=skip) == "-----"


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_pick_does_not_count_active_requests(algorithm: str) -> None:
    members = pool(a=3, b=1)
    b = balancer(algorithm, members)
    picks(b, 20)
    assert [m.active for m in members] == [0, 0]


def test_unknown_algorithm_raises_value_error() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        make_balancer("round_robin", pool(a=1))


def test_algorithms_lists_the_three_algorithms() -> None:
    assert frozenset({"wrr", "least_conn", "random2"}) == ALGORITHMS
    for algorithm in ALGORITHMS:
        make_balancer(algorithm, pool(a=1))


def test_random2_without_rng_draws_from_the_random_modules_generator() -> None:
    # the module's generator is reseeded in each forked worker (os.register_at_fork), and
    # taking it costs nothing, where a random.Random() per balancer cost 11 us a pool change
    members = pool(a=1, b=1, c=1, d=1)
    seen = []
    state = random.getstate()  # (given back: later tests draw from it too)
    try:
        for _ in range(2):
            random.seed(7)
            seen.append(picks(make_balancer("random2", members), 50))
    finally:
        random.setstate(state)
    assert seen[0] == seen[1] and len(set(seen[0])) > 1
