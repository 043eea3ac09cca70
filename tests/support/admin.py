"""The admin in-process for integration tests: real uvicorn server, a fresh store, real nodes.

``admin_factory(seed=..., store=...)`` runs ``admin.main.Admin`` on a kernel-chosen port with
one token per role (``vera`` viewer, ``otto`` operator, ``ada`` admin) and gives an
``httpx.AsyncClient`` per role. ``node_factory(name)`` runs an admin-managed proxy node (control
API with ``NODE_TOKEN``, its own ``state_dir``) that serves nothing until the admin pushes.
``site_factory(groups, routes)`` puts both together as most admin tests start: backends ``a``
and ``b``, node ``n1``, an admin seeded with them, the node converged.
Admins close before nodes (the admin fixture depends on the node fixture), so no pusher is left
talking to a closed node.

Use the fixtures from a test module with ``pytest_plugins = ["tests.support.admin"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin.main import Admin
from admin.settings import AdminConfig
from tests.support.backends import Backend
from tests.support.client import request
from tests.support.proxy import RunningProxy, start_proxy

NODE_TOKEN = "node-token-0123"
LISTEN = "127.0.0.1:0"
HOST = "site.test"
ROLES = ("viewer", "operator", "admin")
TOKENS = {"viewer": "viewer-token-0123", "operator": "operator-token-0123",
          "admin": "admin-token-0123"}
NAMES = {"viewer": "vera", "operator": "otto", "admin": "ada"}


@dataclass
class RunningAdmin:
    admin: Admin
    store_path: str
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    closed: bool = False

    @property
    def port(self) -> int:
        return self.admin.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, role: str = "admin") -> httpx.AsyncClient:
        """A client sending ``role``'s token (``"none"``: no Authorization header)."""
        found = self.clients.get(role)
        if found is None:
            headers = {} if role == "none" else {"Authorization": f"Bearer {TOKENS[role]}"}
            found = self.clients[role] = httpx.AsyncClient(base_url=self.url, headers=headers,
                                                           timeout=5.0)
        return found

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()
        await self.admin.close()


class AdminClients:
    """Mixed into a test's site dataclass with an ``admin`` field: a client per role and the
    admin's view of groups."""

    admin: RunningAdmin

    @property
    def viewer(self) -> httpx.AsyncClient:
        return self.admin.client("viewer")

    @property
    def operator(self) -> httpx.AsyncClient:
        return self.admin.client("operator")

    @property
    def ada(self) -> httpx.AsyncClient:
        return self.admin.client("admin")

    async def group(self, name: str = "web") -> dict[str, Any]:
        reply = await self.viewer.get(f"/api/v1/groups/{name}")
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    async def find_member(self, group: str, address: str) -> dict[str, Any] | None:
        view = await self.group(group)
        return next((m for m in view["members"] if m["address"] == address), None)

    async def member(self, group: str, address: str) -> dict[str, Any]:
        found = await self.find_member(group, address)
        assert found is not None, f"{address} is not a member of {group}"
        return found


@dataclass
class NodeSite(AdminClients):
    """An admin, the node ``n1`` it pushes to, and backends ``a`` and ``b``."""

    admin: RunningAdmin
    node: RunningProxy
    a: Backend
    b: Backend

    @contextlib.asynccontextmanager
    async def node_applies(self) -> AsyncIterator[None]:
        """Around a change: on leaving, wait until the node applied a newer version and the
        admin reports every node in sync."""
        before = applied_version(self.node)
        yield
        await converge(self.admin, self.node, after=before)


def admin_config(store: str, seed: dict[str, Any] | None = None, **settings: Any
                 ) -> AdminConfig:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0", "store": store,
        "tokens": [{"name": NAMES[role], "token": TOKENS[role], "role": role}
                   for role in ROLES],
        **settings,
    }
    if seed is not None:
        data["seed"] = seed
    return AdminConfig.model_validate(data)


def node_body(name: str, proxy: RunningProxy, cluster: str = "c1") -> dict[str, Any]:
    return {"name": name, "cluster": cluster,
            "control_url": f"http://127.0.0.1:{proxy.control_port}", "token": NODE_TOKEN}


def site_seed(nodes: dict[str, RunningProxy], groups: dict[str, list[str]],
              routes: dict[str, str] | None = None) -> dict[str, Any]:
    """Cluster ``c1`` with ``nodes``; virtual server ``site`` (default on LISTEN, ``HOST``);
    ``routes`` maps a path prefix to a group (default: ``/`` to the first group)."""
    routes = routes or {"/": next(iter(groups))}
    return {
        "clusters": [{"name": "c1"}],
        "nodes": [node_body(name, proxy) for name, proxy in nodes.items()],
        "groups": [{"name": name, "members": [{"address": a} for a in members]}
                   for name, members in groups.items()],
        "virtual_servers": [{"name": "site", "cluster": "c1", "listen": LISTEN,
                             "domains": [HOST], "default": True}],
        "routes": [{"name": f"r{i}", "virtual_server": "site", "path": path, "group": group}
                   for i, (path, group) in enumerate(routes.items())],
    }


