"""``slb.node.health``: rise and fall, what is reported to the data plane, and when."""

from __future__ import annotations

from slb.model import HealthCheck
from slb.node.health import ActiveHealth, MemberHealth, probe
from tests.support.backends import free_port

CHECK = HealthCheck(rise=2, fall=3)


class Reports:
    def __init__(self) -> None:
        self.sent: list[dict[tuple[str, str], bool]] = []

    async def __call__(self, changes: dict[tuple[str, str], bool]) -> None:
        self.sent.append(changes)


async def feed(results: list[bool]) -> tuple[MemberHealth, Reports]:
    reports = Reports()
    health = ActiveHealth(reports)
    state = MemberHealth("web", "10.0.0.1:80", CHECK)
    for passed in results:
        await health.record(state, passed, "status 200" if passed else "status 500")
    return state, reports


async def test_a_member_goes_down_after_fall_failures_in_a_row_only() -> None:
    state, reports = await feed([False, False, True, False, False])
    assert state.up and reports.sent == []  # a pass in between resets the count
    state, reports = await feed([False, False, False])
    assert not state.up and reports.sent == [{("web", "10.0.0.1:80"): True}]
    assert state.view()["last_result"] == "status 500"


async def test_a_down_member_comes_back_after_rise_passes_and_is_reported_once() -> None:
    state, reports = await feed([False] * 3 + [True, False, True, True, True, True])
    assert state.up
    assert reports.sent == [{("web", "10.0.0.1:80"): True}, {("web", "10.0.0.1:80"): False}]


async def test_a_refused_connection_fails_the_check() -> None:
    passed, what = await probe(f"127.0.0.1:{free_port()}", HealthCheck(timeout=2))
    assert not passed and what
