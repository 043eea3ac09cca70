"""Opening the store's database and bringing its schema to this code's revision.

A store is named by a URL (``sqlite:///var/admin.db``, ``postgresql://user@host/db``) or, as
before, by a plain SQLite file path. ``open_engine`` makes the SQLAlchemy engine with what each
engine needs:

- SQLite: WAL, ``BEGIN IMMEDIATE`` for a write transaction (the write lock is taken at the
  start, so two transactions cannot both read a row version and then both write it), a plain
  ``BEGIN`` for reads, and a busy timeout so that several admin processes on one file wait for
  each other instead of failing.
- PostgreSQL (psycopg 3): ``pool_pre_ping`` so that after a server restart the next operation
  gets a fresh connection instead of a dead one.

``migrate`` runs the Alembic migrations in ``admin/migrations`` up to the newest revision, in
one transaction; on PostgreSQL it first takes a transaction-scoped advisory lock, so that two
admins started at once migrate one after the other (the second finds nothing to do). A store
whose revision this code does not know was migrated by a newer admin: it is refused with
``StoreTooNew``, never opened and half understood. An SQLite store from before Alembic
(``PRAGMA user_version`` 1 or 2) is stamped at the matching revision, its tables kept.

Alembic is imported only when a store needs it (issue 15: the admin's memory). Loading it
brings Mako, and Mako's Pygments plugin: 8 MB of the admin's RSS for the rest of its life,
at every start, to learn that the store is already at this code's revision. So an admin
opening its store (``ensure_current``) first reads the ``alembic_version`` table itself and
compares it with ``HEAD``; only a store that is empty, older or newer (refused) goes through
Alembic. ``HEAD`` names the newest script in ``admin/migrations/versions``: a test checks it
against Alembic's own head, so a migration added without it fails there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from slb.errors import ConfigError

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

SCRIPTS = str(Path(__file__).resolve().parent.parent / "migrations")
MIGRATION_LOCK = 0x51B_AD317  # the advisory lock id two migrating admins serialise on
# the revision that matches each schema of the SQLite store before Alembic (user_version)
PRE_ALEMBIC = {1: "0001", 2: "0002"}
HEAD = "0002"  # the newest revision of admin/migrations/versions (tests check it is Alembic's)
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's write


class StoreTooNew(ConfigError):
    """The store was migrated by a newer admin than this one."""


def store_url(target: str) -> str:
    """The SQLAlchemy URL of a store named by URL or by SQLite path (``:memory:`` too)."""
    if "://" in target:
        return target
    if target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{target}"


def check_url(target: str) -> str | None:
    """Why ``target`` cannot name a store, or None: for ``slb check``-style validation."""
    try:
        url = make_url(target if "://" in target else f"sqlite:///{target}")
    except ArgumentError as exc:
        return f"not a database URL: {exc}"
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        return f"unsupported database {url.get_backend_name()!r}: use sqlite or postgresql"
    return None


def open_engine(target: str) -> Engine:
    url = make_url(store_url(target))
    if url.get_backend_name() == "postgresql":
        # psycopg 3 whatever driver the URL names (postgresql:// defaults to psycopg2)
        url = url.set(drivername="postgresql+psycopg")
        return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT,
                                              "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi: Any, _record: Any) -> None:
        dbapi.isolation_level = None  # the driver's own BEGIN off: the listener below begins
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi.execute(f"PRAGMA {pragma}")

    @event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    return config


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def code_revision() -> str:
    """The newest revision this code knows."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def store_revision(conn: Connection) -> str | None:
    """The store's revision; None for an empty store."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def check_revision(conn: Connection) -> str | None:
    """The store's revision, after refusing one this code does not know."""
    revision = store_revision(conn)
    if revision is not None and revision not in {s.revision for s in _scripts().walk_revisions()}:
        raise StoreTooNew([
            f"store: at schema revision {revision!r}, which this admin does not know (it knows "
            f"up to {code_revision()!r}): the store was migrated by a newer admin; run that "
            "version of the admin"])
    return revision


def ensure_current(engine: Engine) -> None:
    """``migrate`` unless the store is at ``HEAD`` already (read without Alembic)."""
    with engine.connect() as conn:
        current = (inspect(conn).has_table("alembic_version") and
                   conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all())
    if current != [HEAD]:
        migrate(engine)


def migrate(engine: Engine) -> tuple[str | None, str]:
    """Upgrade the store to this code's revision; (revision before, revision after)."""
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
        before = check_revision(conn)
        if before is None and conn.dialect.name == "sqlite":
            before = PRE_ALEMBIC.get(_pre_alembic(conn))
            if before is not None:
                _run(conn, "stamp", before)
        head = code_revision()
        if before != head:
            _run(conn, "upgrade", "head")
        return before, head


def _pre_alembic(conn: Connection) -> int:
    """The ``PRAGMA user_version`` of an SQLite store made before Alembic (0: none)."""
    version = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    return version if inspect(conn).has_table("objects") else 0


def _run(conn: Connection, command_name: str, revision: str) -> None:
    from alembic import command

    config = _config()
    config.attributes["connection"] = conn
    getattr(command, command_name)(config, revision)
