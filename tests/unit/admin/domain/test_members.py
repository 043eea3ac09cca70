"""Effective member state (every flag must allow traffic), snapshots built from it, content
validation and the diff of two versions."""

from __future__ import annotations

from typing import Any

import pytest

from admin.domain.members import Discovered, MemberView, effective_members, member_ip
from admin.domain.snapshots import build_snapshot, check_references, diff, validate_content
from admin.domain.store import Flag
from slb.model import ConfigErrors

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


# -- snapshots and validation ----------------------------------------------------------------


def content(**changes: Any) -> dict[str, list[dict[str, Any]]]:
    base: dict[str, list[dict[str, Any]]] = {
        "cluster": [{"name": "c1"}, {"name": "c2"}],
        "virtual_server": [
            {"name": "site", "cluster": "c1", "listen": "127.0.0.1:8080",
             "domains": ["site.test"], "default": True},
            {"name": "other", "cluster": "c2", "listen": "127.0.0.1:8081", "domains": []}],
        "route": [{"name": "root", "virtual_server": "site", "path": "/", "group": "web"},
                  {"name": "api", "virtual_server": "site", "path": "/api/", "priority": 5,
                   "group": "api"},
                  {"name": "o", "virtual_server": "other", "path": "/", "group": "unused"}],
        "group": [{"name": "web", "algorithm": "least_conn", "members": [{"address": A}],
                   "health_policy": "passing", "new_members": "take_traffic"},
                  {"name": "api", "members": [{"address": B}]},
                  {"name": "unused", "members": []}],
    }
    base.update(changes)
    return base


def test_snapshot_of_a_cluster_carries_its_routes_groups_and_effective_states() -> None:
    data = content()
    members = {
        "web": effective_members(data["group"][0], [Discovered(A)], {A: {"pull": flag(False)}},
                                 {}),
        "api": effective_members(data["group"][1], [Discovered(B, health="critical")], {}, {}),
    }
    config = build_snapshot(data, "c1", 7, members)
    assert config.version == 7
    assert [v.name for v in config.virtual_servers] == ["site"]
    assert [(r.path, r.group, r.priority) for r in config.virtual_servers[0].routes] == [
        ("/", "web", 0), ("/api/", "api", 5)]
    groups = {g.name: g for g in config.groups}
    assert set(groups) == {"web", "api"}  # "unused" belongs to the other cluster
    assert groups["web"].algorithm == "least_conn"
    assert [(m.address, m.state) for m in groups["web"].members] == [(A, "drain")]
    assert [(m.address, m.state) for m in groups["api"].members] == [(B, "down")]


def test_validation_reports_unknown_references_with_their_object() -> None:
    data = content(route=[{"name": "root", "virtual_server": "site", "path": "/",
                           "group": "gone"},
                          {"name": "lost", "virtual_server": "nowhere", "path": "/",
                           "group": "web"}])
    assert check_references(data) == [
        "route/lost.virtual_server: no virtual server named 'nowhere'",
        "route/root.group: no group named 'gone'",
    ]
    assert validate_content(data, {}) == check_references(data)


def test_validation_lists_every_data_plane_error_per_cluster() -> None:
    servers = content()["virtual_server"] + [
        {"name": "site2", "cluster": "c1", "listen": "127.0.0.1:8080", "domains": [],
         "default": True}]
    routes = [*content()["route"],
              {"name": "bad", "virtual_server": "site2", "path": "nope", "group": "web"}]
    errors = validate_content(content(virtual_server=servers, route=routes), {})
    assert any(e.startswith("cluster/c1: virtual_servers[1].default:") and "already the "
               "default" in e for e in errors), errors
    assert any(e.startswith("cluster/c1: virtual_servers[1].routes[0].path:") for e in errors)
    assert not any(e.startswith("cluster/c2") for e in errors)
    assert validate_content(content(), {}) == []


def test_invalid_snapshot_raises_with_locations() -> None:
    servers = [{"name": "site", "cluster": "c1", "listen": "nowhere", "domains": []}]
    with pytest.raises(ConfigErrors) as caught:
        build_snapshot(content(virtual_server=servers), "c1", 1, {})
    assert any(line.startswith("virtual_servers[0].listen") for line in caught.value.lines())


# -- diff -------------------------------------------------------------------------------------


def test_diff_lists_added_removed_and_changed_objects_with_unified_text() -> None:
    old = content()
    new = content(
        group=[{**old["group"][0], "algorithm": "wrr"}, old["group"][2],
               {"name": "search", "members": []}])
    changes = {(c["kind"], c["name"]): c for c in diff(old, new)["changes"]}
    assert {k: c["change"] for k, c in changes.items()} == {
        ("group", "web"): "changed", ("group", "api"): "removed",
        ("group", "search"): "added"}
    text = changes[("group", "web")]["diff"].splitlines()
    assert text[:2] == ["--- group/web", "+++ group/web"]
    assert '-  "algorithm": "least_conn",' in text
    assert '+  "algorithm": "wrr",' in text
    removed = changes[("group", "api")]["diff"]
    assert f'-      "address": "{B}"' in removed.splitlines()
    assert all(line.startswith("+") for line in
               changes[("group", "search")]["diff"].splitlines()[3:])


def test_diff_of_equal_contents_is_empty() -> None:
    assert diff(content(), content()) == {"changes": []}
    assert [c["kind"] for c in diff({}, {"cluster": [{"name": "c"}]})["changes"]] == [
        "cluster"]
