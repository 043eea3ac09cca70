"""Leader failover as processes: kill -9 the leading ``slb-admin``, a follower leads, and a
pull-out acknowledged just before the kill reaches every node.

Processes: the Consul double with a default agent's settings (``session_ttl_min`` 10 s), two
``slb-admin`` sharing the test's store (SQLite file or PostgreSQL database: the test runs on
both) with the default election settings (``election: {enabled: true}``: a 10 s session TTL
bound to a 3 s TTL check, 1 s of lock-delay), two admin-managed nodes. The killed leader
cannot release its lock nor pass its check: the check goes critical within 3 s, Consul
invalidates the session at once, and after the lock-delay the follower takes the lock, well
within the issue's 15 s (the session TTL alone would take up to 2 x 10 s + lock-delay).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consul_double import DoubleProcess, start_process
from tests.e2e.conftest import admin_command, write_config
from tests.e2e.test_admin_system import (
    ADMIN_TOKEN,
    Process,
    System,
    answers,
    process_seed,
    start_nodes,
    wait_for,
)
from tests.support.backends import Backend, free_port

BackendFactory = Callable[..., Awaitable[Backend]]
FAILOVER_LIMIT = 15.0  # the bound on a follower leading after a kill -9


@dataclass
class Admins:
    system: System  # its ``admin`` is the first admin; ``processes`` has both
    urls: dict[str, str]
    by_name: dict[str, Process]

    async def leader_of(self, name: str) -> dict[str, Any] | None:
        with contextlib.suppress(httpx.HTTPError):
            reply = await self.system.http.get(
                f"{self.urls[name]}/api/v1/leader",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            if reply.status_code == 200:
                return reply.json()  # type: ignore[no-any-return]
        return None

    async def leading(self) -> list[str]:
        out = []
        for name, process in self.by_name.items():
            view = await self.leader_of(name) if process.alive() else None
            if view is not None and view["leading"]:
                out.append(name)
        return out


@pytest.fixture
async def admins(tmp_path: Path, store_target: str, backend_factory: BackendFactory
                 ) -> AsyncIterator[Admins]:
    processes: list[Process] = []
    double: DoubleProcess | None = None
    async with httpx.AsyncClient(timeout=5.0) as http:
        try:
            backends = {name: await backend_factory(name=name) for name in ("a", "b")}
            double = await start_process()
            nodes = await start_nodes(tmp_path, http, processes, "n1", "n2")
            port = free_port()
            seed = process_seed(nodes, port, {"members": [
                {"address": b.address} for b in backends.values()]})
            urls, by_name = {}, {}
            for name in ("admin-1", "admin-2"):
                admin_port = free_port()
                config = write_config(tmp_path / f"{name}.yaml", {
                    "name": name, "listen": f"127.0.0.1:{admin_port}",
                    "store": {"url": store_target},
                    "consul": {"address": double.address, "wait": 2},
                    "election": {"enabled": True, "poll": 0.1},  # default TTLs
                    "reconcile_interval": 1.0,
                    "tokens": [{"name": "ada", "token": ADMIN_TOKEN, "role": "admin"}],
                    "seed": seed,
                })
                process = Process(name, admin_command("-c", str(config)),
                                  tmp_path / f"{name}.log")
                processes.append(process)
                process.start()
                urls[name], by_name[name] = f"http://127.0.0.1:{admin_port}", process
            for name, process in by_name.items():
                await answers(f"{urls[name]}/healthz", http, process)
            system = System(double, by_name["admin-1"], urls["admin-1"], nodes, port, backends,
                            http, processes)
            found = Admins(system, urls, by_name)
            await wait_for(lambda: _one(found), "exactly one admin to lead", system)
            await system.nodes_hold(backends["a"].address, "up")
            yield found
        finally:
            for process in reversed(processes):
                await process.stop()
            if double is not None:
                await double.terminate()


async def _one(admins: Admins) -> bool:
    return len(await admins.leading()) == 1


async def test_kill_9_of_the_leader_a_follower_leads_and_the_last_pull_out_reaches_every_node(
        admins: Admins) -> None:
    system = admins.system
    (leader,) = await admins.leading()
    follower = next(n for n in admins.by_name if n != leader)
    old_term = (await admins.leader_of(leader) or {})["leader"]["term"]
    a = system.backends["a"].address
    reply = await system.http.post(
        f"{admins.urls[leader]}/api/v1/groups/web/members/{a}/pull-out",
        json={"reason": "deploy"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reply.status_code == 200, reply.text  # acknowledged: committed in the store
    process = admins.by_name[leader]
    assert process.proc is not None
    process.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await wait_for(lambda: _leads(admins, follower), "the follower to lead", system,
                   timeout=FAILOVER_LIMIT + 5)
    took = time.monotonic() - killed
    assert took < FAILOVER_LIMIT, f"the follower led after {took:.1f}s"
    view = await admins.leader_of(follower)
    assert view is not None and view["leader"]["admin"] == follower
    assert view["leader"]["term"] > old_term
    await system.nodes_hold(a, "drain")
    assert set(await system.served(12)) == {"b"}


async def _leads(admins: Admins, name: str) -> bool:
    return name in await admins.leading()
