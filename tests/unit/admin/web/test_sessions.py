"""``admin.web.sessions``: sessions live in the store, so they survive a restart, end on
logout for every admin sharing the store, and expire."""

from __future__ import annotations

from pathlib import Path

from admin.domain.store import Store
from admin.settings import ApiToken
from admin.web.sessions import SESSION_IDLE, Sessions

ADA = ApiToken(name="ada", token="admin-token-0123", role="admin")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_survives_a_restart_and_a_logout_ends_it_everywhere(tmp_path: Path) -> None:
    clock = Clock()
    first = Sessions([ADA], Store(tmp_path / "admin.db"), clock)
    session = first.login("admin-token-0123")
    assert session is not None and first.login("wrong-token-0123") is None
    restarted = Sessions([ADA], Store(tmp_path / "admin.db"), clock)  # or a second admin
    again = restarted.get(session.id)
    assert again is not None and (again.name, again.csrf) == ("ada", session.csrf)
    first.logout(session.id)
    assert restarted.get(session.id) is None


def test_the_store_keeps_no_usable_session_id(tmp_path: Path) -> None:
    sessions = Sessions([ADA], Store(tmp_path / "admin.db"))
    session = sessions.login("admin-token-0123")
    assert session is not None
    assert session.id.encode() not in (tmp_path / "admin.db").read_bytes()


def test_an_idle_session_expires_and_a_removed_token_ends_its_sessions(tmp_path: Path) -> None:
    clock = Clock()
    store = Store(tmp_path / "admin.db")
    sessions = Sessions([ADA], store, clock)
    session = sessions.login("admin-token-0123")
    assert session is not None
    clock.now += SESSION_IDLE - 1
    assert sessions.get(session.id) is not None  # a request keeps it alive
    clock.now += SESSION_IDLE - 1
    assert sessions.get(session.id) is not None
    clock.now += SESSION_IDLE + 1
    assert sessions.get(session.id) is None
    other = sessions.login("admin-token-0123")
    assert other is not None
    assert Sessions([], store, clock).get(other.id) is None  # the token left the file


def test_flash_messages_wait_for_the_next_page() -> None:
    sessions = Sessions([ADA], Store(":memory:"))
    session = sessions.login("admin-token-0123")
    assert session is not None
    session.flashes.append(("ok", "done"))
    later = sessions.get(session.id)
    assert later is not None and later.flashes == [("ok", "done")]
