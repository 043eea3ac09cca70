"""A real PostgreSQL server for the tests, started by the test session in a temporary directory.

``PostgresServer.start()`` runs Debian's ``initdb`` and ``pg_ctl`` (the ``postgresql`` package,
installed by ``make system-deps``) on a fresh data directory, listening only on a Unix socket in
that directory, so no port is shared with anything else on the machine. PostgreSQL refuses to
run as root, and CI runs as root: then the server runs as the ``postgres`` user the package
creates. Durability is switched off (``fsync``, ``synchronous_commit``): the server is thrown
away at the end of the session, and the tests must not wait on a busy disk.

``database()`` makes a new, empty database and returns its URL: each test gets its own store.
``halt()`` stops the server (fast shutdown, which cuts every client connection, as a restarted
server would) and ``resume()`` starts it again on the same data.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

USER = "slb"  # the database superuser initdb makes (trust authentication on the socket)
SERVER_OPTIONS = ("-c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                  "-c full_page_writes=off -c max_connections=300")


class PostgresMissing(RuntimeError):
    pass


def bin_dir() -> Path:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, per major version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name))
    if not versions:
        raise PostgresMissing("PostgreSQL is not installed (initdb not found): run "
                              "`make system-deps`, or pass --store-engines=sqlite")
    return Path(versions[-1]).parent


@dataclass
class PostgresServer:
    directory: Path
    bin: Path
    _names: itertools.count = field(default_factory=itertools.count)

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def socket_dir(self) -> str:
        return str(self.directory)

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@/{database}?host={self.socket_dir}"

    @classmethod
    def start(cls) -> PostgresServer:
        server = cls(Path(tempfile.mkdtemp(prefix="slb-pg-")), bin_dir())
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(server.directory, owner.pw_uid, owner.pw_gid)
        server._run("initdb", "-D", str(server.data), "-A", "trust", "-U", USER,
                    "-E", "UTF8", "--no-sync", "--locale=C")
        server._pg_ctl("start")
        return server

    def _run(self, program: str, *args: str) -> None:
        user = "postgres" if os.geteuid() == 0 else None
        done = subprocess.run([str(self.bin / program), *args], user=user, cwd=self.directory,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}"
                               f"{done.stderr}")

    def _pg_ctl(self, action: str) -> None:
        args = ["-D", str(self.data), "-w", "-t", "60"]
        if action == "start":
            args += ["-l", str(self.directory / "server.log"),
                     "-o", f"{SERVER_OPTIONS} -k {self.socket_dir}"]
        if action in ("stop", "restart"):
            args += ["-m", "fast"]
        self._run("pg_ctl", action, *args)

    def halt(self) -> None:
        """Stop the server (fast shutdown: every client connection is cut)."""
        self._pg_ctl("stop")

    def resume(self) -> None:
        self._pg_ctl("start")

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"store_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(host=self.socket_dir, user=USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.directory, ignore_errors=True)
