"""Snapshots built from a content and its members' effective state, content validation
(references, the data plane's own schema) and the diff of two versions (domain/snapshots.py)."""

from __future__ import annotations

from typing import Any

import pytest

from admin.domain.members import Discovered, effective_members
from admin.domain.snapshots import (
    GroupReuse,
    build_snapshot,
    check_references,
    diff,
    validate_content,
)
from admin.domain.store import Flag
from slb.model import ConfigErrors

A = "10.0.0.1:80"
B = "10.0.0.2:80"


def flag(value: bool, who: str = "otto", why: str = "deploy") -> Flag:
    return Flag(value, who, 1700000000.0, why)


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


def test_a_clusters_access_log_reaches_its_snapshot_and_only_its_own() -> None:
    access_log = {"enabled": True, "path": "/var/log/slb/access.log", "format": "json"}
    data = content(cluster=[{"name": "c1", "access_log": access_log}, {"name": "c2"}])
    members: dict[str, Any] = {}
    c1 = build_snapshot(data, "c1", 1, members)
    assert c1.access_log.model_dump() == access_log
    assert not build_snapshot(data, "c2", 1, members).access_log.enabled


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


def test_a_build_reuses_the_unchanged_groups_of_the_last_and_equals_a_build_from_scratch(
        ) -> None:
    data = content(group=[*content()["group"][:2],
                          {"name": "shop", "members": [{"address": "10.0.0.3:80"}]}],
                   route=[*content()["route"][:2],
                          {"name": "shop", "virtual_server": "site", "path": "/shop/",
                           "group": "shop"}])
    reuse = GroupReuse()
    first = build_snapshot(data, "c1", 1, {}, reuse=reuse)
    # static members come in through ``members``: a weight edit changes one group's form
    views = {"api": effective_members(data["group"][1], [Discovered(B, weight=5)], {}, {})}
    second = build_snapshot(data, "c1", 2, views, reuse=GroupReuse(reuse))
    old, new = ({g.name: g for g in c.groups} for c in (first, second))
    assert new["web"] is old["web"] and new["shop"] is old["shop"]  # shared, not rebuilt
    assert [(m.address, m.weight) for m in new["api"].members] == [(B, 5)]
    scratch = build_snapshot(data, "c1", 2, views)
    assert second == scratch and second.content_hash() == scratch.content_hash()
    # groups built anew with equal settings share their settings' models
    assert scratch.groups[1].timeouts is scratch.groups[2].timeouts
    # the rest too, while it does not change: validated once
    assert second.virtual_servers[0] is first.virtual_servers[0]
    moved = [*data["route"][:2], {**data["route"][2], "path": "/store/"}]
    third = build_snapshot(content(group=data["group"], route=moved), "c1", 3, views,
                           reuse=GroupReuse(reuse))
    assert [r.path for r in third.virtual_servers[0].routes][-1] == "/store/"


def test_an_invalid_group_is_reported_in_place_even_when_others_are_reused() -> None:
    reuse = GroupReuse()
    build_snapshot(content(), "c1", 1, {}, reuse=reuse)
    twice = [{"name": "web", "members": [{"address": A}, {"address": A}]},
             *content()["group"][1:]]
    views = {"web": effective_members(twice[0], [Discovered(A), Discovered(A)], {}, {})}
    with pytest.raises(ConfigErrors) as caught:
        build_snapshot(content(group=twice), "c1", 2, views, reuse=GroupReuse(reuse))
    assert [line for line in caught.value.lines() if line.startswith("groups[0]")] == [
        f"groups[0]: member {A} is listed twice"], caught.value.lines()


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
