"""Web UI sessions: server-side, in the admin's store (a restart logs nobody out).

Logging in with an API token makes a ``Session``: a random id (the ``slb_session`` cookie holds
nothing else), who it is, the token's role, and a CSRF token every changing form must carry.
A session ends after ``SESSION_IDLE`` without a request, ``SESSION_MAX`` after login, or as soon
as its token is no longer in the admin's file with the same role.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from admin.domain.store import SessionRecord, Store
from admin.settings import ApiToken, may

COOKIE = "slb_session"
SESSION_IDLE = 8 * 3600.0  # seconds without a request before a session ends
SESSION_MAX = 24 * 3600.0  # seconds after login a session ends anyway
SEEN_WRITE = 60.0  # seconds: how stale the stored "last seen" may get
MAX_SESSIONS = 10000  # sessions whose flash messages are kept in memory


@dataclass
class Session:
    id: str
    name: str
    role: str
    csrf: str
    created: float
    seen: float
    # shared with ``Sessions`` (kept across requests): mutate it, never rebind it
    flashes: list[tuple[str, str]] = field(default_factory=list)

    def may(self, role: str) -> bool:
        return may(self.role, role)


class Sessions:
    """Sessions in the store: random id -> who, role, CSRF token; flash messages in memory.

    The store keeps only sha256 of each id, so reading the database gives no session. Every
    request reads the row, so a logout on one admin ends the session on every admin sharing
    the store, and a restart keeps everyone logged in. ``seen`` is written at most once per
    ``SEEN_WRITE`` seconds: a page's polling does not turn into a write per request.
    """

    def __init__(self, tokens: list[ApiToken], store: Store,
                 clock: Callable[[], float] = time.time) -> None:
        self.tokens = tokens
        self.store = store
        self.clock = clock
        self._flashes: dict[str, list[tuple[str, str]]] = {}  # id hash -> messages

    def login(self, secret: str) -> Session | None:
        found = None
        for token in self.tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(token.token.encode(), secret.strip().encode()):
                found = token
        if found is None:
            return None
        now = self.clock()
        self.store.sessions_expire(now - SESSION_IDLE, now - SESSION_MAX)
        session_id = secrets.token_urlsafe(32)
        record = SessionRecord(_hash(session_id), found.name, found.role,
                               secrets.token_urlsafe(32), now, now)
        self.store.session_put(record)
        return self._session(session_id, record)

    def get(self, session_id: str | None) -> Session | None:
        if not session_id or len(session_id) > 100:
            return None
        key = _hash(session_id)
        record = self.store.session_get(key)
        if record is None:
            self._flashes.pop(key, None)
            return None
        now = self.clock()
        if now - record.seen > SESSION_IDLE or now - record.created > SESSION_MAX \
                or not any(t.name == record.name and t.role == record.role
                           for t in self.tokens):
            self.logout(session_id)
            return None
        if now - record.seen > SEEN_WRITE:
            self.store.session_seen(key, now)
        return self._session(session_id, record)

    def logout(self, session_id: str | None) -> None:
        if session_id:
            self.store.session_delete(_hash(session_id))
            self._flashes.pop(_hash(session_id), None)

    def _session(self, session_id: str, record: SessionRecord) -> Session:
        while len(self._flashes) > MAX_SESSIONS:
            self._flashes.pop(next(iter(self._flashes)))
        return Session(session_id, record.name, record.role, record.csrf, record.created,
                       record.seen, self._flashes.setdefault(record.id_hash, []))


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
