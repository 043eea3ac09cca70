"""``slb.model.delta``: which changes a node accepts (snapshots, pool deltas and batches of them),
and why it refuses the others."""

from __future__ import annotations

import json
from typing import Any

import pytest

from slb.model import (
    Config,
    NotJson,
    PoolBatch,
    SnapshotRejected,
    apply_batch,
    parse_batch,
    parse_config,
    parse_delta,
    parse_snapshot,
)


def config(version: int = 3) -> Config:
    return parse_config({"version": version, "groups": [
        {"name": "web", "members": [{"address": "10.0.0.1:80"}, {"address": "10.0.0.2:80"}]},
        {"name": "api"}]})


def delta(**fields: Any) -> dict[str, Any]:
    return {"base_version": 3, "version": 4, **fields}


def rejected(call: Any, *args: Any) -> SnapshotRejected:
    with pytest.raises(SnapshotRejected) as caught:
        call(*args)
    return caught.value


def test_a_delta_changes_one_group_and_shares_the_rest() -> None:
    old = config()
    new, (group,) = apply_batch(old, PoolBatch.of("web", parse_delta(delta(
        upsert=[{"address": "10.0.0.2:80", "weight": 5}, {"address": "10.0.0.3:80"}],
        remove=["10.0.0.1:80"]))))
    assert new.version == 4
    assert [(m.address, m.weight) for m in group.members] == [("10.0.0.2:80", 5),
                                                              ("10.0.0.3:80", 1)]
    assert new.groups[0] is group and new.groups[1] is old.groups[1]
    assert new.content_hash() == parse_config(new.to_json()).content_hash()


@pytest.mark.parametrize(("fields", "group", "reason", "status"), [
    ({"base_version": 2}, "web", "base_mismatch", 409),
    ({"version": 3}, "web", "stale", 409),
    ({}, "nope", "not_found", 404),
    ({"remove": ["10.0.0.9:80"]}, "web", "invalid", 400),
])
def test_a_delta_that_does_not_fit_is_refused(fields: dict[str, Any], group: str, reason: str,
                                               status: int) -> None:
    error = rejected(apply_batch, config(), PoolBatch.of(group, parse_delta(delta(**fields))))
    assert (error.reason, error.status) == (reason, status)


def test_a_malformed_delta_lists_every_error_with_its_location() -> None:
    error = rejected(parse_delta, {"base_version": -1, "version": 1,
                                   "upsert": [{"address": "nowhere"}], "extra": 1})
    assert error.reason == "invalid"
    assert error.errors == ["base_version: Input should be greater than or equal to 0",
                            "upsert[0].address: expected host:port", "extra: unknown field"]
    assert rejected(parse_delta, []).reason == "invalid"


def test_a_member_twice_in_one_delta_is_refused() -> None:
    error = rejected(parse_delta, delta(upsert=[{"address": "10.0.0.1:80"}],
                                        remove=["10.0.0.1:80"]))
    assert error.errors == ["10.0.0.1:80: listed twice"]


def test_a_snapshot_must_be_newer_and_valid() -> None:
    applied = config()
    assert parse_snapshot({"version": 4}, applied).version == 4
    stale = rejected(parse_snapshot, {"version": 3}, applied)
    assert (stale.reason, stale.to_json()["applied_version"]) == ("stale", 3)
    invalid = rejected(parse_snapshot, {"version": 5, "groups": [{"name": ""}]}, applied)
    assert invalid.reason == "invalid" and invalid.errors[0].startswith("groups[0].name:")


def batch(*groups: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"base_version": 3, "version": 4, "groups": list(groups), **fields}


def test_a_batch_changes_every_group_it_names_in_one_version_step() -> None:
    old = parse_config({"version": 3, "groups": [
        {"name": f"g{i}", "members": [{"address": "10.0.0.1:80"}, {"address": "10.0.0.2:80"}]}
        for i in range(5)]})
    old.content_hash()  # known: the batch updates the groups' combination, not recomputes it
    new, groups = apply_batch(old, parse_batch(batch(
        {"name": "g3", "remove": ["10.0.0.2:80"]},
        {"name": "g1", "upsert": [{"address": "10.0.0.2:80", "state": "down"}]})))
    assert new.version == 4 and [g.name for g in groups] == ["g3", "g1"]
    assert [m.address for m in new.groups[3].members] == ["10.0.0.1:80"]
    assert new.groups[1].members[1].state == "down"
    assert all(new.groups[i] is old.groups[i] for i in (0, 2, 4))
    assert new.content_hash() == parse_config(new.to_json()).content_hash()
    assert [new.group_position(f"g{i}") for i in range(5)] == list(range(5))


def test_an_empty_batch_only_moves_the_version() -> None:
    new, groups = apply_batch(config(), parse_batch(batch()))
    assert (new.version, groups, new.groups) == (4, [], config().groups)


