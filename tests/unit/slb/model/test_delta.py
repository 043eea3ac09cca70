"""``slb.model.delta``: which changes a node accepts, and why it refuses the others."""

from __future__ import annotations

from typing import Any

import pytest

from slb.model import (
    Config,
    SnapshotRejected,
    apply_delta,
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
    new, group = apply_delta(old, "web", parse_delta(delta(
        upsert=[{"address": "10.0.0.2:80", "weight": 5}, {"address": "10.0.0.3:80"}],
        remove=["10.0.0.1:80"])))
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
    error = rejected(apply_delta, config(), group, parse_delta(delta(**fields)))
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
