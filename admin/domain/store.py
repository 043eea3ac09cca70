"""The admin's store: SQLite or PostgreSQL, behind this one module.

Everything the admin keeps lives here: the draft objects (clusters, nodes, virtual servers,
routes, groups), member and server flags, the members last discovered from Consul, activated
versions, the push version counter, and the audit log. Each public method is one transaction,
and every change writes its audit row in the same transaction, so a change and its record
cannot part.

The tables are in ``admin.domain.tables`` and are queried with SQLAlchemy Core; the engine and
the migrations in ``admin.domain.migrate``. Opening a store migrates it to this code's schema
(and refuses a store migrated by a newer admin).

Objects are stored as JSON bodies with a ``row_version`` for optimistic locking: an update or
delete names the version it was made from, and a concurrent edit is refused (``Conflict``),
never silently merged. The same on both engines: a write transaction reads the row with
``FOR UPDATE`` (PostgreSQL locks it until commit; on SQLite the transaction began with
``BEGIN IMMEDIATE`` and holds the only write lock already), so nobody can change the row
between the version check and the write. Counters in ``meta`` (the active version, the push
version) are read and advanced the same way.

Every change also advances ``meta.generation`` in its transaction: several admins share one
store, and the leader, which alone pushes, polls this one number to learn that another admin
changed something (``admin.ha``).

A lost connection (PostgreSQL restarted) fails the operation with ``StoreUnavailable`` (503):
its transaction was rolled back, so nothing is half applied, and the next operation gets a
fresh connection.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from admin.domain import tables as t
from admin.domain.errors import Conflict, NotFound, StoreUnavailable
from admin.domain.memory import SharedJson
from admin.domain.migrate import ensure_current, open_engine
from admin.domain.rows import Flag as Flag
from admin.domain.rows import Row, audit_row, dumps, replaced
from admin.domain.store_audit import AuditLog
from admin.domain.store_draft import DraftReader
from admin.domain.store_sessions import SessionRecord as SessionRecord
from admin.domain.store_sessions import SessionStore
from admin.domain.version_cache import VersionCache

# own changes remembered for the leader's poll (admin.ha); far more than one poll period sees
OWN_GENERATIONS = 4096


def _kind(kind: str) -> str:
    return kind.replace("_", " ")


class Store(SessionStore, AuditLog, DraftReader):
    def __init__(self, target: str | Path) -> None:
        """``target``: a database URL, or an SQLite file path (created with its directory)."""
        self.path = str(target)
        self.engine = open_engine(self.path)
        self.dialect = self.engine.dialect.name
        # one writer per process at a time: SQLite allows one anyway, and it keeps the
        # PostgreSQL pool from growing under a burst of writes from the event loop's threads
        self._lock = threading.RLock()
        # generations this process wrote, not yet seen by ``foreign_changes``
        self._own_generations: set[int] = set()
        self._versions = VersionCache()  # parsed versions, bounded
        try:
            with self._errors():
                ensure_current(self.engine)  # (Alembic only if it must migrate)
            self.identity = self._identity()
        except BaseException:
            self.engine.dispose()  # a refused store leaves no connection behind
            raise

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions --------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as exc:
            # a lost or refused connection; not a constraint or a bug in a statement
            if not (exc.connection_invalidated
                    or isinstance(exc, OperationalError | InterfaceError)):
                raise
            detail = (str(exc.orig).strip().splitlines() or ["no detail"])[0]
            raise StoreUnavailable(f"the store is unavailable, nothing was changed: "
                                   f"{detail}") from None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self._lock, self._errors(), \
                self.engine.connect().execution_options(write=True) as conn, conn.begin():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._errors(), self.engine.connect() as conn:
            yield conn

    def _upsert(self, conn: Connection, table: Any, values: dict[str, Any] | list[dict[str, Any]],
                keys: list[str], changes: dict[str, Any] | None = None) -> None:
        """INSERT ... ON CONFLICT (keys) DO UPDATE: the same statement on both engines; a
        list of rows (same columns) is one statement executed for all of them.

        ``changes`` defaults to every non-key column taking the inserted value."""
        rows = values if isinstance(values, list) else [values]
        if not rows:
            return
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        stmt = dialect.insert(table)
        if changes is None:
            changes = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changes)
        if isinstance(values, list):
            conn.execute(stmt, rows)
        else:
            conn.execute(stmt.values(**values))

    def _meta_for_update(self, conn: Connection, key: str) -> str | None:
        """A ``meta`` value, its row locked until commit (made first if missing, so that there
        is a row to lock: two first transactions must not both see "none")."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        conn.execute(dialect.insert(t.meta).values(key=key, value="")
                     .on_conflict_do_nothing(index_elements=["key"]))
        value = conn.execute(select(t.meta.c.value).where(t.meta.c.key == key)
                             .with_for_update()).scalar_one()
        return value or None

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        self._upsert(conn, t.meta, {"key": key, "value": value}, ["key"])

    # -- draft objects -----------------------------------------------------------------------

    def objects(self, kind: str) -> list[Row]:
        with self._read() as conn:
            found = conn.execute(select(t.objects).where(t.objects.c.kind == kind)
                                 .order_by(t.objects.c.name))
            return [self._row(r) for r in found]

    def get(self, kind: str, name: str) -> Row:
        with self._read() as conn:
            found = conn.execute(select(t.objects).where(t.objects.c.kind == kind,
                                                         t.objects.c.name == name)).first()
        if found is None:
            raise NotFound(f"no {_kind(kind)} named {name!r}")
        return self._row(found)

    def find(self, kind: str, name: str) -> Row | None:
        try:
            return self.get(kind, name)
        except NotFound:
            return None

    def create(self, kind: str, name: str, body: dict[str, Any], who: str, reason: str) -> Row:
        now = time.time()
        taken = Conflict(f"a {_kind(kind)} named {name!r} already exists")
        try:
            with self._transaction() as conn:
                if conn.execute(select(t.objects.c.name).where(
                        t.objects.c.kind == kind, t.objects.c.name == name)).first():
                    raise taken
                conn.execute(insert(t.objects).values(
                    kind=kind, name=name, body=dumps(body), row_version=1, updated_at=now,
                    updated_by=who))
                self._audit(conn, who, f"create {kind}", f"{kind}/{name}", reason, None, body,
                            "ok")
        except IntegrityError:
            # another admin inserted the same name between our check and our insert
            raise taken from None
        return Row(kind, name, body, 1, now, who)

    def update(self, kind: str, name: str, body: dict[str, Any], expected_version: int,
               who: str, reason: str) -> Row:
        now = time.time()
        with self._transaction() as conn:
            before = self._locked_row(conn, kind, name, expected_version)
            conn.execute(update(t.objects)
                         .where(t.objects.c.kind == kind, t.objects.c.name == name)
                         .values(body=dumps(body), row_version=t.objects.c.row_version + 1,
                                 updated_at=now, updated_by=who))
            self._audit(conn, who, f"update {kind}", f"{kind}/{name}", reason, before.body,
                        body, "ok")
        return Row(kind, name, body, before.row_version + 1, now, who)

    def delete(self, kind: str, name: str, expected_version: int | None, who: str,
               reason: str) -> None:
        with self._transaction() as conn:
            before = self._locked_row(conn, kind, name, expected_version)
            conn.execute(delete(t.objects).where(t.objects.c.kind == kind,
                                                 t.objects.c.name == name))
            self._audit(conn, who, f"delete {kind}", f"{kind}/{name}", reason, before.body,
                        None, "ok")

    def _locked_row(self, conn: Connection, kind: str, name: str,
                    expected_version: int | None) -> Row:
        found = conn.execute(select(t.objects).where(t.objects.c.kind == kind,
                                                     t.objects.c.name == name)
                             .with_for_update()).first()
        if found is None:
            raise NotFound(f"no {_kind(kind)} named {name!r}")
        row = self._row(found)
        if expected_version is not None and row.row_version != expected_version:
            raise Conflict(f"{_kind(kind)} {name!r} was changed meanwhile: it is at "
                           f"row_version {row.row_version}, not {expected_version}")
        return row

    @staticmethod
    def _row(found: Any) -> Row:
        return Row(found.kind, found.name, json.loads(found.body), found.row_version,
                   found.updated_at, found.updated_by)

    def rollback(self, content: dict[str, list[dict[str, Any]]],
                 draft: dict[str, list[dict[str, Any]]], content_hash: str,
                 source_version: int, who: str, reason: str) -> int:
        """Activate ``content`` as a new version and make the draft ``draft``, in one
        transaction.

        Row versions keep growing (an edit made before the rollback stays stale), and every
        object the rollback adds, changes or removes gets its audit row.
        """
        now = time.time()
        result = f"rollback to version {source_version}"
        with self._transaction() as conn:
            current = {(r.kind, r.name): self._row(r)
                       for r in conn.execute(select(t.objects).with_for_update())}
            wanted = {(kind, body["name"]): body for kind, bodies in draft.items()
                      for body in bodies}
            for key, row in current.items():
                if key not in wanted:
                    conn.execute(delete(t.objects).where(t.objects.c.kind == key[0],
                                                         t.objects.c.name == key[1]))
                    self._audit(conn, who, f"delete {key[0]}", f"{key[0]}/{key[1]}", reason,
                                row.body, None, result)
            for key, body in wanted.items():
                row = current.get(key)
                if row is not None and row.body == body:
                    continue
                values = {"kind": key[0], "name": key[1], "body": dumps(body),
                          "row_version": 1, "updated_at": now, "updated_by": who}
                self._upsert(conn, t.objects, values, ["kind", "name"], {
                    "body": values["body"], "row_version": t.objects.c.row_version + 1,
                    "updated_at": now, "updated_by": who})
                self._audit(conn, who, f"{'update' if row else 'create'} {key[0]}",
                            f"{key[0]}/{key[1]}", reason, row.body if row else None, body,
                            result)
            record = self._add_version(conn, content, content_hash, who, reason,
                                       source_version)
        return self._versions.put(record)

    # -- flags -------------------------------------------------------------------------------

    def member_flags(self, groups: str | Collection[str] | None = None
                     ) -> dict[tuple[str, str], dict[str, Flag]]:
        """(group, address) -> flag name -> Flag, of one group, some groups, or all."""
        query = select(t.member_flags)
        if isinstance(groups, str):
            query = query.where(t.member_flags.c.group_name == groups)
        elif groups is not None:
            query = query.where(t.member_flags.c.group_name.in_(sorted(groups)))
        out: dict[tuple[str, str], dict[str, Flag]] = {}
        with self._read() as conn:
            for r in conn.execute(query):
                out.setdefault((r.group_name, r.address), {})[r.flag] = Flag(
                    bool(r.value), r.who, r.at, r.why)
        return out

    def server_flags(self) -> dict[str, Flag]:
        with self._read() as conn:
            return {r.ip: Flag(bool(r.value), r.who, r.at, r.why)
                    for r in conn.execute(select(t.server_flags))}

    def set_member_flags(self, changes: list[tuple[str, str, str, bool]], who: str, why: str,
                         action: str) -> list[dict[str, Any]]:
        """Set (group, address, flag, value) rows in one transaction; returns the changes."""
        return self.set_flags([(*change, action) for change in changes], [], who, why)

    def set_server_flag(self, ip: str, value: bool, who: str, why: str) -> None:
        self.set_flags([], [(ip, value)], who, why)

    def set_flags(self, members: list[tuple[str, str, str, bool, str]],
                  servers: list[tuple[str, bool]], who: str, why: str
                  ) -> list[dict[str, Any]]:
        """Member flags (group, address, flag, value, audit action) and server flags (ip,
        value), all in ONE transaction with an audit row each (a batch is all or nothing);
        returns the member changes. A few statements whatever the count: the rows the
        change replaces are read (and locked) together, the final value of each flag written
        together (a flag set twice in one batch is written once, audited twice)."""
        now = time.time()
        c, s = t.member_flags.c, t.server_flags.c
        with self._transaction() as conn:
            old = {(r.group_name, r.address, r.flag): r for r in conn.execute(
                select(t.member_flags).where(c.group_name.in_({m[0] for m in members}))
                .with_for_update())} if members else {}
            before, final = replaced(old, [(m[:3], m[3]) for m in members], who, why)
            self._upsert(conn, t.member_flags, [
                {"group_name": group, "address": address, "flag": flag, "value": int(value),
                 "who": who, "at": now, "why": why}
                for (group, address, flag), value in final.items()],
                ["group_name", "address", "flag"])
            audit = [audit_row(who, action, f"member/{group}/{address}", why, was,
                               {"value": value, "who": who, "why": why}, "ok")
                     for (group, address, flag, value, action), was in zip(members, before,
                                                                           strict=True)]
            old_ip = {r.ip: r for r in conn.execute(
                select(t.server_flags).where(s.ip.in_({ip for ip, _ in servers}))
                .with_for_update())} if servers else {}
            before, final_ip = replaced(old_ip, servers, who, why)
            self._upsert(conn, t.server_flags, [
                {"ip": ip, "value": int(value), "who": who, "at": now, "why": why}
                for ip, value in final_ip.items()], ["ip"])
            audit += [audit_row(who, "server up" if value else "server down", f"server/{ip}",
                                why, was, {"value": value, "who": who, "why": why}, "ok")
                      for (ip, value), was in zip(servers, before, strict=True)]
            self._audit_rows(conn, audit)
        return [{"group": group, "address": address, "flag": flag, "value": value}
                for group, address, flag, value, _ in members]

    # -- members discovered from Consul (last known, kept across restarts) ---------------------

    def save_discovered(self, group: str, members: list[dict[str, Any]]) -> None:
        with self._transaction() as conn:
            self._upsert(conn, t.discovered, {"group_name": group, "members": dumps(members),
                                              "at": time.time()}, ["group_name"])

    def discovered(self) -> dict[str, list[dict[str, Any]]]:
        with self._read() as conn:
            return {r.group_name: json.loads(r.members)
                    for r in conn.execute(select(t.discovered))}

    # -- versions ----------------------------------------------------------------------------

    def add_version(self, content: dict[str, Any], content_hash: str, who: str, reason: str,
                    source_version: int | None = None, text: str | None = None) -> int:
        """Store ``content`` as the next version, now active. ``content`` is kept as that
        version's parsed content (it is the one every publish reads next): the caller hands
        it over and never changes it. ``text``: ``dumps(content)``, if the caller made it."""
        with self._transaction() as conn:
            record = self._add_version(conn, content, content_hash, who, reason,
                                       source_version, text)
        return self._versions.put(record)

    def _add_version(self, conn: Connection, content: dict[str, Any], content_hash: str,
                     who: str, reason: str, source_version: int | None,
                     text: str | None = None) -> dict[str, Any]:
        now = time.time()
        self._meta_for_update(conn, "active_version")  # two activations number one by one
        last = conn.execute(select(func.max(t.versions.c.version))).scalar() or 0
        version = last + 1
        # the values as parameters, not in the statement: SQLAlchemy's statement cache keeps
        # the first statement of each shape, and with it a content of megabytes for good
        conn.execute(insert(t.versions), {
            "version": version, "content": dumps(content) if text is None else text,
            "hash": content_hash,
            "created_at": now, "who": who, "reason": reason, "source_version": source_version})
        self._set_meta(conn, "active_version", str(version))
        action = "rollback" if source_version is not None else "activate"
        self._audit(conn, who, action, f"version/{version}", reason,
                    None if source_version is None else {"version": source_version},
                    {"version": version, "hash": content_hash}, "ok")
        return {"version": version, "content": content, "hash": content_hash,
                "created_at": now, "who": who, "reason": reason,
                "source_version": source_version}

    def versions(self) -> list[dict[str, Any]]:
        v = t.versions.c
        with self._read() as conn:
            return [{"version": r.version, "hash": r.hash, "created_at": r.created_at,
                     "who": r.who, "reason": r.reason, "source_version": r.source_version}
                    for r in conn.execute(select(v.version, v.hash, v.created_at, v.who,
                                                 v.reason, v.source_version)
                                          .order_by(v.version.desc()))]

    def version(self, number: int) -> dict[str, Any]:
        """Version ``number``. Its ``content`` is shared with other callers: read, never
        change it (``admin.domain.version_cache``: the active one is kept parsed, any other
        is parsed for this caller alone)."""
        cached = self._versions.get(number)
        if cached is not None:
            return dict(cached)
        with self._read() as conn:
            found = conn.execute(select(t.versions).where(t.versions.c.version == number)
                                 ).first()
            active = conn.execute(select(t.meta.c.value).where(t.meta.c.key == "active_version")
                                  ).scalar()
        if found is None:
            raise NotFound(f"no version {number}")
        version = {"version": number, "content": SharedJson().loads(found.content),  # (shared)
                   "hash": found.hash, "created_at": found.created_at, "who": found.who,
                   "reason": found.reason, "source_version": found.source_version}
        if active == str(number):
            self._versions.put(version)
        return dict(version)

    def active_version(self) -> int | None:
        value = self._meta("active_version")
        return int(value) if value else None

    def _meta(self, key: str) -> str | None:
        with self._read() as conn:
            return conn.execute(select(t.meta.c.value).where(t.meta.c.key == key)).scalar()

    def _identity(self) -> str:
        """This store's identity, made once (at creation, or the first open that lacks it)
        and carried by every snapshot: a node tells this store's versions from another's."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        with self._transaction() as conn:
            conn.execute(dialect.insert(t.meta).values(key="store_id", value=uuid.uuid4().hex)
                         .on_conflict_do_nothing(index_elements=["key"]))
            return str(conn.execute(select(t.meta.c.value).where(t.meta.c.key == "store_id")
                                    ).scalar_one())

    def raise_push_version(self, floor: int) -> None:
        """The next snapshot version will be above ``floor`` (a node taken over runs it)."""
        with self._transaction() as conn:
            current = int(self._meta_for_update(conn, "push_version") or 0)
            self._set_meta(conn, "push_version", str(max(current, floor)))

    def push_version(self) -> int:
        """The last snapshot version handed out (0 before the first)."""
        return int(self._meta("push_version") or 0)

    def next_push_version(self, count: int = 1) -> int:
        """The next snapshot version sent to nodes: monotonic across restarts.

        ``count`` versions are reserved and the last is returned: a publish that changes k
        groups leaves the k versions before it for the pusher's chain of pool deltas.
        """
        with self._transaction() as conn:
            version = int(self._meta_for_update(conn, "push_version") or 0) + max(1, count)
            self._set_meta(conn, "push_version", str(version))
        return version

    def generation(self) -> int:
        """How many changes the store has had: a leader re-reads the store when it grows."""
        return int(self._meta("generation") or 0)

    def foreign_changes(self, seen: int) -> tuple[int, bool]:
        """(the generation now, whether another process changed the store since ``seen``).

        The leader asks this on a short period: its own changes it has published already;
        another admin's it must publish (``admin.ha``)."""
        now = self.generation()
        new = set(range(seen + 1, now + 1))
        foreign = bool(new - self._own_generations)
        self._own_generations -= {g for g in self._own_generations if g <= now}
        return now, foreign

    # -- leadership (admin.ha) ---------------------------------------------------------------

    def take_leadership(self, admin: str, address: str) -> dict[str, Any]:
        """Record that ``admin`` leads from now, under a new term (one more than any before);
        the term fences its pushes (a node refuses an older term)."""
        with self._transaction() as conn:
            term = int(self._meta_for_update(conn, "term") or 0) + 1
            self._set_meta(conn, "term", str(term))
            leader = {"admin": admin, "address": address, "since": time.time(), "term": term}
            # not an audit row: no one changed the configuration (the log says it)
            self._set_meta(conn, "leader", dumps(leader))
        return leader

    def leader(self) -> dict[str, Any] | None:
        """The last admin that took the lead: admin, address, since, term."""
        value = self._meta("leader")
        return json.loads(value) if value else None

    # -- audit -------------------------------------------------------------------------------

    def _audit(self, conn: Connection, who: str, action: str, target: str, reason: str,
               before: Any, after: Any, result: str, change: bool = True) -> None:
        self._audit_rows(conn, [audit_row(who, action, target, reason, before, after,
                                           result)], change)

    def _audit_rows(self, conn: Connection, rows: list[dict[str, Any]], change: bool = True
                    ) -> None:
        """Audit rows, in one statement; ``change``: they record a change to the store (the
        generation advances once, however many rows)."""
        if not rows:
            return
        conn.execute(insert(t.audit), rows)
        if change:
            # the generation row is locked until commit: changes are counted one by one
            generation = int(self._meta_for_update(conn, "generation") or 0) + 1
            self._set_meta(conn, "generation", str(generation))
            self._own_generations.add(generation)  # kept even on rollback: then never seen
            if len(self._own_generations) > OWN_GENERATIONS:  # a follower never prunes
                self._own_generations.discard(min(self._own_generations))
