"""The whole system as processes: Consul double, ``slb-admin``, two ``slb proxy`` nodes.

- ``python -m tests.consul_double --port 0`` (driven through its ``/_double/`` control API);
- ``python -m admin -c admin.yaml`` (``slb-admin``) with ``consul: {address, wait: 2}``, a seed with
  cluster ``c1``, nodes ``n1``/``n2``, group ``web`` from Consul service ``web``, and virtual
  server ``site`` on one port;
- two admin-managed nodes ``python -m slb proxy -c nN.yaml --workers 1`` (control API with a
  token, a ``state_dir`` each). Both bind the site's port with SO_REUSEPORT, so a request may
  land on either: which node applied what is read from each node's ``/v1/status`` (member state
  and per-member request counts).

The backends run on the test's loop. Every process is stopped in ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.consul_double import DoubleProcess, start_process
from tests.e2e.conftest import REPO, admin_command, slb_command, write_config
from tests.support.backends import Backend, free_port
from tests.support.client import request
from tests.support.control import ControlClient

NODE_TOKEN = "node-token-0123"
ADMIN_TOKEN = "admin-token-0123"
HOST = "site.test"
SETTLE = 15.0  # processes on a 2-core box: generous, a healthy run takes a fraction of it

BackendFactory = Callable[..., Awaitable[Backend]]


def clean_env() -> dict[str, str]:
    """The environment for child processes, without Consul settings that would override
    the admin's file (py-consul reads CONSUL_HTTP_TOKEN and CONSUL_HTTP_ADDR)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP_")}


class Process:
    """A child process from the repository root, its output in a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=clean_env(),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        if self._log is not None:
            self._log.close()
            self._log = None
        return None if proc is None else proc.returncode


@dataclass
class NodeProcess:
    name: str
    process: Process
    control: ControlClient

    async def status(self) -> dict[str, Any]:
        return await self.control.get_json("/v1/status")  # type: ignore[no-any-return]

    async def member(self, address: str) -> dict[str, Any] | None:
        return (await self.status())["groups"].get("web", {}).get(address)

    async def summary(self) -> dict[str, Any]:
        return await self.control.get_json("/v1/config?summary=1")  # type: ignore[no-any-return]


@dataclass
class System:
    double: DoubleProcess
    admin: Process
    admin_url: str
    nodes: list[NodeProcess]
    port: int  # the site's listener, shared by both nodes
    backends: dict[str, Backend]
    http: httpx.AsyncClient
    processes: list[Process] = field(default_factory=list)

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self.http.request(method, self.admin_url + path,
                                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                        **kwargs)
        assert reply.status_code in (200, 201), (method, path, reply.status_code, reply.text)
        return reply.json()

    async def consul(self, path: str, **params: str) -> None:
        reply = await self.http.put(f"{self.double.url}/_double/{path}", params=params)
        assert reply.status_code == 200, (path, reply.text)

    async def nodes_hold(self, address: str, state: str, nodes: list[NodeProcess] | None = None
                         ) -> None:
        """Wait until each node's /v1/status shows ``address`` of group web in ``state``."""
        async def held() -> bool:
            for node in nodes or self.nodes:
                with contextlib.suppress(OSError, ConnectionError, TimeoutError, AssertionError):
                    found = await node.member(address)
                    if found is not None and found["state"] == state:
                        continue
                return False
            return True

        await wait_for(held, f"{address} to be {state} on every node", self)

    async def requests_per_member(self) -> list[dict[str, int]]:
        """Per node: address -> requests it sent there (its /v1/status counters)."""
        out = []
        for node in self.nodes:
            web = (await node.status())["groups"].get("web", {})
            out.append({address: figures["requests"] for address, figures in web.items()})
        return out

    async def served(self, count: int = 24, path: str = "/") -> list[str]:
        """Who answered ``count`` requests, each on a fresh connection (the kernel spreads
        them over both nodes' listeners)."""
        names = []
        for _ in range(count):
            reply = await request(self.port, "GET", path, host=HOST, timeout=5.0)
            names.append(reply.header("x-backend") or str(reply.status))
        return names

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()[-3000:]}" for p in self.processes)


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str, system: System | None,
                   timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            logs = system.logs() if system is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


