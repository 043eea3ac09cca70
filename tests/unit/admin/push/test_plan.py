"""The push planner (admin/push/plan.py): which pool deltas take a node from the snapshot it
has to the desired one, and when only a full snapshot will do."""

from __future__ import annotations

from typing import Any

from admin.push.plan import MAX_DELTA_GROUPS, plan
from slb.model import Config, parse_config

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


def snapshot(version: int, groups: dict[str, list[dict[str, Any]]], **settings: Any
             ) -> Config:
    return parse_config({
        "version": version,
        "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080", "default": True,
                             "routes": [{"path": f"/{g}", "group": g} for g in groups]}],
        "groups": [{"name": name, "members": members, **settings.get(name, {})}
                   for name, members in groups.items()],
    })


def test_a_member_change_of_a_hinted_group_is_one_patch_to_the_desired_version() -> None:
    known = snapshot(1, {"web": [{"address": A}, {"address": B}]})
    desired = snapshot(2, {"web": [{"address": A}, {"address": B, "state": "drain"}]})
    [patch] = plan(known, 1, desired, frozenset({"web"})) or []
    assert (patch.group, patch.base_version, patch.version) == ("web", 1, 2)
    assert patch.body() == {"base_version": 1, "version": 2, "remove": [],
                            "upsert": [{"address": B, "weight": 1, "state": "drain"}]}


def test_two_changed_groups_chain_their_versions_when_the_versions_are_there() -> None:
    known = snapshot(1, {"web": [{"address": A}], "api": [{"address": B}]})
    desired = snapshot(3, {"web": [{"address": A}, {"address": C}], "api": []})
    patches = plan(known, 1, desired, frozenset({"web", "api"}))
    assert patches is not None
    assert [(p.group, p.base_version, p.version) for p in patches] == [("web", 1, 2),
                                                                      ("api", 2, 3)]
    assert patches[1].remove == [B]


def test_two_changed_groups_in_one_version_step_go_as_a_full_snapshot() -> None:
    known = snapshot(1, {"web": [{"address": A}], "api": [{"address": B}]})
    desired = snapshot(2, {"web": [], "api": []})
    assert plan(known, 1, desired, frozenset({"web", "api"})) is None


def test_a_change_outside_the_hint_is_found_by_digest_and_sends_everything() -> None:
    known = snapshot(1, {"web": [{"address": A}], "api": [{"address": B}]})
    desired = snapshot(3, {"web": [{"address": C}], "api": [{"address": C}]})
    assert plan(known, 1, desired, frozenset({"web"})) is None


def test_a_group_setting_change_is_not_a_member_delta() -> None:
    known = snapshot(1, {"web": [{"address": A}]})
    desired = snapshot(2, {"web": [{"address": A}]}, web={"algorithm": "least_conn"})
    assert plan(known, 1, desired, frozenset({"web"})) is None


def test_a_member_order_the_node_cannot_reach_sends_everything() -> None:
    known = snapshot(1, {"web": [{"address": A}, {"address": B}]})
    desired = snapshot(2, {"web": [{"address": B}, {"address": A}]})
    assert plan(known, 1, desired, frozenset({"web"})) is None


def test_a_changed_route_sends_everything() -> None:
    known = snapshot(1, {"web": [{"address": A}]})
    desired = parse_config({**snapshot(2, {"web": [{"address": A}]}).to_json(),
                            "virtual_servers": []})
    assert plan(known, 1, desired, frozenset({"web"})) is None


def test_only_the_version_moving_is_an_empty_delta_and_a_node_not_behind_gets_none() -> None:
    known = snapshot(1, {"web": [{"address": A}]})
    desired = snapshot(2, {"web": [{"address": A}]})
    [patch] = plan(known, 1, desired, frozenset()) or []
    assert (patch.group, patch.upsert, patch.remove, patch.version) == ("web", [], [], 2)
    assert plan(known, 2, desired, frozenset()) is None


def test_names_needing_escapes_and_too_many_groups_go_whole() -> None:
    known = snapshot(1, {"a b": [{"address": A}]})
    desired = snapshot(2, {"a b": [{"address": B}]})
    assert plan(known, 1, desired, frozenset({"a b"})) is None
    many = {f"g{i}": [{"address": A}] for i in range(MAX_DELTA_GROUPS + 1)}
    changed = {name: [{"address": B}] for name in many}
    assert plan(snapshot(1, many), 1, snapshot(100, changed), frozenset(many)) is None