async def wait_until(predicate: Callable[[], Any], timeout: float = 3.0,
                     what: str = "condition") -> None:
    """Poll ``predicate`` (sync or async) every 10 ms until it is truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def applied_version(proxy: RunningProxy) -> int:
    return proxy.node.config.version


async def nodes_in_sync(client: httpx.AsyncClient) -> bool:
    items = (await client.get("/api/v1/nodes")).json()["items"]
    return bool(items) and all(i["in_sync"] and i["lag"] == 0 for i in items)


async def converge(admin: RunningAdmin, *proxies: RunningProxy, after: int) -> None:
    """Wait until every proxy applied a version newer than ``after`` and the admin reports
    every node in sync (the change has been published and applied)."""
    await wait_until(lambda: all(applied_version(p) > after for p in proxies),
                     what=f"nodes to apply a version after {after}")
    await wait_until(lambda: nodes_in_sync(admin.client("viewer")), what="nodes in sync")


async def served_by(proxy: RunningProxy, count: int = 4, path: str = "/",
                    host: str = HOST) -> list[str]:
    """Which backend answered each of ``count`` requests (the first word of the body), or
    ``"<status>"`` for a response that is not a 200."""
    port = proxy.port_of(LISTEN)
    out = []
    for _ in range(count):
        response = await request(port, "GET", path, host=host, timeout=5.0)
        out.append(response.body.split(b" ", 1)[0].decode() if response.status == 200
                   else str(response.status))
    return out


NodeFactory = Callable[..., Awaitable[RunningProxy]]
AdminFactory = Callable[..., Awaitable[RunningAdmin]]


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """``await node_factory("n1")``: an admin-managed node with a token and a state_dir."""
    started: list[RunningProxy] = []

    async def make(name: str = "n1") -> RunningProxy:
        proxy = await start_proxy({"control": {"listen": "127.0.0.1:0", "token": NODE_TOKEN},
                                   "state_dir": str(tmp_path / "nodes" / name)})
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        await proxy.close()


@pytest.fixture
async def admin_factory(store_target: str, node_factory: NodeFactory
                        ) -> AsyncIterator[AdminFactory]:
    """``await admin_factory(seed=None, store=None, **settings)``: a started admin.

    The store defaults to the test's ``store_target`` (an SQLite file in tmp_path, or a fresh
    PostgreSQL database: the test runs once on each engine), so a second admin started by the
    same test (after ``await first.close()``) reopens the same store, as a restart would.
    """
    started: list[RunningAdmin] = []

    async def make(seed: dict[str, Any] | None = None, store: str | None = None,
                   **settings: Any) -> RunningAdmin:
        path = store or store_target
        admin = Admin(admin_config(path, seed, **settings))
        running = RunningAdmin(admin, path)
        started.append(running)
        await admin.start()
        return running

    yield make
    for running in reversed(started):
        await running.close()


SiteFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
def site_factory(backend_factory: Callable[..., Awaitable[Backend]], node_factory: NodeFactory,
                 admin_factory: AdminFactory) -> SiteFactory:
    """``await site_factory(groups, routes=None, make=NodeSite, a_handler=None,
    group_settings=None, **admin_settings)``: backends ``a`` (answering with ``a_handler``)
    and ``b``, node ``n1``, and an admin seeded by ``site_seed`` with ``groups`` (members named
    by backend: ``{"web": ["a", "b"]}``, each group given ``group_settings``) and ``routes``,
    once the node applied the seed; ``make(admin, node, a, b)`` is the site returned."""

    async def make_site(groups: dict[str, list[str]], routes: dict[str, str] | None = None,
                        make: Callable[[RunningAdmin, RunningProxy, Backend, Backend], Any]
                        = NodeSite, a_handler: Any = None,
                        group_settings: dict[str, Any] | None = None,
                        **admin_settings: Any) -> Any:
        a = await backend_factory(name="a", handler=a_handler)
        b = await backend_factory(name="b")
        node = await node_factory("n1")
        named = {"a": a.address, "b": b.address}
        seed = site_seed({"n1": node}, {group: [named[m] for m in members]
                                        for group, members in groups.items()}, routes)
        for group in seed["groups"]:
            group.update(group_settings or {})
        admin = await admin_factory(seed=seed, **admin_settings)
        await converge(admin, node, after=0)
        return make(admin, node, a, b)

    return make_site