async def answers(url: str, client: httpx.AsyncClient, process: Process, status: int = 200
                  ) -> None:
    deadline = time.monotonic() + SETTLE
    while True:
        assert process.alive(), f"{process.name} exited:\n{process.log()}"
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url)).status_code == status:
                return
        assert time.monotonic() < deadline, f"{url} never answered {status}:\n{process.log()}"
        await asyncio.sleep(0.05)


def node_process(name: str, tmp_path: Path) -> tuple[Process, int]:
    control_port = free_port()
    path = write_config(tmp_path / f"{name}.yaml", {
        "control": {"listen": f"127.0.0.1:{control_port}", "token": NODE_TOKEN},
        "state_dir": str(tmp_path / f"state-{name}"),
    })
    return Process(name, slb_command("proxy", "-c", str(path), "--workers", "1"),
                   tmp_path / f"{name}.log"), control_port


async def start_node(process: Process, port: int, client: httpx.AsyncClient) -> None:
    process.start()
    await answers(f"http://127.0.0.1:{port}/healthz", client, process)


async def start_nodes(tmp_path: Path, client: httpx.AsyncClient, processes: list[Process],
                      *names: str) -> list[NodeProcess]:
    """Nodes ``names``, each started and answering its control API; every process is put in
    ``processes`` as it is made, so the fixture stops it even when a later one fails."""
    nodes = []
    for name in names:
        process, control_port = node_process(name, tmp_path)
        processes.append(process)
        await start_node(process, control_port, client)
        nodes.append(NodeProcess(name, process, ControlClient(control_port, NODE_TOKEN)))
    return nodes


def process_seed(nodes: list[NodeProcess], port: int, web: dict[str, Any]) -> dict[str, Any]:
    """The admin's seed: cluster ``c1`` with ``nodes``, group ``web`` (``web``: its members or
    its Consul service) serving ``/`` of virtual server ``site`` on ``port``, host ``HOST``."""
    return {
        "clusters": [{"name": "c1"}],
        "nodes": [{"name": n.name, "cluster": "c1", "token": NODE_TOKEN,
                   "control_url": f"http://127.0.0.1:{n.control.port}"} for n in nodes],
        "groups": [{"name": "web", **web}],
        "virtual_servers": [{"name": "site", "cluster": "c1", "listen": f"127.0.0.1:{port}",
                             "domains": [HOST], "default": True}],
        "routes": [{"name": "root", "virtual_server": "site", "path": "/", "group": "web"}],
    }


@pytest.fixture
async def system(tmp_path: Path, store_target: str, backend_factory: BackendFactory
                 ) -> AsyncIterator[System]:
    processes: list[Process] = []
    double: DoubleProcess | None = None
    async with httpx.AsyncClient(timeout=5.0) as http:
        try:
            backends = {name: await backend_factory(name=name) for name in ("a", "b", "c")}
            double = await start_process()
            for name in ("a", "b"):
                reply = await http.put(f"{double.url}/_double/register", json={
                    "service": "web", "id": f"web-{name}", "address": "127.0.0.1",
                    "port": backends[name].port})
                assert reply.status_code == 200, reply.text
            nodes = await start_nodes(tmp_path, http, processes, "n1", "n2")
            port, admin_port = free_port(), free_port()
            config = write_config(tmp_path / "admin.yaml", {
                "listen": f"127.0.0.1:{admin_port}",
                "store": {"url": store_target},
                "consul": {"address": double.address, "wait": 2},
                "reconcile_interval": 1.0,
                "tokens": [{"name": "ada", "token": ADMIN_TOKEN, "role": "admin"}],
                "seed": process_seed(nodes, port, {"consul": {"service": "web"}}),
            })
            admin = Process("admin", admin_command("-c", str(config)),
                            tmp_path / "admin.log")
            processes.append(admin)
            admin.start()
            admin_url = f"http://127.0.0.1:{admin_port}"
            await answers(f"{admin_url}/healthz", http, admin)
            system = System(double, admin, admin_url, nodes, port, backends, http, processes)
            for name in ("a", "b"):
                await system.nodes_hold(backends[name].address, "up")
            yield system
        finally:
            for process in reversed(processes):
                await process.stop()
            if double is not None:
                await double.terminate()