@pytest.mark.parametrize(("fields", "reason", "status", "errors"), [
    ({"base_version": 2}, "base_mismatch", 409, []),
    ({"version": 3}, "stale", 409, []),
    ({"groups": [{"name": "web", "remove": ["10.0.0.1:80"]}, {"name": "nope"},
                 {"name": "api", "remove": ["10.0.0.9:80"]}]}, "not_found", 404,
     ["groups[1] (nope): no group named 'nope'",
      "groups[2] (api): remove: 10.0.0.9:80 is not a member"]),
    ({"groups": [{"name": "web", "remove": ["10.0.0.1:80"]},
                 {"name": "api", "remove": ["10.0.0.9:80"]}]}, "invalid", 400,
     ["groups[1] (api): remove: 10.0.0.9:80 is not a member"]),
])
def test_a_batch_with_one_bad_entry_applies_nothing_and_names_it(
        fields: dict[str, Any], reason: str, status: int, errors: list[str]) -> None:
    error = rejected(apply_batch, config(), parse_batch(batch(**fields)))
    assert (error.reason, error.status, error.errors) == (reason, status, errors)
    assert "nothing was applied" in error.message or reason in ("base_mismatch", "stale")


def test_a_malformed_batch_lists_every_problem_by_entry() -> None:
    error = rejected(parse_batch, batch({"name": "web", "upsert": [{"address": "nowhere"}]},
                                        {"upsert": []}))
    assert error.errors == ["groups[0].upsert[0].address: expected host:port",
                            "groups[1].name: required field is missing"]
    doubled = rejected(parse_batch, batch(
        {"name": "web", "upsert": [{"address": "10.0.0.1:80"}], "remove": ["10.0.0.1:80"]},
        {"name": "web"}))
    assert doubled.errors == ["groups[0] (web): 10.0.0.1:80: listed twice",
                              "groups[1] (web): the group is listed twice"]
    assert rejected(parse_batch, [{"name": "web"}]).message == \
        "a pool delta batch must be a JSON object"
    assert rejected(parse_batch, {"base_version": 3, "version": 4}).errors == [
        "groups: required field is missing"]


def test_an_old_version_of_the_same_store_is_refused_before_it_is_validated() -> None:
    applied = parse_config({"version": 3, "store": "s1"})
    # (a big snapshot sent twice: the second is not validated only to be refused)
    early = rejected(parse_snapshot, {"version": 3, "store": "s1", "groups": "not checked"},
                     applied)
    assert (early.reason, early.to_json()["applied_version"]) == ("stale", 3)
    other = rejected(parse_snapshot, {"version": 2, "store": "s2", "groups": "checked"}, applied)
    assert other.reason == "invalid"  # another store's versions are not comparable


def test_a_batch_is_validated_from_the_bodys_bytes_as_from_parsed_json() -> None:
    body = batch({"name": "web", "upsert": [{"address": "10.0.0.1:80", "state": "down"}]})
    assert parse_batch(json.dumps(body).encode()) == parse_batch(body)
    with pytest.raises(NotJson):
        parse_batch(b'{"base_version": 3,')
    assert rejected(parse_batch, b"[1]").message == "a pool delta batch must be a JSON object"
    bad = batch({"name": "web", "upsert": [{"address": "nowhere"}]}, {"upsert": []})
    assert rejected(parse_batch, json.dumps(bad).encode()).errors == [
        "groups[0].upsert[0].address: expected host:port",
        "groups[1].name: required field is missing"]


def test_an_upsert_equal_to_the_member_there_changes_nothing() -> None:
    old = config()
    new, groups = apply_batch(old, parse_batch(batch(
        {"name": "web", "upsert": [{"address": "10.0.0.2:80", "weight": 1}]},  # as it is
        {"name": "api", "upsert": [{"address": "10.0.0.9:80"}]})))
    assert [g.name for g in groups] == ["api"] and new.version == 4
    assert new.groups[0] is old.groups[0]  # the group, its digest and its pool are kept
    assert new.content_hash() == parse_config(new.to_json()).content_hash()
    again, changed = apply_batch(new, PoolBatch.of("web", parse_delta(delta(
        base_version=4, version=5, upsert=[{"address": "10.0.0.1:80"}]))))
    assert changed == [] and again.groups[0] is new.groups[0] and again.version == 5


def test_members_keep_their_place_and_new_ones_go_last() -> None:
    new, [web] = apply_batch(config(), parse_batch(batch({"name": "web", "upsert": [
        {"address": "10.0.0.3:80"}, {"address": "10.0.0.1:80", "weight": 5}],
        "remove": ["10.0.0.2:80"]})))
    assert [(m.address, m.weight) for m in web.members] == [("10.0.0.1:80", 5),
                                                            ("10.0.0.3:80", 1)]
    _, [web] = apply_batch(new, parse_batch(batch(  # one upsert: found by a scan, not a map
        {"name": "web", "upsert": [{"address": "10.0.0.3:80", "state": "down"}]},
        base_version=4, version=5)))
    assert [(m.address, m.state) for m in web.members] == [("10.0.0.1:80", "up"),
                                                           ("10.0.0.3:80", "down")]
