"""Active health checks on a file-managed node (issue 13), through real sockets: a member whose
health endpoint starts answering 500 is taken out after ``fall`` checks and brought back after
``rise``; its state and last result are in /v1/status, its gauge in /metrics, and the log says
so once per change.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.admin import wait_until
from tests.support.backends import Backend, ReceivedRequest, default_handler, response
from tests.support.client import request
from tests.support.control import ControlClient

TIMEOUT = 5.0


def checked_backend(health: dict[str, int]) -> Any:
    async def handler(req: ReceivedRequest, writer: asyncio.StreamWriter,
                      backend: Backend) -> None:
        if req.path == "/health":
            writer.write(response(health[backend.name], b"health\n"))
        else:
            await default_handler(req, writer, backend)
    return handler


async def test_a_failing_member_is_taken_out_and_brought_back_by_active_checks(
        backend_factory: Any, proxy_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="slb.health")
    health = {"a": 200, "b": 200}
    a = await backend_factory(name="a", handler=checked_backend(health))
    b = await backend_factory(name="b", handler=checked_backend(health))
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:0",
                             "routes": [{"path": "/", "group": "web"}]}],
        "groups": [{"name": "web", "members": [{"address": a.address}, {"address": b.address}],
                    "health_check": {"path": "/health", "interval": 0.05, "timeout": 1,
                                     "rise": 2, "fall": 3, "expect_status": [200, 204]}}],
    })
    control = ControlClient(proxy.control_port)

    async def member_health(backend: Backend) -> dict[str, Any]:
        status = await control.status()
        return dict(status["groups"]["web"][backend.address]["health_check"])

    async def served(count: int = 6) -> set[str | None]:
        return {(await request(proxy.port, "GET", "/x", timeout=TIMEOUT)).header("X-Backend")
                for _ in range(count)}

    await wait_until(lambda: a.requests and b.requests, what="both members checked")
    assert await served() == {"a", "b"}

    health["a"] = 500
    await wait_until(lambda: proxy.member("web", a.address).checked_down, timeout=TIMEOUT,
                     what="member a taken out")
    assert await served() == {"b"}
    view = await member_health(a)
    assert (view["state"], view["last_result"]) == ("down", "status 500")
    metrics = (await control.get("/metrics")).body.decode()
    assert f'slb_member_health_up{{group="web",member="{a.address}"}} 0.0' in metrics
    assert f'slb_member_health_up{{group="web",member="{b.address}"}} 1.0' in metrics

    health["a"] = 204
    await wait_until(lambda: not proxy.member("web", a.address).checked_down, timeout=TIMEOUT,
                     what="member a back")
    assert await served() == {"a", "b"}
    assert (await member_health(a))["state"] == "up"
    changes = [r.getMessage() for r in caplog.records if r.name == "slb.health"]
    assert len(changes) == 2, changes  # one line per change, none per check
    assert "is down: 3 checks failed, last status 500" in changes[0]
    assert "is up again: 2 checks passed, last status 204" in changes[1]


async def test_a_reload_without_health_check_brings_a_down_member_back(
        backend_factory: Any, proxy_factory: Any, tmp_path: Path) -> None:
    health = {"a": 503}
    a = await backend_factory(name="a", handler=checked_backend(health))
    raw: dict[str, Any] = {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:0",
                             "routes": [{"path": "/", "group": "web"}]}],
        "groups": [{"name": "web", "members": [{"address": a.address}],
                    "health_check": {"interval": 0.05, "fall": 1}}],
    }
    proxy = await proxy_factory(raw)
    await wait_until(lambda: proxy.member("web", a.address).checked_down, timeout=TIMEOUT,
                     what="member a taken out")
    assert (await request(proxy.port, "GET", "/", timeout=TIMEOUT)).status == 503
    del raw["groups"][0]["health_check"]
    path = tmp_path / "slb.yaml"
    path.write_text(yaml.safe_dump(raw))
    proxy.node.config_path = path
    await proxy.node.reload_file()  # what SIGHUP does
    assert not proxy.member("web", a.address).checked_down
    assert (await request(proxy.port, "GET", "/", timeout=TIMEOUT)).status == 200
