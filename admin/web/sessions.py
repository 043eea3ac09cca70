"""Web UI sessions: server-side, in this process's memory (a restart logs everyone out).

Logging in with an API token makes a ``Session``: a random id (the ``slb_session`` cookie holds
nothing else), who it is, the token's role, and a CSRF token every changing form must carry.
A session ends after ``SESSION_IDLE`` without a request, ``SESSION_MAX`` after login, or as soon
as its token is no longer in the admin's file with the same role.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from admin.settings import ApiToken, may

COOKIE = "slb_session"
SESSION_IDLE = 8 * 3600.0  # seconds without a request before a session ends
SESSION_MAX = 24 * 3600.0  # seconds after login a session ends anyway
MAX_SESSIONS = 10000


@dataclass
class Session:
    id: str
    name: str
    role: str
    csrf: str
    created: float
    seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def may(self, role: str) -> bool:
        return may(self.role, role)


class Sessions:
    """Server-side sessions in memory: random id -> who, role, CSRF token, flash messages."""

    def __init__(self, tokens: list[ApiToken], clock: Callable[[], float] = time.time) -> None:
        self.tokens = tokens
        self.clock = clock
        self._by_id: dict[str, Session] = {}

    def login(self, secret: str) -> Session | None:
        found = None
        for token in self.tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(token.token.encode(), secret.strip().encode()):
                found = token
        if found is None:
            return None
        self._expire()
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), found.name, found.role,
                          secrets.token_urlsafe(32), now, now)
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > SESSION_IDLE or now - session.created > SESSION_MAX \
                or not any(t.name == session.name and t.role == session.role
                           for t in self.tokens):
            self._by_id.pop(session_id, None)
            return None
        session.seen = now
        return session

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self._by_id.pop(session_id, None)

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, s in self._by_id.items()
                    if now - s.seen > SESSION_IDLE or now - s.created > SESSION_MAX]:
            del self._by_id[key]
