"""The admin's store, on SQLite and on PostgreSQL (each test runs on both): schema and
migrations, transactions with their audit rows, optimistic locking (also between two admins
writing at once), versions, push versions, audit filters, persistence across reopening."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import StatementError

from admin.domain.migrate import (
    HEAD,
    StoreTooNew,
    code_revision,
    open_engine,
    store_revision,
)
from admin.domain.store import Conflict, NotFound, Store


@pytest.fixture
def db_path(store_target: str) -> str:
    return store_target


@pytest.fixture
def store(db_path: str) -> Iterator[Store]:
    opened = Store(db_path)
    yield opened
    opened.close()


def tables(target: str) -> set[str]:
    engine = open_engine(target)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def revision(target: str) -> str | None:
    engine = open_engine(target)
    try:
        with engine.connect() as conn:
            return store_revision(conn)
    finally:
        engine.dispose()


GROUP = {"name": "web", "members": [{"address": "10.0.0.1:80"}]}


# -- schema ------------------------------------------------------------------------------------


def test_new_store_has_every_table_at_the_code_revision(db_path: str) -> None:
    Store(db_path).close()
    assert {"objects", "member_flags", "server_flags", "discovered", "versions", "meta",
            "audit", "sessions"} <= tables(db_path)
    assert revision(db_path) == code_revision()


def test_reopening_keeps_the_data_and_the_revision(db_path: str) -> None:
    first = Store(db_path)
    first.create("group", "web", GROUP, "ada", "first")
    first.close()
    second = Store(db_path)
    try:
        assert second.get("group", "web").body == GROUP
        assert len(second.audit()) == 1  # the migration did not run again over the data
    finally:
        second.close()
    assert revision(db_path) == code_revision()


def test_head_is_the_newest_migration() -> None:
    # a store at HEAD is opened without Alembic: HEAD must be the newest script
    assert code_revision() == HEAD


def test_reopening_a_current_store_does_not_load_alembic(db_path: str) -> None:
    Store(db_path).close()
    script = ("import sys; from admin.domain.store import Store; Store(sys.argv[1]).close(); "
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'mako'}))")
    opened = subprocess.run([sys.executable, "-c", script, db_path], capture_output=True,
                            text=True, timeout=60, check=True)
    assert opened.stdout.strip() == "[]", opened.stderr


def test_store_migrated_by_a_newer_admin_is_refused_with_a_clear_error(db_path: str) -> None:
    Store(db_path).close()
    engine = open_engine(db_path)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(StoreTooNew) as refused:
        Store(db_path)
    assert "'9999_future', which this admin does not know" in refused.value.lines[0]
    assert f"up to {code_revision()!r}" in refused.value.lines[0]


@pytest.mark.store_engines("sqlite")
def test_sqlite_store_from_before_alembic_is_adopted_with_its_data(db_path: str) -> None:
    path = db_path
    Path(path).parent.mkdir(parents=True)
    # the schema the admin made with PRAGMA user_version before it used Alembic
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE objects (kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
            row_version INTEGER NOT NULL DEFAULT 1, updated_at REAL NOT NULL, updated_by TEXT,
            PRIMARY KEY (kind, name));
        CREATE TABLE member_flags (group_name TEXT NOT NULL, address TEXT NOT NULL,
            flag TEXT NOT NULL, value INTEGER NOT NULL, who TEXT NOT NULL, at REAL NOT NULL,
            why TEXT NOT NULL, PRIMARY KEY (group_name, address, flag));
        CREATE TABLE server_flags (ip TEXT PRIMARY KEY, value INTEGER NOT NULL,
            who TEXT NOT NULL, at REAL NOT NULL, why TEXT NOT NULL);
        CREATE TABLE discovered (group_name TEXT PRIMARY KEY, members TEXT NOT NULL,
            at REAL NOT NULL);
        CREATE TABLE versions (version INTEGER PRIMARY KEY, content TEXT NOT NULL,
            hash TEXT NOT NULL, created_at REAL NOT NULL, who TEXT NOT NULL,
            reason TEXT NOT NULL, source_version INTEGER);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
            who TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
            reason TEXT NOT NULL, before TEXT, after TEXT, result TEXT NOT NULL);
        INSERT INTO objects VALUES ('group', 'web', '{"name":"web"}', 3, 1.0, 'ada');
        PRAGMA user_version = 1;
    """)
    old.close()
    adopted = Store(path)
    try:
        assert adopted.get("group", "web").row_version == 3
    finally:
        adopted.close()
    assert revision(path) == code_revision()


