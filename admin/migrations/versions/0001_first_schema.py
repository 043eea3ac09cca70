"""The first schema: draft objects, flags, discovered members, versions, meta, audit.

The same tables as the SQLite store before Alembic (``PRAGMA user_version`` 1); such a store is
stamped at this revision rather than created again.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "objects",
        sa.Column("kind", sa.String, primary_key=True),
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("row_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("updated_by", sa.String))
    op.create_table(
        "member_flags",
        sa.Column("group_name", sa.String, primary_key=True),
        sa.Column("address", sa.String, primary_key=True),
        sa.Column("flag", sa.String, primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("who", sa.String, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("why", sa.Text, nullable=False))
    op.create_table(
        "server_flags",
        sa.Column("ip", sa.String, primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
        sa.Column("who", sa.String, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("why", sa.Text, nullable=False))
    op.create_table(
        "discovered",
        sa.Column("group_name", sa.String, primary_key=True),
        sa.Column("members", sa.Text, nullable=False),
        sa.Column("at", sa.Float, nullable=False))
    op.create_table(
        "versions",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("hash", sa.String, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("who", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source_version", sa.Integer))
    op.create_table(
        "meta",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("who", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("target", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("before", sa.Text),
        sa.Column("after", sa.Text),
        sa.Column("result", sa.Text, nullable=False),
        sqlite_autoincrement=True)
    op.create_index("audit_target", "audit", ["target"])
    op.create_index("audit_who", "audit", ["who"])
    op.create_index("audit_at", "audit", ["at"])


def downgrade() -> None:
    for table in ("audit", "meta", "versions", "discovered", "server_flags", "member_flags",
                  "objects"):
        op.drop_table(table)
