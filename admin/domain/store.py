"""The admin's store: one SQLite file, behind this one module.

Everything the admin keeps lives here: the draft objects (clusters, nodes, virtual servers,
routes, groups), member and server flags, the members last discovered from Consul, activated
versions, the push version counter, and the audit log. Each public method is one transaction,
and every change writes its audit row in the same transaction, so a change and its record
cannot part. A shared database could replace SQLite by reimplementing this class.

Objects are stored as JSON bodies with a ``row_version`` for optimistic locking: an update or
delete names the version it was made from, and a concurrent edit is refused (``Conflict``),
never silently merged.

The schema is created and migrated by the admin itself (``PRAGMA user_version``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from admin.domain.errors import Conflict, NotFound

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE objects (
        kind TEXT NOT NULL, name TEXT NOT NULL, body TEXT NOT NULL,
        row_version INTEGER NOT NULL DEFAULT 1, updated_at REAL NOT NULL, updated_by TEXT,
        PRIMARY KEY (kind, name));
    CREATE TABLE member_flags (
        group_name TEXT NOT NULL, address TEXT NOT NULL, flag TEXT NOT NULL,
        value INTEGER NOT NULL, who TEXT NOT NULL, at REAL NOT NULL, why TEXT NOT NULL,
        PRIMARY KEY (group_name, address, flag));
    CREATE TABLE server_flags (
        ip TEXT PRIMARY KEY, value INTEGER NOT NULL, who TEXT NOT NULL, at REAL NOT NULL,
        why TEXT NOT NULL);
    CREATE TABLE discovered (
        group_name TEXT PRIMARY KEY, members TEXT NOT NULL, at REAL NOT NULL);
    CREATE TABLE versions (
        version INTEGER PRIMARY KEY, content TEXT NOT NULL, hash TEXT NOT NULL,
        created_at REAL NOT NULL, who TEXT NOT NULL, reason TEXT NOT NULL,
        source_version INTEGER);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, who TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, before TEXT,
        after TEXT, result TEXT NOT NULL);
    CREATE INDEX audit_target ON audit (target);
    CREATE INDEX audit_who ON audit (who);
    CREATE INDEX audit_at ON audit (at);
    """,
    # 2: web UI sessions (issue 10), so a restart logs nobody out and a logout ends the session
    # for every admin sharing the store. Only a hash of the session id is kept.
    """
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, csrf TEXT NOT NULL,
        created REAL NOT NULL, seen REAL NOT NULL);
    """,
)


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    name: str
    body: dict[str, Any]
    row_version: int
    updated_at: float
    updated_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.body, "row_version": self.row_version, "updated_at": self.updated_at,
                "updated_by": self.updated_by}


@dataclass(frozen=True, slots=True)
class Flag:
    value: bool
    who: str
    at: float
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "who": self.who, "at": self.at, "why": self.why}


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


SECRET_KEYS = frozenset({"token"})  # a node's control token: written, never shown


