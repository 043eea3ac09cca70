"""Versions at scale: the admin keeps only a few versions parsed (``admin.domain.version_cache``),
and reads one group through an index of the active version. What an operator sees must not
depend on what is cached: a rollback to a version long dropped from the cache restores it
from the store, and a group read follows each activation. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.domain.version_cache import CACHED_VERSIONS

ADDRESS = "10.0.0.1:80"
SEED = {
    "cluster": [{"name": "c1"}],
    "group": [{"name": "web", "members": [{"address": ADDRESS}]}],
    "virtual_server": [{"name": "site", "cluster": "c1", "listen": "127.0.0.1:8080"}],
    "route": [{"name": "r1", "virtual_server": "site", "path": "/", "group": "web"}],
}


@pytest.fixture
def service(store_target: str) -> Iterator[AdminService]:
    store = Store(store_target)
    service = AdminService(store)
    for kind, bodies in SEED.items():
        for body in bodies:
            service.create(kind, body, "ada", "seed")
    yield service
    store.close()


def activate_weight(service: AdminService, weight: int) -> int:
    row_version = service.get("group", "web")["row_version"]
    service.set_weight("web", [ADDRESS], weight, row_version, "ada", f"weight {weight}")
    return int(service.activate("ada", f"weight {weight}")["version"])


def served_weight(service: AdminService) -> int:
    return int(service.group_view("web")["members"][0]["weight"])


def test_a_rollback_to_a_version_dropped_from_the_cache_restores_it(
        service: AdminService) -> None:
    first = activate_weight(service, 1)
    for weight in range(2, 2 + CACHED_VERSIONS + 2):
        activate_weight(service, weight)
    assert first not in service.store._versions.numbers()  # only the store has it now
    answer = service.rollback(first, "ada", "back to the start")
    assert served_weight(service) == 1
    assert service.store.version(answer["version"])["hash"] == answer["hash"]
    assert service.drafts_pending() is False  # the draft is version 1's again
    assert len(service.store._versions.numbers()) <= CACHED_VERSIONS


def test_reading_old_versions_keeps_the_cache_bounded_and_the_group_read_right(
        service: AdminService) -> None:
    versions = [activate_weight(service, weight) for weight in (1, 2, 3, 4)]
    for number in versions:  # a diff of every pair: each old version parsed again
        for other in versions:
            service.diff(number, other)
            assert len(service.store._versions.numbers()) <= CACHED_VERSIONS
    assert served_weight(service) == 4
    assert [c["name"] for c in service.diff(versions[0], versions[-1])["changes"]] == ["web"]


def test_a_group_read_shows_the_active_members_until_the_draft_is_activated(
        service: AdminService) -> None:
    activate_weight(service, 1)
    row_version = service.get("group", "web")["row_version"]
    service.set_weight("web", [ADDRESS], 5, row_version, "ada", "draft only")
    assert served_weight(service) == 1  # the edit is a draft: nodes still have weight 1
    service.activate("ada", "now")
    assert served_weight(service) == 5
