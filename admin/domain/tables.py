"""The admin store's schema: every table, in one place, for SQLite and PostgreSQL alike.

The store (``admin.domain.store``) queries these ``Table`` objects through SQLAlchemy Core, and
the Alembic migrations (``admin/migrations/versions``) create and change them; the types are
the portable ones (text, integer, double), so one schema and one set of migrations serve both
engines. A new table is added here and by one new migration file.

Bodies and audit snapshots are JSON text, not a JSON column type: the store compares and
hashes them as the admin wrote them, and SQLite and PostgreSQL then hold the same bytes.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

objects = Table(
    "objects", metadata,
    Column("kind", String, primary_key=True),
    Column("name", String, primary_key=True),
    Column("body", Text, nullable=False),
    Column("row_version", Integer, nullable=False, server_default="1"),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String),
)

member_flags = Table(
    "member_flags", metadata,
    Column("group_name", String, primary_key=True),
    Column("address", String, primary_key=True),
    Column("flag", String, primary_key=True),
    Column("value", Integer, nullable=False),
    Column("who", String, nullable=False),
    Column("at", Float, nullable=False),
    Column("why", Text, nullable=False),
)

server_flags = Table(
    "server_flags", metadata,
    Column("ip", String, primary_key=True),
    Column("value", Integer, nullable=False),
    Column("who", String, nullable=False),
    Column("at", Float, nullable=False),
    Column("why", Text, nullable=False),
)

discovered = Table(
    "discovered", metadata,
    Column("group_name", String, primary_key=True),
    Column("members", Text, nullable=False),
    Column("at", Float, nullable=False),
)

versions = Table(
    "versions", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("content", Text, nullable=False),
    Column("hash", String, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("who", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("source_version", Integer),
)

# Counters and single values: the active version, the push version, the change generation,
# the leader's term. Values are text; the store converts.
meta = Table(
    "meta", metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

audit = Table(
    "audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("who", String, nullable=False),
    Column("action", String, nullable=False),
    Column("target", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("before", Text),
    Column("after", Text),
    Column("result", Text, nullable=False),
    Index("audit_target", "target"),
    Index("audit_who", "who"),
    Index("audit_at", "at"),
    # SQLite: ids never reused, even after the newest row is deleted (as before Alembic)
    sqlite_autoincrement=True,
)

# web UI sessions (issue 10): only a hash of the session id is kept
sessions = Table(
    "sessions", metadata,
    Column("id_hash", String, primary_key=True),
    Column("name", String, nullable=False),
    Column("role", String, nullable=False),
    Column("csrf", String, nullable=False),
    Column("created", Float, nullable=False),
    Column("seen", Float, nullable=False),
)
