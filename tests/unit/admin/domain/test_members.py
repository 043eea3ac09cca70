"""Effective member state (domain/members.py): every flag must allow traffic, health never
overrides an operator."""

from __future__ import annotations

from typing import Any

import pytest

from admin.domain.members import (
    Discovered,
    MemberView,
    effective_members,
    member_ip,
)
from admin.domain.store import Flag

A = "10.0.0.1:80"
B = "10.0.0.2:80"
GROUP: dict[str, Any] = {"name": "web", "members": [{"address": A}]}


def flag(value: bool, who: str = "otto", why: str = "deploy") -> Flag:
    return Flag(value, who, 1700000000.0, why)


def view(group: dict[str, Any] | None = None, member: Discovered | None = None,
         flags: dict[str, Flag] | None = None, server: Flag | None = None) -> MemberView:
    member = member or Discovered(A)
    [found] = effective_members(group or GROUP, [member], {member.address: flags or {}},
                                {member_ip(member.address): server} if server else {})
    return found


# -- the truth table -----------------------------------------------------------------------


def test_member_with_every_flag_allowing_is_up_with_system_defaults() -> None:
    found = view()
    assert (found.state, found.held_by) == ("up", [])
    assert set(found.flags) == {"ops", "pull", "server", "health", "maintenance"}
    assert found.flags["ops"] == {"value": True, "who": "system", "at": None, "why": ""}
    assert found.flags["health"]["value"] is True
    assert found.flags["maintenance"]["value"] is False


@pytest.mark.parametrize(("flags", "server", "member", "held", "state"), [
    ({"ops": flag(False)}, None, Discovered(A), "ops", "drain"),
    ({"pull": flag(False)}, None, Discovered(A), "pull", "drain"),
    ({}, flag(False), Discovered(A), "server", "drain"),
    ({}, None, Discovered(A, health="critical"), "health", "down"),
    ({}, None, Discovered(A, maintenance=True, maintenance_reason="reboot"), "maintenance",
     "down"),
], ids=["ops", "pull", "server", "health", "maintenance"])
def test_each_flag_alone_holds_the_member_out(flags: dict[str, Flag], server: Flag | None,
                                              member: Discovered, held: str,
                                              state: str) -> None:
    found = view(member=member, flags=flags, server=server)
    assert found.held_by == [held]
    assert found.state == state


def test_operator_flag_shows_who_when_and_why() -> None:
    found = view(flags={"pull": Flag(False, "otto", 1700000000.0, "deploy 42")})
    assert found.flags["pull"] == {"value": False, "who": "otto", "at": 1700000000.0,
                                   "why": "deploy 42"}
    assert found.to_json()["state"] == "drain"
    assert found.to_json()["held_by"] == ["pull"]


def test_operator_and_health_holding_together_is_down() -> None:
    found = view(member=Discovered(A, health="critical"), flags={"ops": flag(False)})
    assert found.held_by == ["ops", "health"]
    assert found.state == "down"


def test_server_flag_applies_to_the_ip_whatever_the_port_and_group() -> None:
    members = [Discovered("10.0.0.1:80"), Discovered("10.0.0.1:8080"), Discovered(B)]
    servers = {"10.0.0.1": flag(False)}
    for group in (GROUP, {"name": "api"}):
        states = [m.state for m in effective_members(group, members, {}, servers)]
        assert states == ["drain", "drain", "up"]
    assert member_ip("[::1]:8080") == "::1"
    [v6] = effective_members(GROUP, [Discovered("[::1]:8080")], {}, {"::1": flag(False)})
    assert v6.held_by == ["server"]


# -- health never overrides an operator, and the other way round ---------------------------


def test_health_flip_never_overrides_operator_pull_out() -> None:
    pulled = {"pull": flag(False)}
    for health in ("passing", "critical", "passing", "warning", "passing"):
        found = view(member=Discovered(A, health=health), flags=pulled)
        assert "pull" in found.held_by
        assert found.state != "up"


def test_pull_in_never_sends_traffic_to_a_failing_member() -> None:
    pulled_in = {"pull": flag(True, why="deployed"), "ops": flag(True)}
    found = view(member=Discovered(A, health="critical"), flags=pulled_in)
    assert found.held_by == ["health"]
    assert found.state == "down"
    found = view(member=Discovered(A, maintenance=True), flags=pulled_in)
    assert found.state == "down"


def test_new_members_wait_for_pull_in_when_the_group_says_so() -> None:
    group = {**GROUP, "new_members": "wait_for_pull_in"}
    waiting = view(group=group)
    assert waiting.held_by == ["pull"]
    assert waiting.state == "drain"
    assert waiting.flags["pull"]["value"] is False
    assert waiting.flags["pull"]["why"]  # the UI says why it waits
    assert view(group=group, flags={"pull": flag(True)}).state == "up"
    # the default takes traffic at once
    assert view(group={**GROUP, "new_members": "take_traffic"}).state == "up"


def test_warning_is_up_only_with_passing_or_warning_policy() -> None:
    warning = Discovered(A, health="warning", health_detail="disk 91%")
    strict = view(member=warning)
    assert strict.held_by == ["health"]
    assert strict.flags["health"] == {"value": False, "status": "warning", "who": "static",
                                      "at": None, "why": "disk 91%"}
    lenient = view(group={**GROUP, "health_policy": "passing_or_warning"}, member=warning)
    assert lenient.state == "up"
    critical = view(group={**GROUP, "health_policy": "passing_or_warning"},
                    member=Discovered(A, health="critical"))
    assert critical.state == "down"


def test_consul_weight_zero_holds_the_member_out() -> None:
    found = view(member=Discovered(A, weight=0, source="consul"))
    assert found.held_by == ["weight"]
    assert found.state != "up"
    assert found.weight == 0

