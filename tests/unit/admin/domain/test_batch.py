"""A batch of member operations is all or nothing, and the publish after it carries exactly
the groups it changed: the rest of the snapshot is the one built before, unchanged. On SQLite
and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from admin.domain import store as store_module
from admin.domain.errors import Invalid, StoreUnavailable
from admin.domain.service import AdminService
from admin.domain.snapshots import build_snapshot
from admin.domain.store import Store
from tests.support.pushers import RecordingPusher

GROUPS = 60


def address(group: int, member: int) -> str:
    return f"10.0.{group}.{member}:80"


@pytest.fixture
def service(store_target: str) -> Iterator[AdminService]:
    store = Store(store_target)
    service = AdminService(store, pusher_factory=RecordingPusher)  # type: ignore[arg-type]
    service.create("cluster", {"name": "c1"}, "ada", "seed")
    service.create("virtual_server", {"name": "site", "cluster": "c1",
                                      "listen": "127.0.0.1:8080"}, "ada", "seed")
    for g in range(GROUPS):
        service.create("group", {"name": f"g{g:02d}", "members": [
            {"address": address(g, 1)}, {"address": address(g, 2)}]}, "ada", "seed")
        service.create("route", {"name": f"r{g:02d}", "virtual_server": "site",
                                 "path": f"/g{g:02d}", "group": f"g{g:02d}"}, "ada", "seed")
    service.activate("ada", "seed")
    asyncio.run(service.start())  # leading; outside a loop every change publishes at once
    yield service
    asyncio.run(service.close())
    store.close()


def pull_out(groups: range) -> list[dict[str, Any]]:
    return [{"group": f"g{g:02d}", "address": address(g, 1), "op": "pull-out"} for g in groups]


def pusher(service: AdminService) -> RecordingPusher:
    found = service.publisher.pushers["c1"]
    assert isinstance(found, RecordingPusher)
    return found


def test_a_batch_failing_at_its_50th_operation_changes_nothing(
        service: AdminService, monkeypatch: pytest.MonkeyPatch) -> None:
    audit_before = service.audit(limit=1000)
    published_before = len(pusher(service).published)
    audit_row = store_module.audit_row
    seen = 0

    def fail_at_the_50th(*args: Any) -> Any:
        # called once per operation, in the batch's transaction, after every flag row of
        # the batch was written: the connection is lost while the 50th is being recorded
        nonlocal seen
        seen += 1
        if seen == 50:
            raise OperationalError("INSERT INTO audit", {}, Exception("connection lost"))
        return audit_row(*args)

    monkeypatch.setattr(store_module, "audit_row", fail_at_the_50th)
    with pytest.raises(StoreUnavailable, match="nothing was changed"):
        service.batch(pull_out(range(GROUPS)), "otto", "deploy 7")
    assert seen == 50
    assert service.store.member_flags() == {}
    assert service.audit(limit=1000) == audit_before  # not one audit row of the batch
    assert all(m.state == "up" for g in range(GROUPS)
               for m in service.group_members(f"g{g:02d}"))
    assert len(pusher(service).published) == published_before  # nothing to publish


def test_a_batch_applies_every_operation_with_an_audit_row_each(service: AdminService) -> None:
    answer = service.batch(pull_out(range(GROUPS)), "otto", "deploy 7")
    assert [r["group"] for r in answer["results"]] == [f"g{g:02d}" for g in range(GROUPS)]
    rows = service.audit(target="member/", limit=1000)
    assert sorted(r["target"] for r in rows) == sorted(
        f"member/g{g:02d}/{address(g, 1)}" for g in range(GROUPS))
    assert {(r["who"], r["action"], r["reason"]) for r in rows} == {
        ("otto", "member pull-out", "deploy 7")}


def test_a_member_pulled_out_and_back_in_by_one_batch_ends_in(service: AdminService) -> None:
    g00 = {"group": "g00", "address": address(0, 1)}
    service.batch([{**g00, "op": "pull-out"}, {**g00, "op": "pull-in"},
                   {**g00, "op": "down"}, {"server": "10.0.0.1", "op": "down"},
                   {"server": "10.0.0.1", "op": "up"}], "otto", "deploy 7", force=True)
    flags = service.store.member_flags("g00")[("g00", address(0, 1))]
    assert (flags["pull"].value, flags["ops"].value) == (True, False)
    assert service.store.server_flags()["10.0.0.1"].value is True
    rows = service.audit(target="member/g00/", limit=10)[::-1]  # oldest first
    assert [(r["action"], r["before"] and r["before"]["value"], r["after"]["value"])
            for r in rows] == [("member pull-out", None, False),
                               ("member pull-in", False, True), ("member down", None, False)]
    assert [r["action"] for r in service.audit(target="server/", limit=10)[::-1]] == [
        "server down", "server up"]


def test_a_bad_entry_refuses_the_whole_batch(service: AdminService) -> None:
    operations = [*pull_out(range(10)),
                  {"group": "g03", "address": "10.9.9.9:80", "op": "pull-out"},
                  {"server": "not-an-ip", "op": "down"}]
    with pytest.raises(Invalid, match="the batch was not applied") as refused:
        service.batch(operations, "otto", "deploy 7")
    assert refused.value.errors == [
        "operations[10].address: '10.9.9.9:80' is not a member",
        "operations[11].server: 'not-an-ip' is not an IP address"]
    assert service.store.member_flags() == {}


def test_a_publish_after_a_flip_carries_exactly_the_changed_groups(
        service: AdminService, monkeypatch: pytest.MonkeyPatch) -> None:
    before, _ = pusher(service).published[-1]
    read: list[list[str]] = []
    members_for = service.publisher._members_for

    def spy(content: Any) -> Any:
        read.append(sorted(g["name"] for g in content.get("group", [])))
        return members_for(content)

    monkeypatch.setattr(service.publisher, "_members_for", spy)
    flipped = range(10, 20)
    service.batch(pull_out(flipped), "otto", "deploy 7")

    after, changed = pusher(service).published[-1]
    names = {f"g{g:02d}" for g in flipped}
    assert changed == names
    assert read == [sorted(names)]  # only the flipped groups' members were read
    assert after.version > before.version
    for old, new in zip(before.groups, after.groups, strict=True):
        if new.name in names:
            g = int(new.name[1:])
            assert {m.address: m.state for m in new.members} == {
                address(g, 1): "drain", address(g, 2): "up"}
        else:
            assert new is old  # the pool built before, reused as it was
    assert after.virtual_servers == before.virtual_servers
    # and it is the snapshot a build from scratch makes
    content = service.active_content()
    assert content is not None
    whole = build_snapshot(content, "c1", after.version, members_for(content),
                           service.store.identity)
    assert after.model_dump() == whole.model_dump()
    assert after.content_hash() == whole.content_hash()


def test_an_activation_after_a_flip_builds_the_snapshot_whole(service: AdminService) -> None:
    service.batch(pull_out(range(3)), "otto", "deploy 7")
    row_version = service.get("group", "g05")["row_version"]
    service.set_weight("g05", [address(5, 2)], 7, row_version, "ada", "heavier")
    service.activate("ada", "weights")
    config, changed = pusher(service).published[-1]
    assert changed is None
    g05 = config.groups[config.group_position("g05") or 0]
    assert {m.address: m.weight for m in g05.members} == {address(5, 1): 1, address(5, 2): 7}
    g00 = config.groups[config.group_position("g00") or 0]
    assert {m.address: m.state for m in g00.members} == {address(0, 1): "drain",
                                                         address(0, 2): "up"}
