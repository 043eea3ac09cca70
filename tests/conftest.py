"""Test set-up shared by every suite: uvloop as the event loop, and the support factories.

Real sockets on 127.0.0.1 only: backends are real HTTP servers started by the tests, the proxy
runs in-process on the same loop (integration) or as a process (e2e).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from tests.consul_double import ConsulDouble
from tests.support.backends import Backend, start_backend
from tests.support.postgres import PostgresServer
from tests.support.proxy import RunningProxy, start_proxy


@pytest.fixture(autouse=True)
def _no_consul_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-consul lets CONSUL_HTTP_TOKEN beat token= (and reads CONSUL_HTTP_ADDR): a developer's
    shell must not change what the tests talk to."""
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR", "CONSUL_HTTP_SSL",
                 "CONSUL_HTTP_SSL_VERIFY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def double() -> AsyncIterator[ConsulDouble]:
    """A Consul HTTP API double on this loop (tests/consul_double)."""
    started = await ConsulDouble.start()
    yield started
    await started.close()


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture
async def backend_factory() -> AsyncIterator[Callable[..., Any]]:
    """``await backend_factory(handler=None, name=...)`` starts a real HTTP backend."""
    started: list[Backend] = []

    async def make(**kwargs: Any) -> Backend:
        backend = await start_backend(**kwargs)
        started.append(backend)
        return backend

    yield make
    for backend in started:
        await backend.close()


@pytest.fixture
async def proxy_factory() -> AsyncIterator[Callable[..., Any]]:
    """``await proxy_factory(config_dict)`` runs a ProxyServer in this loop."""
    started: list[RunningProxy] = []

    async def make(config: dict[str, Any]) -> RunningProxy:
        proxy = await start_proxy(config)
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()


# -- the admin's store on both engines ------------------------------------------------------------
#
# A test that takes ``store_target`` runs once per engine in ``--store-engines`` (default both):
# an SQLite file in its tmp_path, or a fresh database on the session's PostgreSQL server
# (tests/support/postgres.py), started on first use and stopped at the end of the session.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store-engines", default="sqlite,postgresql",
                     help="the admin store engines the admin tests run against "
                          "(comma-separated: sqlite, postgresql)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "store_engines(*names): run only on these store "
                                       "engines (a test of one engine's behaviour)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_engine" in metafunc.fixturenames:
        engines = [e.strip() for e in metafunc.config.getoption("store_engines").split(",")
                   if e.strip()]
        unknown = set(engines) - {"sqlite", "postgresql"}
        if unknown or not engines:
            raise pytest.UsageError(f"--store-engines: unknown engine(s) {sorted(unknown)}; "
                                    "use sqlite and/or postgresql")
        only = metafunc.definition.get_closest_marker("store_engines")
        if only is not None:
            engines = [e for e in engines if e in only.args]
        metafunc.parametrize("store_engine", engines)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture
def store_target(store_engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where this test's admin store is: an SQLite path or a PostgreSQL database URL."""
    if store_engine == "sqlite":
        return str(tmp_path / "var" / "admin.db")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.database()
