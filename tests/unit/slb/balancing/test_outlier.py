"""``slb.balancing.outlier``: consecutive failures eject, ejections grow and decay, panic."""

from __future__ import annotations

from slb.balancing.member import MemberState
from slb.balancing.outlier import ejection_horizon, in_panic, is_ejected, record_failure
from slb.model import PassiveHealth

POLICY = PassiveHealth(max_fails=3, base_ejection=10.0, max_ejection=25.0)


def member(name: str = "a") -> MemberState:
    return MemberState(f"{name}:80", name, 80)


def fail(m: MemberState, times: int, now: float, policy: PassiveHealth = POLICY) -> list[bool]:
    return [record_failure(m, now, policy) for _ in range(times)]


def test_max_fails_consecutive_failures_eject_for_base_ejection() -> None:
    m = member()
    assert fail(m, 3, now=100.0) == [False, False, True]
    assert is_ejected(m, 109.9) and not is_ejected(m, 110.0)
    assert (m.failures, m.consecutive_failures, m.ejections) == (3, 0, 1)


def test_a_success_between_failures_restarts_the_count() -> None:
    m = member()
    fail(m, 2, now=1.0)
    m.record_success()
    assert fail(m, 2, now=1.0) == [False, False]
    assert not is_ejected(m, 1.0)


def test_failures_while_ejected_do_not_extend_the_ejection() -> None:
    m = member()
    fail(m, 3, now=0.0)
    assert fail(m, 3, now=5.0) == [False, False, False]
    assert m.ejected_until == 10.0


def test_each_ejection_lasts_longer_up_to_max_ejection_then_the_multiplier_decays() -> None:
    m = member()
    fail(m, 3, now=0.0)  # 10 s
    fail(m, 3, now=11.0)  # 20 s, until 31
    assert m.ejected_until == 31.0
    fail(m, 3, now=32.0)  # 30 s capped at 25
    assert m.ejected_until == 57.0
    fail(m, 3, now=57.0 + 25.0 + 1.0)  # healthy longer than max_ejection: back to 10 s
    assert (m.ejections, m.ejected_until) == (1, 93.0)


def test_zero_max_fails_never_ejects() -> None:
    m = member()
    assert not any(fail(m, 50, now=0.0, policy=PassiveHealth(max_fails=0)))


def test_panic_below_the_threshold_of_usable_members() -> None:
    members = [member(n) for n in "abcd"]
    members[0].ejected_until = members[1].ejected_until = 50.0
    assert not in_panic(members, 10.0, threshold=50)  # 2 of 4 usable: 50% is not below 50%
    members[2].ejected_until = 50.0
    assert in_panic(members, 10.0, threshold=50)
    assert not in_panic(members, 50.0, threshold=50)  # ejections over
    assert not in_panic(members, 10.0, threshold=0)
    assert ejection_horizon(members) == 50.0 and ejection_horizon([]) == 0.0
