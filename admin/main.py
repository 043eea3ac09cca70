"""Running the admin: store, service, sources, pushers, the traffic sampler, the HTTP server.

``slb-admin -c config/admin.yaml`` (``admin.cli``) serves the REST API (and the web UI) with
uvicorn on uvloop and httptools, and samples every node's traffic (``admin.traffic``). A store
with no objects is filled from the file's ``seed`` and activated, so a fresh admin pushes a
working configuration at once.

Every admin serves the API and the UI; only the leader (``admin.ha``: elected over Consul when
``election.enabled``, else the only admin) runs the member sources and the pushers, and looks for
changes other admins stored (``_follow_store``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any

import uvicorn

from admin.app import create_app
from admin.domain.errors import Conflict, StoreUnavailable
from admin.domain.memory import collect_less, limit_arenas
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.ha import Election, leader_view
from admin.push.pusher import Pusher
from admin.settings import AdminConfig
from admin.sources import MemberSource
from admin.sources.http_check import HttpChecker
from admin.traffic import Sampler, TrafficWindow
from admin.web.metrics import AdminMetrics
from slb.errors import ConfigError
from slb.model import split_host_port
from slb.proxy.listener import bind_socket

log = logging.getLogger("admin")

SEED_ORDER = (("clusters", "cluster"), ("nodes", "node"), ("groups", "group"),
              ("virtual_servers", "virtual_server"), ("routes", "route"))


BACKLOG = 128  # pending connections; an admin serves a few people and a few scripts


def listen_socket(address: str) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: the kernel picks), bound before uvicorn
    starts so that an address in use is a clear error, not a log line of a server task."""
    return bind_socket(address, backlog=BACKLOG)


def seed_store(service: AdminService, seed: dict[str, list[dict[str, Any]]] | None) -> bool:
    """Fill an empty store from ``seed`` (``Seed.take``) and activate it; True if it did."""
    if not seed or any(service.store.objects(kind) for _, kind in SEED_ORDER):
        return False
    try:
        for field, kind in SEED_ORDER:
            # each list is let go once stored: the activation below (the seeding's peak of
            # memory) runs without the seed's objects (40 MB at 10,000 groups)
            for body in seed.pop(field, []):
                service.create(kind, body, "seed", "seeded from the admin's file")
    except Conflict:
        log.info("another admin is seeding the shared store")
        return False
    if service.store.objects("cluster"):
        service.activate("seed", "seeded from the admin's file")
    log.info("store seeded from the admin's file")
    return True


class Admin:
    """Everything the admin runs, started and stopped together."""

    def __init__(self, config: AdminConfig) -> None:
        self.config = config
        limit_arenas()  # process-wide, before the web server's threads allocate (its docstring)
        collect_less()  # a flip's objects freed before a collection is due (its docstring)
        self.store = Store(config.store.url)
        self.service = AdminService(self.store, lambda: Pusher(
            timeout=config.push_timeout, reconcile_interval=config.reconcile_interval,
            automatic_take_over=config.take_over == "automatic"))
        self.checker = HttpChecker(self.service)
        self.watcher: MemberSource | None = None
        self.server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self.sampler: Sampler | None = None
        self.name = config.name or f"{socket.gethostname()}/{config.listen}"
        self.election: Election | None = None
        self.leading = False
        self._follow_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # the seed is handed over, not kept: the configuration lives as long as the admin
        seed_store(self.service, self.config.seed.take() if self.config.seed else None)
        address = self.config.consul_address()
        if address:
            from admin.sources.consul import ConsulWatcher

            self.watcher = ConsulWatcher(
                address, self.config.consul_token(), self.service,
                scheme=self.config.consul.scheme, wait=self.config.consul.wait,
                watchdog=self.config.consul.watchdog)
        self.service.on_content_change = self._sync_sources
        self.service.leader_status = lambda: leader_view(self.store, self.election, self.name,
                                                         self.leading)
        metrics = AdminMetrics(self.service, self.watcher.error_counts if self.watcher else None)
        self.traffic = TrafficWindow(self.config.stats.interval, self.config.stats.window)
        self.sampler = Sampler(self.traffic, self._nodes)
        self.sampler.start()
        app = create_app(self.config, self.service, metrics, self.traffic)
        host, port = split_host_port(self.config.listen)
        self.server = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, loop="none", http="httptools", lifespan="off",
            log_level="warning", access_log=False))
        try:
            sock = listen_socket(self.config.listen)  # a clear error before anything serves
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
                 self.config.store.url, address or "none")
        here = f"http://{split_host_port(self.config.listen)[0]}:{self.port}"
        if self.config.election.enabled:
            assert address is not None  # AdminConfig checks it
            self.election = Election(
                consul_url=f"{self.config.consul.scheme}://{address}",
                token=self.config.consul_token(), key=self.config.election.key,
                ttl=self.config.election.ttl, check_ttl=self.config.election.check_ttl,
                lock_delay=self.config.election.lock_delay,
                name=self.name, address=here, store=self.store,
                on_lead=self._lead, on_follow=self._follow)
            self.election.start()
        else:
            leader = self.store.take_leadership(self.name, here)
            await self._lead(int(leader["term"]))

    # -- leading and following (admin.ha) ------------------------------------------------------

    async def _lead(self, term: int) -> None:
        self.leading = True
        await self.service.start(term)
        self._sync_sources()
        self._follow_task = asyncio.get_running_loop().create_task(self._follow_store())

    async def _follow(self) -> None:
        self.leading = False
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        for source in self.sources():
            source.sync([])
        await self.service.close()

    async def _follow_store(self) -> None:
        """The leader publishes what other admins stored (``Store.foreign_changes``)."""
        seen = self.store.generation()
        while True:
            await asyncio.sleep(self.config.election.poll)
            try:
                seen, foreign = self.store.foreign_changes(seen)
            except StoreUnavailable as exc:
                log.warning("cannot read the store's generation: %s", exc)
                continue
            if foreign:
                self.service.publisher.sync_nodes()
                self._sync_sources()
                self.service.publisher.schedule(None)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def _nodes(self) -> list[dict[str, Any]]:
        return [row.body for row in self.store.objects("node")]

    def _sync_sources(self) -> None:
        if not self.leading:
            return  # only the leader watches and checks
        content = self.service.active_content() or {}
        for source in self.sources():
            source.sync(content.get("group", []))

    def sources(self) -> list[MemberSource]:
        return [self.checker, *([self.watcher] if self.watcher is not None else [])]

    async def close(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._serve_task is not None:
            await self._serve_task
        if self.sampler is not None:
            await self.sampler.close()
        if self.election is not None:
            await self.election.close()  # a leader releases the lock: a follower takes over
        await self._follow()
        for source in self.sources():
            await source.close()
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
