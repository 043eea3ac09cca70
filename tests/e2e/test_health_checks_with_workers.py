"""Active health checks on a node with two worker processes (issue 13): the supervisor checks
each member once per interval (not once per worker), and both workers take the member out and
bring it back on its result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import node_config
from tests.e2e.test_reload_processes import WorkersNode, names_over_connections, start_node
from tests.support.admin import wait_until
from tests.support.backends import Backend, ReceivedRequest, default_handler, response

__all__ = ["start_node"]  # the fixture, shared with the reload tests

INTERVAL = 0.2


async def test_the_supervisor_checks_once_and_both_workers_follow(
        backend_factory: Any, start_node: Callable[..., WorkersNode]) -> None:
    health = {"a": 200, "b": 200}
    checks: dict[str, int] = {"a": 0, "b": 0}

    async def handler(req: ReceivedRequest, writer: asyncio.StreamWriter,
                      backend: Backend) -> None:
        if req.path == "/health":
            checks[backend.name] += 1
            writer.write(response(health[backend.name], b"health\n"))
        else:
            await default_handler(req, writer, backend)

    a = await backend_factory(name="a", handler=handler)
    b = await backend_factory(name="b", handler=handler)
    config = node_config([a.address, b.address])
    config["control"]["token"] = "t"
    config["groups"][0]["health_check"] = {"interval": INTERVAL, "rise": 1, "fall": 1}
    port = int(config["virtual_servers"][0]["listen"].rsplit(":", 1)[1])
    node = start_node(config)
    await node.answers("/ready")

    # over ten intervals, one check per interval per member: not one per worker
    await wait_until(lambda: checks["a"] >= 1, timeout=10, what="a first check")
    first = checks["a"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    await wait_until(lambda: checks["a"] >= first + 10, timeout=15, what="ten more checks")
    elapsed = loop.time() - started
    assert elapsed >= 9 * INTERVAL  # two checkers would do ten checks in five intervals

    health["a"] = 500
    await wait_until(lambda: _down(node, a), timeout=10, what="a reported down")
    assert set(await names_over_connections(port, 8)) == {"b"}  # on both workers
    health["a"] = 200
    await wait_until(lambda: _up(node, a), timeout=10, what="a reported up")
    await wait_until(lambda: _serves_both(port), timeout=10, what="a serving again")
    assert node.log().count("is down: 1 checks failed") == 1


async def _status(node: WorkersNode, backend: Backend) -> dict[str, Any]:
    view = await node.control.status()
    return dict(view["groups"]["g"][backend.address])


async def _down(node: WorkersNode, backend: Backend) -> bool:
    figures = await _status(node, backend)
    return bool(figures["checked_down"]) and figures["health_check"]["state"] == "down"


async def _up(node: WorkersNode, backend: Backend) -> bool:
    figures = await _status(node, backend)
    return not figures["checked_down"] and figures["health_check"]["state"] == "up"


async def _serves_both(port: int) -> bool:
    return set(await names_over_connections(port, 8)) == {"a", "b"}
