"""One proxy process: listeners, the applied configuration, the control listener, signals.

``ProxyServer.apply`` is the one way a configuration gets in, at start and on SIGHUP: compile
first, open any new listener (the only step that can fail, and then nothing has changed), swap,
then close listeners no configuration needs any more. SIGTERM drains: listeners close, ``/ready``
answers 503, requests in flight finish, idle keep-alive connections close, and the process exits
when the last connection is gone or ``drain_timeout`` has passed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from slb.configfile import load_config_file
from slb.context import ProxyContext, Sweeper
from slb.control import Request, Response, start_control_server
from slb.errors import ConfigError
from slb.listener import bind_socket, serve
from slb.metrics import StatsCollector
from slb.model import Config, split_host_port
from slb.protocol import ClientProtocol

log = logging.getLogger("slb")


class ProxyServer:
    def __init__(self, config: Config, config_path: str | Path | None = None,
                 reuse_port: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.config_path = config_path
        self.reuse_port = reuse_port
        self.ctx = ProxyContext(self.loop, config)
        self.sweeper = Sweeper(self.ctx)
        self.listeners: dict[str, asyncio.Server] = {}
        self.control: asyncio.Server | None = None
        self.stopped = asyncio.Event()
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatsCollector(lambda: self.ctx.stats))

    async def start(self) -> None:
        await self._open_listeners(self.ctx.runtime.listen_addresses)
        control = self.ctx.runtime.config.control
        host, port = split_host_port(control.listen)
        try:
            self.control = await start_control_server(self.handle_control, host, port)
        except OSError as exc:
            for server in self.listeners.values():
                server.close()
            raise ConfigError([f"cannot listen on {control.listen} (control): "
                               f"{exc.strerror or exc}"]) from None
        self.sweeper.start()
        log.info("serving %s on %s; control on %s", _describe(self.ctx.runtime.config),
                 ", ".join(sorted(self.listeners)) or "no listener", control.listen)

    @property
    def control_port(self) -> int:
        assert self.control is not None
        return int(self.control.sockets[0].getsockname()[1])

    def listener_port(self, address: str) -> int:
        return int(self.listeners[address].sockets[0].getsockname()[1])

    async def apply(self, config: Config) -> None:
        old = self.ctx.runtime
        wanted = {vs.listen for vs in config.virtual_servers}
        await self._open_listeners(wanted - set(self.listeners))
        self.ctx.apply(config)
        for address in set(self.listeners) - wanted:
            self.listeners.pop(address).close()
        log.info("applied configuration version %d (was %d): %s", config.version, old.version,
                 _describe(config))

    async def _open_listeners(self, addresses: set[str]) -> None:
        opened: dict[str, asyncio.Server] = {}
        try:
            for address in sorted(addresses):
                sock = bind_socket(address, self.reuse_port)
                opened[address] = await serve(sock, self._factory(address))
        except OSError as exc:
            for server in opened.values():
                server.close()
            raise ConfigError([f"cannot listen on {address}: {exc.strerror or exc}"]) from None
        self.listeners.update(opened)

    def _factory(self, address: str):  # type: ignore[no-untyped-def]
        ctx = self.ctx
        return lambda: ClientProtocol(ctx, address)

    async def reload_file(self) -> None:
        if self.config_path is None:
            return
        try:
            config = load_config_file(self.config_path)
            await self.apply(config)
        except ConfigError as exc:
            log.error("reload of %s refused, configuration unchanged:\n  %s", self.config_path,
                      "\n  ".join(exc.lines))

    # -- control listener --------------------------------------------------------------------

    async def handle_control(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, f"{request.method} is not allowed on {request.path}")
        if request.path == "/metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            return Response(200, b"ok\n", "text/plain")
        if request.path == "/ready":
            if self.ctx.draining:
                return Response(503, b"draining\n", "text/plain")
            return Response(200, b"ready\n", "text/plain")
        return Response.error(404, f"no such endpoint: {request.path}")

    # -- life cycle --------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = self.loop
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(self.drain()))
        loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(self.drain()))
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload_file()))

    async def drain(self) -> None:
        ctx = self.ctx
        if ctx.draining:
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
        if self.control is not None:
            self.control.close()
        for _, member in self.ctx.members():
            while member.idle:
                member.idle.pop().close()
        if self.ctx.access_log is not None:
            self.ctx.access_log.close()
        self.stopped.set()


def _describe(config: Config) -> str:
    return (f"{len(config.virtual_servers)} virtual servers, {len(config.groups)} groups, "
            f"{sum(len(g.members) for g in config.groups)} members")


async def run_proxy(config_path: str) -> None:
    config = load_config_file(config_path)
    server = ProxyServer(config, config_path)
    await server.start()
    server.install_signal_handlers()
    await server.stopped.wait()
    log.info("stopped")


__all__ = ["ProxyServer", "run_proxy", "socket"]
