"""Alembic's environment: migrate on the connection ``admin.domain.migrate`` passes in.

There is no alembic.ini and no URL here: the admin opens the store (with its own engine
settings) and gives Alembic the connection, already inside the transaction that also holds the
migration lock, so the schema change and the lock commit together.
"""

from __future__ import annotations

from alembic import context

from admin.domain.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  # SQLite cannot ALTER most things: batch mode rebuilds the table instead
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
