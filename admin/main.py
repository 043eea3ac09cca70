"""Running the admin: store, service, sources, pushers, the HTTP server.

``slb admin -c config/admin.yaml`` serves the REST API (and the web UI) with uvicorn on uvloop
and httptools. A store with no objects is filled from the file's ``seed`` and activated, so a
fresh admin pushes a working configuration at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import uvicorn

from admin.api import create_app
from admin.checker import HttpChecker
from admin.config import AdminConfig
from admin.metrics import AdminMetrics
from admin.push import Pusher
from admin.service import AdminService
from admin.store import Store
from slb.errors import ConfigError
from slb.model import split_host_port
from slb.proxy.listener import bind_socket

log = logging.getLogger("admin")

SEED_ORDER = (("clusters", "cluster"), ("nodes", "node"), ("groups", "group"),
              ("virtual_servers", "virtual_server"), ("routes", "route"))


def seed_store(service: AdminService, config: AdminConfig) -> bool:
    """Fill an empty store from the seed and activate it; True if it did."""
    if config.seed is None or any(service.store.objects(kind) for _, kind in SEED_ORDER):
        return False
    for field, kind in SEED_ORDER:
        for body in getattr(config.seed, field):
            service.create(kind, body, "seed", "seeded from the admin's file")
    if service.store.objects("cluster"):
        service.activate("seed", "seeded from the admin's file")
    log.info("store seeded from the admin's file")
    return True


class Admin:
    """Everything the admin runs, started and stopped together."""

    def __init__(self, config: AdminConfig) -> None:
        self.config = config
        self.store = Store(config.store)
        self.service = AdminService(self.store, lambda: Pusher(
            timeout=config.push_timeout, reconcile_interval=config.reconcile_interval))
        self.checker = HttpChecker(self.service.on_checked)
        self.watcher: Any = None
        self.server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        seed_store(self.service, self.config)
        await self.service.start()
        address = self.config.consul_address()
        if address:
            from admin.consul import ConsulWatcher

            self.watcher = ConsulWatcher(
                address, self.config.consul_token(), scheme=self.config.consul.scheme,
                wait=self.config.consul.wait, watchdog=self.config.consul.watchdog,
                on_members=self.service.on_discovered, on_error=self.service.on_source_error,
                has_members=lambda group: bool(self.service.discovered.get(group)))
        self.service.on_content_change = self._sync_sources
        self._sync_sources()
        metrics = AdminMetrics(self.service, self.watcher.error_counts if self.watcher else None)
        app = create_app(self.config, self.service, metrics)
        host, port = split_host_port(self.config.listen)
        self.server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, loop="none", http="httptools", lifespan="off",
            log_level="warning", access_log=False))
        try:
            sock = bind_socket(self.config.listen)  # a clear error before anything serves
        except OSError as exc:
            await self.close()
            raise ConfigError([f"cannot listen on {self.config.listen}: "
                               f"{exc.strerror or exc}"]) from None
        self._serve_task = asyncio.get_running_loop().create_task(
            self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._serve_task.done():
                self._serve_task.result()  # raises the bind error
                raise OSError(f"the admin could not listen on {self.config.listen}")
            await asyncio.sleep(0.01)
        log.info("admin listening on %s (store %s, consul %s)", self.config.listen,
                 self.config.store, address or "none")

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def _sync_sources(self) -> None:
        content = self.service.active_content() or {}
        groups = content.get("group", [])
        self.checker.sync(groups)
        if self.watcher is not None:
            self.watcher.sync([g for g in groups if g.get("consul")])

    async def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._serve_task is not None:
            await self._serve_task
        if self.watcher is not None:
            await self.watcher.close()
        await self.checker.close()
        await self.service.close()
        self.store.close()


async def run_admin(config: AdminConfig) -> None:
    admin = Admin(config)
    await admin.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await admin.close()
