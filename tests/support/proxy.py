"""An in-process proxy for integration tests, listening on kernel-chosen ports."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from slb.model import parse_config
from slb.node.node import LocalPlane, Node
from slb.node.server import ProxyServer
from tests.support.backends import Backend


@dataclass
class RunningProxy:
    node: Node

    @property
    def server(self) -> ProxyServer:
        plane = self.node.plane
        assert isinstance(plane, LocalPlane) and plane.server is not None
        return plane.server

    @property
    def port(self) -> int:
        """Port of the (first) virtual-server listener."""
        return self.server.listener_port(next(iter(self.server.listeners)))

    def port_of(self, listen: str) -> int:
        return self.server.listener_port(listen)

    @property
    def control_port(self) -> int:
        return self.node.control_port

    @property
    def stats(self) -> Any:
        return self.server.ctx.stats

    def member(self, group: str, address: str) -> Any:
        return self.server.ctx.runtime.pools[group].members[address]

    async def close(self) -> None:
        await self.server.close()
        await self.node.close()


def simple_config(members: list[str], algorithm: str = "wrr", **group: Any) -> dict[str, Any]:
    """One virtual server on 127.0.0.1:0 routing everything to group ``g``."""
    return {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "vs", "listen": "127.0.0.1:0", "domains": ["example.com"],
                             "routes": [{"path": "/", "group": "g"}]}],
        "groups": [{"name": "g", "algorithm": algorithm,
                    "members": [{"address": m} if isinstance(m, str) else m for m in members],
                    **group}],
    }


async def start_proxy(config: dict[str, Any]) -> RunningProxy:
    node = Node(parse_config(copy.deepcopy(config)), LocalPlane())
    await node.start()
    return RunningProxy(node)


def member_entry(backend: Backend, weight: int = 1, state: str = "up") -> dict[str, Any]:
    """A group member entry for a backend of tests.support.backends."""
    return {"address": backend.address, "weight": weight, "state": state}


def snapshot_data(version: int, groups: dict[str, list[dict[str, Any]]],
                  settings: dict[str, dict[str, Any]] | None = None,
                  listen: str = "127.0.0.1:0") -> dict[str, Any]:
    """A pushed snapshot with one virtual server on ``listen``: ``/`` goes to the first group,
    ``/NAME/`` to group NAME; ``settings`` adds group fields by group name."""
    names = list(groups)
    routes = [{"path": "/", "group": names[0]}]
    routes += [{"path": f"/{name}/", "group": name} for name in names[1:]]
    return {
        "version": version,
        "virtual_servers": [{"name": "vs", "listen": listen, "routes": routes}],
        "groups": [{"name": name, "members": members, **(settings or {}).get(name, {})}
                   for name, members in groups.items()],
    }
