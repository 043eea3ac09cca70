"""The push planner (admin/push/plan.py): which pool delta batch takes a node from the snapshot
it has to the desired one, and when only a full snapshot will do."""

from __future__ import annotations

from typing import Any

from admin.push.plan import plan
from slb.model import Config, parse_config
from slb.model.identity import GROUP_DIGEST, cache_of

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


def test_a_member_change_of_a_hinted_group_is_a_batch_to_the_desired_version() -> None:
    known = snapshot(1, {"web": [{"address": A}, {"address": B}]})
    desired = snapshot(2, {"web": [{"address": A}, {"address": B, "state": "drain"}]})
    batch = plan(known, 1, desired, frozenset({"web"}))
    assert batch is not None
    assert batch.body() == {"base_version": 1, "version": 2, "groups": [
        {"name": "web", "remove": [], "upsert": [{"address": B, "weight": 1, "state": "drain"}]}]}


def test_many_changed_groups_in_one_version_step_are_one_batch() -> None:
    names = [f"g{i:03d}" for i in range(150)]
    known = snapshot(1, {name: [{"address": A}, {"address": B}] for name in names})
    flipped = set(names[::3])
    desired = snapshot(2, {name: [{"address": A}] if name in flipped
                           else [{"address": A}, {"address": B}] for name in names})
    batch = plan(known, 1, desired, frozenset(flipped))
    assert batch is not None and (batch.base_version, batch.version) == (1, 2)
    assert batch.groups == sorted(flipped)
    assert all(e.remove == [B] and e.upsert == [] for e in batch.edits)


def test_hinted_groups_are_compared_without_digesting_the_desired_ones() -> None:
    """A hinted group rebuilt as it was is left out of the batch; the desired groups'
    digests wait for the nodes' answers (made after the push)."""
    known = snapshot(1, {"web": [{"address": A}], "api": [{"address": B}]})
    known.content_hash()
    desired = snapshot(2, {"web": [{"address": A}], "api": [{"address": C}]})
    batch = plan(known, 1, desired, frozenset({"web", "api"}))
    assert batch is not None and batch.groups == ["api"]
    assert [GROUP_DIGEST in cache_of(group) for group in desired.groups] == [False, False]


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


def test_only_the_version_moving_is_an_empty_batch_and_a_node_not_behind_gets_none() -> None:
    known = snapshot(1, {"web": [{"address": A}]})
    desired = snapshot(2, {"web": [{"address": A}]})
    batch = plan(known, 1, desired, frozenset())
    assert batch is not None and (batch.edits, batch.version) == ([], 2)
    assert plan(known, 2, desired, frozenset()) is None


def test_names_needing_escapes_travel_in_the_body() -> None:
    known = snapshot(1, {"a b": [{"address": A}]})
    desired = snapshot(2, {"a b": [{"address": B}]})
    batch = plan(known, 1, desired, frozenset({"a b"}))
    assert batch is not None and batch.groups == ["a b"]
