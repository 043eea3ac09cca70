"""The data plane of one process: listeners and the applied configuration.

``ProxyServer.apply`` is the one way a full configuration gets in: compile, open any new
listener (the only step that can fail, and then nothing has changed), swap, then close listeners
no configuration needs any more. ``apply_group`` applies a pool delta. ``drain`` stops
accepting, lets requests in flight finish, closes idle keep-alive connections, and returns when
the last connection is gone or ``drain_timeout`` has passed.

The control API is not here: ``slb.node`` serves it, in front of one in-process ProxyServer or
of worker processes that each run one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slb.balancing.outlier import is_ejected
from slb.errors import ConfigError
from slb.model import Config, Group
from slb.node.files import summary
from slb.proxy.client import ClientProtocol
from slb.proxy.context import ProxyContext, Sweeper
from slb.proxy.listener import bind_socket, serve

log = logging.getLogger("slb")


class ProxyServer:
    def __init__(self, config: Config, reuse_port: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.reuse_port = reuse_port
        self.ctx = ProxyContext(self.loop, config)
        self.sweeper = Sweeper(self.ctx)
        self.listeners: dict[str, asyncio.Server] = {}
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        await self._open_listeners(self.ctx.runtime.listen_addresses)
        self.sweeper.start()

    def listener_port(self, address: str) -> int:
        return int(self.listeners[address].sockets[0].getsockname()[1])

    @property
    def config(self) -> Config:
        return self.ctx.runtime.config

    async def apply(self, config: Config) -> None:
        wanted = {vs.listen for vs in config.virtual_servers}
        await self._open_listeners(wanted - set(self.listeners))
        self.ctx.apply(config)
        for address in set(self.listeners) - wanted:
            self.listeners.pop(address).close()

    def apply_group(self, config: Config, group: Group) -> None:
        self.ctx.apply_group(config, group)

    async def _open_listeners(self, addresses: set[str]) -> None:
        opened: dict[str, asyncio.Server] = {}
        address = ""
        try:
            for address in sorted(addresses):
                sock = bind_socket(address, self.reuse_port)
                opened[address] = await serve(sock, self._factory(address))
        except OSError as exc:
            for server in opened.values():
                server.close()
            raise ConfigError([f"cannot listen on {address}: {exc.strerror or exc}"]) from None
        self.listeners.update(opened)

    def _factory(self, address: str) -> Any:
        ctx = self.ctx
        return lambda: ClientProtocol(ctx, address)

    def member_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per group and member: the live figures /v1/status shows."""
        now = self.loop.time()
        return {
            name: {
                address: {
                    "weight": m.weight, "state": m.state, "active": m.active,
                    "requests": m.requests, "failures": m.failures,
                    "ejected": is_ejected(m, now),
                    "ejected_for": round(max(0.0, m.ejected_until - now), 3),
                    "ejections": m.ejections, "idle_connections": len(m.idle),
                    "checked_down": m.checked_down,
                }
                for address, m in pool.members.items()
            }
            for name, pool in self.ctx.runtime.pools.items()
        }

    async def drain(self) -> None:
        ctx = self.ctx
        if ctx.draining:
            await self.stopped.wait()
            return
        ctx.draining = True
        log.info("draining: %d client connections open", len(ctx.connections))
        for server in self.listeners.values():
            server.close()
        for conn in list(ctx.connections):
            conn.close_if_idle()
        deadline = self.loop.time() + ctx.settings.drain_timeout
        while ctx.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(ctx.connections):
            conn.transport.close()
        await self.close()

    async def close(self) -> None:
        self.sweeper.stop()
        for server in self.listeners.values():
            server.close()
        self.listeners.clear()
        for _, member in self.ctx.members():
            member.close_idle()
        if self.ctx.access_log is not None:
            self.ctx.access_log.close()
        self.stopped.set()


def describe(config: Config) -> str:
    return f"version {config.version}: {summary(config)}"