def without_secrets(value: Any) -> Any:
    """``value`` with every secret field replaced by ``"(set)"``: what the audit log keeps
    (it is read by every role; a changed secret still shows as a change)."""
    if isinstance(value, dict):
        return {k: ("(set)" if v is not None else None) if k in SECRET_KEYS
                else without_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_secrets(v) for v in value]
    return value


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection; the admin's event loop is its only user (a lock guards threads).
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.RLock()
        self._migrate()
        self.identity = self._identity()

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        with self._transaction() as db:
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- draft objects -----------------------------------------------------------------------

    def objects(self, kind: str) -> list[Row]:
        rows = self._db.execute("SELECT * FROM objects WHERE kind = ? ORDER BY name", (kind,))
        return [self._row(r) for r in rows]

    def get(self, kind: str, name: str) -> Row:
        found = self._db.execute("SELECT * FROM objects WHERE kind = ? AND name = ?",
                                 (kind, name)).fetchone()
        if found is None:
            raise NotFound(f"no {kind.replace('_', ' ')} named {name!r}")
        return self._row(found)

    def find(self, kind: str, name: str) -> Row | None:
        try:
            return self.get(kind, name)
        except NotFound:
            return None

    def create(self, kind: str, name: str, body: dict[str, Any], who: str, reason: str) -> Row:
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM objects WHERE kind = ? AND name = ?",
                          (kind, name)).fetchone():
                raise Conflict(f"a {kind.replace('_', ' ')} named {name!r} already exists")
            db.execute("INSERT INTO objects (kind, name, body, row_version, updated_at, "
                       "updated_by) VALUES (?, ?, ?, 1, ?, ?)",
                       (kind, name, _dumps(body), now, who))
            self._audit(db, who, f"create {kind}", f"{kind}/{name}", reason, None, body, "ok")
        return Row(kind, name, body, 1, now, who)

    def update(self, kind: str, name: str, body: dict[str, Any], expected_version: int,
               who: str, reason: str) -> Row:
        now = time.time()
        with self._transaction() as db:
            before = self._locked_row(db, kind, name, expected_version)
            db.execute("UPDATE objects SET body = ?, row_version = row_version + 1, "
                       "updated_at = ?, updated_by = ? WHERE kind = ? AND name = ?",
                       (_dumps(body), now, who, kind, name))
            self._audit(db, who, f"update {kind}", f"{kind}/{name}", reason, before.body, body,
                        "ok")
        return Row(kind, name, body, before.row_version + 1, now, who)

    def delete(self, kind: str, name: str, expected_version: int | None, who: str,
               reason: str) -> None:
        with self._transaction() as db:
            before = self._locked_row(db, kind, name, expected_version)
            db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (kind, name))
            self._audit(db, who, f"delete {kind}", f"{kind}/{name}", reason, before.body, None,
                        "ok")

    def _locked_row(self, db: sqlite3.Connection, kind: str, name: str,
                    expected_version: int | None) -> Row:
        found = db.execute("SELECT * FROM objects WHERE kind = ? AND name = ?",
                           (kind, name)).fetchone()
        if found is None:
            raise NotFound(f"no {kind.replace('_', ' ')} named {name!r}")
        row = self._row(found)
        if expected_version is not None and row.row_version != expected_version:
            raise Conflict(f"{kind.replace('_', ' ')} {name!r} was changed meanwhile: it is at "
                           f"row_version {row.row_version}, not {expected_version}")
        return row

    @staticmethod
    def _row(found: sqlite3.Row) -> Row:
        return Row(found["kind"], found["name"], json.loads(found["body"]),
                   found["row_version"], found["updated_at"], found["updated_by"])

    def draft(self) -> dict[str, list[dict[str, Any]]]:
        """Every draft object by kind, as stored (no row metadata)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for found in self._db.execute("SELECT kind, body FROM objects ORDER BY kind, name"):
            out.setdefault(found["kind"], []).append(json.loads(found["body"]))
        return out

    def rollback(self, content: dict[str, list[dict[str, Any]]],
                 draft: dict[str, list[dict[str, Any]]], content_hash: str,
                 source_version: int, who: str, reason: str) -> int:
        """Activate ``content`` as a new version and make the draft ``draft``, in one
        transaction.

        Row versions keep growing (an edit made before the rollback stays stale), and every
        object the rollback adds, changes or removes gets its audit row.
        """
        now = time.time()
        with self._transaction() as db:
            current = {(r["kind"], r["name"]): self._row(r)
                       for r in db.execute("SELECT * FROM objects")}
            wanted = {(kind, body["name"]): body for kind, bodies in draft.items()
                      for body in bodies}
            for key, row in current.items():
                if key not in wanted:
                    db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", key)
                    self._audit(db, who, f"delete {key[0]}", f"{key[0]}/{key[1]}", reason,
                                row.body, None, f"rollback to version {source_version}")
            for key, body in wanted.items():
                row = current.get(key)
                if row is not None and row.body == body:
                    continue
                db.execute("INSERT INTO objects (kind, name, body, row_version, updated_at, "
                           "updated_by) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name) DO "
                           "UPDATE SET body = excluded.body, row_version = "
                           "objects.row_version + 1, updated_at = excluded.updated_at, "
                           "updated_by = excluded.updated_by",
                           (*key, _dumps(body), 1, now, who))
                self._audit(db, who, f"{'update' if row else 'create'} {key[0]}",
                            f"{key[0]}/{key[1]}", reason, row.body if row else None, body,
                            f"rollback to version {source_version}")
            return self._add_version(db, content, content_hash, who, reason, source_version)

    # -- flags -------------------------------------------------------------------------------

    def member_flags(self, group: str | None = None) -> dict[tuple[str, str], dict[str, Flag]]:
        """(group, address) -> flag name -> Flag."""
        query = "SELECT * FROM member_flags"
        args: tuple[Any, ...] = ()
        if group is not None:
            query += " WHERE group_name = ?"
            args = (group,)
        out: dict[tuple[str, str], dict[str, Flag]] = {}
        for r in self._db.execute(query, args):
            out.setdefault((r["group_name"], r["address"]), {})[r["flag"]] = Flag(
                bool(r["value"]), r["who"], r["at"], r["why"])
        return out

    def server_flags(self) -> dict[str, Flag]:
        return {r["ip"]: Flag(bool(r["value"]), r["who"], r["at"], r["why"])
                for r in self._db.execute("SELECT * FROM server_flags")}

    def set_member_flags(self, changes: list[tuple[str, str, str, bool]], who: str, why: str,
                         action: str) -> list[dict[str, Any]]:
        """Set (group, address, flag, value) rows in one transaction; returns the changes."""
        now = time.time()
        done = []
        with self._transaction() as db:
            for group, address, flag, value in changes:
                old = db.execute("SELECT value, who, at, why FROM member_flags WHERE "
                                 "group_name = ? AND address = ? AND flag = ?",
                                 (group, address, flag)).fetchone()
                before = None if old is None else {"value": bool(old["value"]),
                                                    "who": old["who"], "why": old["why"]}
                db.execute("INSERT INTO member_flags VALUES (?, ?, ?, ?, ?, ?, ?) "
                           "ON CONFLICT (group_name, address, flag) DO UPDATE SET "
                           "value = excluded.value, who = excluded.who, at = excluded.at, "
                           "why = excluded.why", (group, address, flag, int(value), who, now, why))
                after = {"value": value, "who": who, "why": why}
                self._audit(db, who, action, f"member/{group}/{address}", why, before, after,
                            "ok")
                done.append({"group": group, "address": address, "flag": flag, "value": value})
        return done

    def set_server_flag(self, ip: str, value: bool, who: str, why: str) -> None:
        now = time.time()
        with self._transaction() as db:
            old = db.execute("SELECT value, who, why FROM server_flags WHERE ip = ?",
                             (ip,)).fetchone()
            before = None if old is None else {"value": bool(old["value"]), "who": old["who"],
                                                "why": old["why"]}
            db.execute("INSERT INTO server_flags VALUES (?, ?, ?, ?, ?) ON CONFLICT (ip) DO "
                       "UPDATE SET value = excluded.value, who = excluded.who, "
                       "at = excluded.at, why = excluded.why", (ip, int(value), who, now, why))
            self._audit(db, who, "server up" if value else "server down", f"server/{ip}", why,
                        before, {"value": value, "who": who, "why": why}, "ok")

    # -- members discovered from Consul (last known, kept across restarts) ---------------------

    def save_discovered(self, group: str, members: list[dict[str, Any]]) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO discovered VALUES (?, ?, ?) ON CONFLICT (group_name) DO "
                       "UPDATE SET members = excluded.members, at = excluded.at",
                       (group, _dumps(members), time.time()))

    def discovered(self) -> dict[str, list[dict[str, Any]]]:
        return {r["group_name"]: json.loads(r["members"])
                for r in self._db.execute("SELECT * FROM discovered")}

    # -- versions ----------------------------------------------------------------------------

    def add_version(self, content: dict[str, Any], content_hash: str, who: str, reason: str,
                    source_version: int | None = None) -> int:
        with self._transaction() as db:
            return self._add_version(db, content, content_hash, who, reason, source_version)

    def _add_version(self, db: sqlite3.Connection, content: dict[str, Any], content_hash: str,
                     who: str, reason: str, source_version: int | None) -> int:
        now = time.time()
        last = db.execute("SELECT MAX(version) FROM versions").fetchone()[0] or 0
        version = last + 1
        db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (version, _dumps(content), content_hash, now, who, reason, source_version))
        db.execute("INSERT INTO meta VALUES ('active_version', ?) ON CONFLICT (key) DO "
                   "UPDATE SET value = excluded.value", (str(version),))
        action = "rollback" if source_version is not None else "activate"
        self._audit(db, who, action, f"version/{version}", reason,
                    None if source_version is None else {"version": source_version},
                    {"version": version, "hash": content_hash}, "ok")
        return version

    def versions(self) -> list[dict[str, Any]]:
        return [{"version": r["version"], "hash": r["hash"], "created_at": r["created_at"],
                 "who": r["who"], "reason": r["reason"], "source_version": r["source_version"]}
                for r in self._db.execute("SELECT version, hash, created_at, who, reason, "
                                          "source_version FROM versions ORDER BY version DESC")]

    def version(self, number: int) -> dict[str, Any]:
        found = self._db.execute("SELECT * FROM versions WHERE version = ?",
                                 (number,)).fetchone()
        if found is None:
            raise NotFound(f"no version {number}")
        return {"version": number, "content": json.loads(found["content"]),
                "hash": found["hash"], "created_at": found["created_at"], "who": found["who"],
                "reason": found["reason"], "source_version": found["source_version"]}

    def active_version(self) -> int | None:
        found = self._db.execute("SELECT value FROM meta WHERE key = 'active_version'")
        row = found.fetchone()
        return int(row["value"]) if row else None

    def _identity(self) -> str:
        """This store's identity, made once (at creation, or the first open that lacks it)
        and carried by every snapshot: a node tells this store's versions from another's."""
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)",
                       (uuid.uuid4().hex,))
            return str(db.execute("SELECT value FROM meta WHERE key = 'store_id'"
                                  ).fetchone()["value"])

    def raise_push_version(self, floor: int) -> None:
        """The next snapshot version will be above ``floor`` (a node taken over runs it)."""
        with self._transaction() as db:
            db.execute("INSERT INTO meta VALUES ('push_version', ?) ON CONFLICT (key) DO "
                       "UPDATE SET value = max(CAST(value AS INTEGER), "
                       "CAST(excluded.value AS INTEGER))",
                       (str(floor),))

    def push_version(self) -> int:
        """The last snapshot version handed out (0 before the first)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'push_version'").fetchone()
        return int(row["value"]) if row else 0

    def next_push_version(self, count: int = 1) -> int:
        """The next snapshot version sent to nodes: monotonic across restarts.

        ``count`` versions are reserved and the last is returned: a publish that changes k
        groups leaves the k versions before it for the pusher's chain of pool deltas.
        """
        with self._transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'push_version'").fetchone()
            version = (int(row["value"]) if row else 0) + max(1, count)
            db.execute("INSERT INTO meta VALUES ('push_version', ?) ON CONFLICT (key) DO "
                       "UPDATE SET value = excluded.value", (str(version),))
        return version

    # -- audit -------------------------------------------------------------------------------

    @staticmethod
    def _audit(db: sqlite3.Connection, who: str, action: str, target: str, reason: str,
               before: Any, after: Any, result: str) -> None:
        db.execute("INSERT INTO audit (at, who, action, target, reason, before, after, result)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (time.time(), who, action, target, reason,
                    None if before is None else _dumps(without_secrets(before)),
                    None if after is None else _dumps(without_secrets(after)), result))

    def record(self, who: str, action: str, target: str, reason: str, before: Any = None,
               after: Any = None, result: str = "ok") -> None:
        """An audit row for something that is not a store change (a refused request)."""
        with self._transaction() as db:
            self._audit(db, who, action, target, reason, before, after, result)

    def audit(self, target: str | None = None, who: str | None = None,
              since: float | None = None, until: float | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM audit WHERE 1=1", []
        if target:
            # a literal, case-sensitive prefix (LIKE would fold case and treat _ as a wildcard)
            query += " AND substr(target, 1, ?) = ?"
            args += [len(target), target]
        if who:
            query += " AND who = ?"
            args.append(who)
        if since is not None:
            query += " AND at >= ?"
            args.append(since)
        if until is not None:
            query += " AND at <= ?"
            args.append(until)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return [{"id": r["id"], "at": r["at"], "who": r["who"], "action": r["action"],
                 "target": r["target"], "reason": r["reason"],
                 "before": json.loads(r["before"]) if r["before"] else None,
                 "after": json.loads(r["after"]) if r["after"] else None,
                 "result": r["result"]} for r in self._db.execute(query, args)]

    # -- web UI sessions (issue 10: one block; becomes its own migration with Alembic) ---------

    def session_put(self, record: SessionRecord) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (record.id_hash, record.name, record.role, record.csrf, record.created,
                        record.seen))

    def session_get(self, id_hash: str) -> SessionRecord | None:
        found = self._db.execute("SELECT * FROM sessions WHERE id_hash = ?", (id_hash,))
        row = found.fetchone()
        return None if row is None else SessionRecord(*row)

    def session_seen(self, id_hash: str, seen: float) -> None:
        with self._transaction() as db:
            db.execute("UPDATE sessions SET seen = ? WHERE id_hash = ?", (seen, id_hash))

    def session_delete(self, id_hash: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))

    def sessions_expire(self, seen_before: float, created_before: float) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE seen < ? OR created < ?",
                       (seen_before, created_before))


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A web UI session as stored: ``id_hash`` is sha256 of the cookie's value."""

    id_hash: str
    name: str
    role: str
    csrf: str
    created: float
    seen: float
