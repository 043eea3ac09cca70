"""Alembic migrations of the admin's store (run by ``admin.domain.migrate``, never by hand).

``env.py`` runs on the connection the admin hands it; ``versions/`` holds one file per schema
change, each written with portable operations so that SQLite and PostgreSQL follow the same
history.
"""
