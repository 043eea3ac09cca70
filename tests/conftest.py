"""Test set-up shared by every suite: uvloop as the event loop, and the support factories.

Real sockets on 127.0.0.1 only: backends are real HTTP servers started by the tests, the proxy
runs in-process on the same loop (integration) or as a process (e2e).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop

from tests.consul_double import ConsulDouble
from tests.support.backends import Backend, start_backend
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
