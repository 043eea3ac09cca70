"""The admin's SQLite store: schema and migrations, transactions with their audit rows,
optimistic locking, versions, push versions, audit filters, persistence across reopening."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin.domain import store as store_module
from admin.domain.store import Conflict, NotFound, Store


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "var" / "admin.db")


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


def tables(path: str) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def user_version(path: str) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


GROUP = {"name": "web", "members": [{"address": "10.0.0.1:80"}]}


# -- schema ------------------------------------------------------------------------------------


def test_new_store_creates_its_directory_schema_and_user_version(db_path: str) -> None:
    opened = Store(db_path)
    opened.close()
    assert Path(db_path).exists()
    assert {"objects", "member_flags", "server_flags", "discovered", "versions", "meta",
            "audit"} <= tables(db_path)
    assert user_version(db_path) == len(store_module.MIGRATIONS)


def test_reopening_applies_only_new_migrations_and_keeps_data(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first = Store(db_path)
    first.create("group", "web", GROUP, "ada", "first")
    first.close()
    # a later release adds a migration: only it runs (re-running the first would fail, its
    # CREATE TABLE statements exist already)
    migrations = (*store_module.MIGRATIONS, "CREATE TABLE later_table (id TEXT PRIMARY KEY)")
    monkeypatch.setattr(store_module, "MIGRATIONS", migrations)
    second = Store(db_path)
    try:
        assert second.get("group", "web").body == GROUP
    finally:
        second.close()
    assert user_version(db_path) == len(migrations)
    assert "later_table" in tables(db_path)


# -- objects, audit rows and optimistic locking ----------------------------------------------


def test_create_stores_the_object_and_its_audit_row(store: Store) -> None:
    row = store.create("group", "web", GROUP, "ada", "new shop pool")
    assert (row.row_version, row.updated_by) == (1, "ada")
    assert store.get("group", "web").body == GROUP
    [entry] = store.audit()
    assert entry["who"] == "ada"
    assert entry["action"] == "create group"
    assert entry["target"] == "group/web"
    assert entry["reason"] == "new shop pool"
    assert entry["before"] is None
    assert entry["after"] == GROUP
    assert entry["result"] == "ok"


def test_update_bumps_row_version_and_audits_before_and_after(store: Store) -> None:
    store.create("group", "web", GROUP, "ada", "new")
    changed = {**GROUP, "algorithm": "least_conn"}
    row = store.update("group", "web", changed, 1, "bob", "slow backends")
    assert row.row_version == 2
    assert store.get("group", "web").row_version == 2
    assert store.get("group", "web").updated_by == "bob"
    entry = store.audit()[0]
    assert (entry["action"], entry["who"], entry["reason"]) == ("update group", "bob",
                                                                "slow backends")
    assert entry["before"] == GROUP
    assert entry["after"] == changed


def test_update_with_stale_row_version_conflicts_and_changes_nothing(store: Store) -> None:
    store.create("group", "web", GROUP, "ada", "new")
    store.update("group", "web", {**GROUP, "algorithm": "random2"}, 1, "ada", "first edit")
    audit_before = store.audit()
    with pytest.raises(Conflict, match="row_version 2, not 1"):
        store.update("group", "web", {**GROUP, "algorithm": "least_conn"}, 1, "bob", "stale")
    row = store.get("group", "web")
    assert row.row_version == 2
    assert row.body["algorithm"] == "random2"
    assert store.audit() == audit_before


def test_delete_with_stale_row_version_conflicts_and_current_one_deletes(store: Store) -> None:
    store.create("group", "web", GROUP, "ada", "new")
    store.update("group", "web", GROUP, 1, "ada", "touch")
    with pytest.raises(Conflict):
        store.delete("group", "web", 1, "bob", "stale delete")
    assert store.find("group", "web") is not None
    store.delete("group", "web", 2, "bob", "retired")
    assert store.find("group", "web") is None
    entry = store.audit()[0]
    assert (entry["action"], entry["target"], entry["before"], entry["after"]) == (
        "delete group", "group/web", GROUP, None)


def test_create_duplicate_conflicts_and_keeps_the_original(store: Store) -> None:
    store.create("group", "web", GROUP, "ada", "new")
    with pytest.raises(Conflict, match="already exists"):
        store.create("group", "web", {"name": "web"}, "bob", "again")
    assert store.get("group", "web").body == GROUP
    assert len(store.audit()) == 1
    # the same name in another kind is another object
    store.create("cluster", "web", {"name": "web"}, "ada", "cluster of that name")


def test_missing_object_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get("group", "nope")
    with pytest.raises(NotFound):
        store.update("group", "nope", GROUP, 1, "ada", "x")
    with pytest.raises(NotFound):
        store.delete("group", "nope", None, "ada", "x")


def test_flag_batch_failing_part_way_leaves_no_flags_and_no_audit_rows(store: Store) -> None:
    changes = [("web", "10.0.0.1:80", "pull", False),
               ("web", ["not", "bindable"], "pull", False)]  # the second row cannot be stored
    with pytest.raises(sqlite3.Error):
        store.set_member_flags(changes, "otto", "deploy", "member pull-out")  # type: ignore[arg-type]
    assert store.member_flags() == {}
    assert store.audit() == []


def test_member_flags_are_kept_with_who_when_why_and_audited(store: Store) -> None:
    before = time.time()
    store.set_member_flags([("web", "10.0.0.1:80", "pull", False)], "otto", "deploy 42",
                           "member pull-out")
    store.set_member_flags([("web", "10.0.0.1:80", "pull", True)], "olga", "deployed",
                           "member pull-in")
    flag = store.member_flags("web")[("web", "10.0.0.1:80")]["pull"]
    assert (flag.value, flag.who, flag.why) == (True, "olga", "deployed")
    assert before <= flag.at <= time.time()
    assert store.member_flags("other") == {}
    pull_in, pull_out = store.audit(target="member/web/")
    assert pull_out["before"] is None
    assert pull_out["after"] == {"value": False, "who": "otto", "why": "deploy 42"}
    assert pull_in["before"] == {"value": False, "who": "otto", "why": "deploy 42"}
    assert pull_in["after"] == {"value": True, "who": "olga", "why": "deployed"}


def test_server_flag_is_kept_and_audited(store: Store) -> None:
    store.set_server_flag("10.0.0.1", False, "otto", "kernel patch")
    flag = store.server_flags()["10.0.0.1"]
    assert (flag.value, flag.who, flag.why) == (False, "otto", "kernel patch")
    entry = store.audit()[0]
    assert (entry["action"], entry["target"], entry["reason"]) == (
        "server down", "server/10.0.0.1", "kernel patch")


# -- versions ----------------------------------------------------------------------------------


def test_versions_are_numbered_upwards_and_the_last_is_active(store: Store) -> None:
    assert store.active_version() is None
    first = store.add_version({"group": [GROUP]}, "h1", "ada", "first")
    second = store.add_version({"group": []}, "h2", "ada", "second")
    third = store.add_version({"group": [GROUP]}, "h1", "ada", "back", source_version=first)
    assert (first, second, third) == (1, 2, 3)
    assert store.active_version() == 3
    assert [v["version"] for v in store.versions()] == [3, 2, 1]
    assert store.version(3)["source_version"] == 1
    assert store.version(1)["content"] == {"group": [GROUP]}
    with pytest.raises(NotFound):
        store.version(9)
    actions = [(e["action"], e["target"]) for e in store.audit(target="version/")]
    assert actions == [("rollback", "version/3"), ("activate", "version/2"),
                       ("activate", "version/1")]


def test_push_versions_only_grow_across_a_reopen(db_path: str) -> None:
    first = Store(db_path)
    seen = [first.next_push_version(), first.next_push_version(3), first.next_push_version()]
    first.close()
    second = Store(db_path)
    try:
        seen.append(second.next_push_version())
    finally:
        second.close()
    assert seen == sorted(set(seen))
    assert seen[1] - seen[0] == 3  # three versions reserved for a three-group delta chain


def test_discovered_members_survive_a_reopen(db_path: str) -> None:
    first = Store(db_path)
    members = [{"address": "10.0.0.1:80", "health": "critical", "source": "consul"}]
    first.save_discovered("web", members)
    first.save_discovered("web", [*members, {"address": "10.0.0.2:80"}])
    first.close()
    second = Store(db_path)
    try:
        assert second.discovered() == {"web": [*members, {"address": "10.0.0.2:80"}]}
    finally:
        second.close()


# -- audit filters -----------------------------------------------------------------------------


def test_audit_filters_by_target_prefix_who_and_time(store: Store) -> None:
    store.create("group", "web", GROUP, "ada", "a")
    store.create("group", "web2", {"name": "web2"}, "bob", "b")
    store.create("cluster", "c1", {"name": "c1"}, "ada", "c")
    middle = time.time()
    time.sleep(0.01)
    store.set_server_flag("10.0.0.1", False, "otto", "d")
    assert [e["target"] for e in store.audit(target="group/")] == ["group/web2", "group/web"]
    assert [e["target"] for e in store.audit(target="group/web2")] == ["group/web2"]
    assert [e["reason"] for e in store.audit(who="ada")] == ["c", "a"]
    assert [e["reason"] for e in store.audit(since=middle)] == ["d"]
    assert [e["reason"] for e in store.audit(until=middle)] == ["c", "b", "a"]
    assert [e["reason"] for e in store.audit(who="ada", until=middle, target="cluster/")] == [
        "c"]
    assert len(store.audit(limit=2)) == 2


def test_audit_target_filter_matches_names_literally(store: Store) -> None:
    # names are case-sensitive and may hold '_' and '-': a filter for one group must not
    # return another group's rows
    for name in ("shop_api", "shop-api", "Shop_api"):
        store.create("group", name, {"name": name}, "ada", name)
    assert [e["target"] for e in store.audit(target="group/shop_api")] == ["group/shop_api"]
    assert [e["target"] for e in store.audit(target="group/Shop")] == ["group/Shop_api"]