async def test_critical_in_consul_stops_traffic_on_both_nodes_and_passing_resumes(
        system: System) -> None:
    a, b = system.backends["a"].address, system.backends["b"].address
    assert set(await system.served()) == {"a", "b"}

    await system.consul("check/web-b", status="critical", output="HTTP 500")
    await system.nodes_hold(b, "down")
    before = await system.requests_per_member()
    assert set(await system.served()) == {"a"}
    after = await system.requests_per_member()
    for node, old, new in zip(system.nodes, before, after, strict=True):
        assert new[b] == old[b], f"{node.name} still sent requests to b"
        assert new[a] > old[a], f"{node.name} served none of the requests (kernel spread)"

    await system.consul("check/web-b", status="passing")
    await system.nodes_hold(b, "up")
    assert set(await system.served()) == {"a", "b"}


async def test_restarted_node_comes_back_to_the_desired_version_by_itself(
        system: System) -> None:
    b = system.backends["b"].address
    n1, n2 = system.nodes
    stopped_at = (await n2.summary())["version"]
    assert await n2.process.stop() == 0
    # a change while n2 is away: n1 takes it, n2 keeps the older snapshot on disk
    await system.consul("check/web-b", status="critical")
    await system.nodes_hold(b, "down", [n1])
    desired = next(i for i in (await system.api("GET", "/api/v1/nodes"))["items"]
                   if i["name"] == "n2")
    assert desired["desired_version"] > stopped_at

    await start_node(n2.process, n2.control.port, system.http)

    async def caught_up() -> bool:
        summary = await n2.summary()
        return bool(summary["hash"] == desired["desired_hash"] and summary["applied"])

    await wait_for(caught_up, "n2 to apply the desired snapshot", system)
    assert (await n2.member(b) or {}).get("state") == "down"
    await wait_for(lambda: nodes_in_sync(system), "the admin to report both nodes in sync",
                   system)
    assert set(await system.served()) == {"a"}


async def nodes_in_sync(system: System) -> bool:
    items = (await system.api("GET", "/api/v1/nodes"))["items"]
    return len(items) == 2 and all(i["in_sync"] for i in items)


async def test_rollback_restores_the_old_routing_on_both_nodes(system: System) -> None:
    c = system.backends["c"].address
    await system.api("POST", "/api/v1/groups", json={
        "name": "only-c", "members": [{"address": c}], "reason": "pin / to c"})
    await system.api("POST", "/api/v1/routes", json={
        "name": "pinned", "virtual_server": "site", "path": "/", "match": "exact",
        "group": "only-c", "reason": "pin / to c"})
    activated = await system.api("POST", "/api/v1/activate", json={"reason": "pin / to c"})
    await wait_for(lambda: nodes_in_sync(system), "nodes in sync after the activation",
                   system)
    assert set(await system.served(path="/")) == {"c"}
    assert set(await system.served(path="/x")) == {"a", "b"}

    back = await system.api("POST", "/api/v1/versions/1/rollback",
                            json={"reason": "pinning broke checkout"})
    assert back["version"] > activated["version"]
    assert back["source_version"] == 1

    async def rolled_back() -> bool:
        if not await nodes_in_sync(system):
            return False
        for node in system.nodes:
            groups = (await node.status())["groups"]
            if "only-c" in groups:
                return False
        return True

    await wait_for(rolled_back, "both nodes to drop the pinned route", system)
    assert set(await system.served(path="/")) == {"a", "b"}
    for node in system.nodes:
        snapshot = (await node.control.config())["snapshot"]
        routes = [r for v in snapshot["virtual_servers"] for r in v["routes"]]
        assert [(r["path"], r["group"]) for r in routes] == [("/", "web")], node.name