def test_two_admins_editing_one_object_at_once_one_wins_one_conflicts(db_path: str) -> None:
    """Optimistic locking between two admins (two engines on one store), racing for real."""
    seed = Store(db_path)
    seed.create("group", "web", GROUP, "ada", "first")
    admins = [Store(db_path), Store(db_path)]
    start = threading.Barrier(2)
    results: list[str] = []

    def edit(admin: Store, n: int) -> None:
        start.wait(timeout=30)
        try:
            admin.update("group", "web", {**GROUP, "n": n}, 1, f"admin{n}", "race")
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=edit, args=(a, n)) for n, a in enumerate(admins)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert sorted(results) == ["conflict", "ok"]
        row = seed.get("group", "web")
        assert row.row_version == 2
        assert [a["target"] for a in seed.audit()] == ["group/web", "group/web"]  # 1 create
    finally:
        for opened in (seed, *admins):
            opened.close()


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
               ("web", object(), "pull", False)]  # the second row cannot be stored
    with pytest.raises(StatementError):
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


# -- several admins on one store -----------------------------------------------------------------


def test_leader_tells_changes_made_by_other_admins_from_its_own(db_path: str) -> None:
    leader, follower = Store(db_path), Store(db_path)
    try:
        seen = leader.generation()
        leader.create("group", "web", GROUP, "ada", "own")
        seen, foreign = leader.foreign_changes(seen)
        assert (seen, foreign) == (1, False)
        follower.set_member_flags([("web", "10.0.0.1:80", "pull", False)], "otto", "deploy",
                                  "member pull-out")
        leader.record("vera", "activate", "version/new", "refused: not a change")
        assert leader.foreign_changes(seen) == (2, True)  # the refusal is no change
        assert leader.foreign_changes(2) == (2, False)
    finally:
        leader.close()
        follower.close()


def test_each_leadership_takes_a_higher_term_seen_by_every_admin(db_path: str) -> None:
    first, second = Store(db_path), Store(db_path)
    try:
        assert first.leader() is None
        one = first.take_leadership("admin-1", "http://127.0.0.1:1")
        two = second.take_leadership("admin-2", "http://127.0.0.1:2")
        assert (one["term"], two["term"]) == (1, 2)
        assert first.leader() == two
        assert first.audit() == []  # leadership is no configuration change
    finally:
        first.close()
        second.close()


def test_the_draft_parses_again_only_what_changed_and_always_shows_the_stored_body(
        store: Store, db_path: str) -> None:
    store.create("group", "a", {"name": "a", "x": 1}, "ada", "r")
    store.create("group", "b", {"name": "b"}, "ada", "r")
    first = store.draft()["group"]
    store.update("group", "a", {"name": "a", "x": 2}, 1, "ada", "r")
    second = store.draft()["group"]
    assert second == [{"name": "a", "x": 2}, {"name": "b"}]
    assert second[1] is first[1]  # unchanged: the same body, not parsed again
    store.delete("group", "b", None, "ada", "r")
    store.create("group", "b", {"name": "b", "y": 1}, "ada", "r")  # row version 1 again
    assert store.draft()["group"] == [{"name": "a", "x": 2}, {"name": "b", "y": 1}]
    other = Store(db_path)  # another admin's change, on the same store
    try:
        other.update("group", "a", {"name": "a", "x": 3}, 2, "bob", "r")
    finally:
        other.close()
    assert store.draft()["group"][0] == {"name": "a", "x": 3}
