"""The web UI's sessions in the store (issue 10): a restart logs nobody out, and a logout ends
the session for every admin sharing the store. Only a hash of the session id is kept.

A mixin of ``admin.domain.store.Store`` (its transactions and reads), in its own module so
that the store stays one subject per file; the table is ``tables.sessions``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from sqlalchemy import Connection, delete, or_, select, update

from admin.domain import tables as t


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A web UI session as stored: ``id_hash`` is sha256 of the cookie's value."""

    id_hash: str
    name: str
    role: str
    csrf: str
    created: float
    seen: float


class SessionStore:
    """``session_*`` operations, each one transaction (``Store._transaction``, ``_read`` and
    ``_upsert`` come from the Store this is mixed into)."""

    _transaction: Callable[[], AbstractContextManager[Connection]]
    _read: Callable[[], AbstractContextManager[Connection]]
    _upsert: Callable[..., None]

    def session_put(self, record: SessionRecord) -> None:
        with self._transaction() as conn:
            self._upsert(conn, t.sessions, {
                "id_hash": record.id_hash, "name": record.name, "role": record.role,
                "csrf": record.csrf, "created": record.created, "seen": record.seen},
                ["id_hash"])

    def session_get(self, id_hash: str) -> SessionRecord | None:
        with self._read() as conn:
            row = conn.execute(select(t.sessions).where(t.sessions.c.id_hash == id_hash)).first()
        return None if row is None else SessionRecord(*row)

    def session_seen(self, id_hash: str, seen: float) -> None:
        with self._transaction() as conn:
            conn.execute(update(t.sessions).where(t.sessions.c.id_hash == id_hash)
                         .values(seen=seen))

    def session_delete(self, id_hash: str) -> None:
        with self._transaction() as conn:
            conn.execute(delete(t.sessions).where(t.sessions.c.id_hash == id_hash))

    def sessions_expire(self, seen_before: float, created_before: float) -> None:
        with self._transaction() as conn:
            conn.execute(delete(t.sessions).where(or_(t.sessions.c.seen < seen_before,
                                                      t.sessions.c.created < created_before)))

