"""Health changes (domain/health.py): only a change is logged at INFO and audited, with who."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin.domain.health import HealthHistory
from admin.domain.members import Discovered
from admin.domain.store import Store

A = "10.0.0.1:80"
B = "10.0.0.2:80"


class Clock:
    def __init__(self) -> None:
        self.now = 1700000000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store(str(tmp_path / "admin.db"))
    yield opened
    opened.close()


def consul(address: str, health: str, detail: str = "") -> Discovered:
    return Discovered(address, health=health, health_detail=detail, source="consul")


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "admin.health" and r.levelno >= logging.INFO]


def test_repeated_answers_log_nothing_at_info_and_audit_nothing(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "admin.health")
    history = HealthHistory(store, Clock())
    for _ in range(5):
        history.observe("consul", "web", [consul(A, "passing"), consul(B, "passing")])
    assert info_lines(caplog) == []
    assert store.audit() == []
    assert any("still passing" in r.getMessage() for r in caplog.records)  # at DEBUG


def test_a_change_is_logged_once_audited_with_who_and_dated(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "admin.health")
    clock = Clock()
    history = HealthHistory(store, clock)
    history.observe("consul", "web", [consul(A, "passing")])
    clock.now += 60
    history.observe("consul", "web", [consul(A, "critical", "HTTP 500")])
    history.observe("consul", "web", [consul(A, "critical", "HTTP 500")])
    assert info_lines(caplog) == [f"health of {A} in web: passing -> critical (consul): HTTP 500"]
    [row] = store.audit()
    assert (row["who"], row["action"], row["target"], row["reason"]) == (
        "consul", "health change", f"member/web/{A}", "HTTP 500")
    assert (row["before"], row["after"]) == ({"health": "passing"}, {"health": "critical"})
    assert history.since("web", A) == clock.now


def test_the_checkers_first_failure_of_a_static_member_is_a_change(store: Store) -> None:
    history = HealthHistory(store, Clock())
    history.observe("check", "static", [Discovered(A, health="critical", source="check")])
    [row] = store.audit()
    assert row["who"] == "checker" and row["after"] == {"health": "critical"}


def test_a_change_while_the_admin_was_down_is_audited_without_a_since(store: Store) -> None:
    history = HealthHistory(store, Clock())
    history.seed("web", [consul(A, "passing")])
    assert history.since("web", A) is None
    history.observe("consul", "web", [consul(A, "critical")])
    assert [r["after"] for r in store.audit()] == [{"health": "critical"}]


def test_a_member_that_leaves_forgets_its_history(store: Store) -> None:
    history = HealthHistory(store, Clock())
    history.observe("consul", "web", [consul(A, "critical")])
    history.observe("consul", "web", [])
    history.observe("consul", "web", [consul(A, "passing")])  # back: first seen, not a change
    assert store.audit() == []
