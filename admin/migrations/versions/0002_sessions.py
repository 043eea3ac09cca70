"""Web UI sessions (issue 10), so a restart logs nobody out and a logout ends the session for
every admin sharing the store.

The SQLite store of ``PRAGMA user_version`` 2 (before Alembic) has this table already and is
stamped at this revision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id_hash", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("csrf", sa.String, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("seen", sa.Float, nullable=False))


def downgrade() -> None:
    op.drop_table("sessions")
