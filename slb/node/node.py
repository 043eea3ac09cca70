"""A proxy node: the control API in front of a data plane, and the node's life cycle.

The data plane is either one in-process ``ProxyServer`` (``LocalPlane``, ``--workers 0``) or N
worker processes sharing the listeners with SO_REUSEPORT (``slb.node.supervisor.ProcessPlane``).
The node serves the applied configuration's version and hash, the control API, persistence to
``state_dir`` and the signals. The applied configuration itself is held once, by the plane
(``DataPlane.config``: the runtime's in process, the supervisor's with workers); the node reads
it from there.

Who manages a node: a file with ``virtual_servers`` makes a *file-managed* node (SIGHUP reloads
it; PUT and PATCH answer 409). A file with only ``control`` and ``state_dir`` makes an
*admin-managed* node: it serves its persisted snapshot, or nothing, until the first push.
``control`` and ``state_dir`` always come from the local file, never from a pushed snapshot.

Control API (JSON; ``/v1/...`` needs ``Authorization: Bearer <control.token>`` when the node
has a token; ``/healthz``, ``/ready`` and ``/metrics`` stay open for probes and scrapers):

    GET   /v1/config           the applied snapshot with version and hash (never the token)
    PUT   /v1/config           apply a full snapshot (409 unless newer or from another store
                               without ``?take_over=1``; 400 if invalid)
    PATCH /v1/groups/{name}    apply a pool delta (409 if base_version is not the applied one)
    PATCH /v1/groups           apply pool deltas of several groups in one version step, all
                               or nothing (``slb.model.delta.PoolBatch``): what an admin sends
    GET   /v1/status           per group and member live figures, applied version and time
    GET   /v1/stats            the request counters of /metrics without zeros, compact JSON
                               (``slb.metrics.traffic_counters``): what the admin samples
    GET   /healthz /ready /metrics

Fencing: several admins may share a store, and only the elected leader pushes. A push may carry
``X-SLB-Term: <n>`` (the leader's term, admin.ha); the node remembers the highest term it has
seen and answers 409 ``stale_term`` to a lower one, so a deposed leader that does not know it
yet cannot undo its successor's pushes. A push without the header is not fenced (a single
admin, a script). The term is kept with the snapshot in ``state_dir`` (``slb.node.files``),
written before the push that raised it is answered (rare: once per election), so a restarted
node still refuses a deposed leader.

Start order: the control API opens before the data plane serves traffic, so an admin (or a
probe) can see a restarted node; ``/healthz``, ``/ready`` and ``/v1/...`` say 503 until the
plane is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from slb.errors import ConfigError
from slb.gcpause import freeze
from slb.metrics import (
    Stats,
    StatsCollector,
    certificate_expiry_family,
    member_gauges,
    traffic_counters,
)
from slb.model import (
    Config,
    Group,
    NotJson,
    PoolBatch,
    SnapshotRejected,
    apply_batch,
    copy_config,
    parse_batch,
    parse_delta,
    parse_snapshot,
    split_host_port,
)
from slb.node.control import ControlServer, Request, Response, start_control_server
from slb.node.files import StateWriter, is_file_managed, load_config_file, load_state
from slb.node.health import ActiveHealth
from slb.node.server import ProxyServer, describe
from slb.proxy.tls import certificate_expiry

log = logging.getLogger("slb.node")
TERM_HEADER = "x-slb-term"


class StaleTerm(Exception):
    """A push from a leader older than one this node has heard from."""

    def __init__(self, given: int, highest: int) -> None:
        super().__init__(f"term {given} is older than term {highest}: a newer admin leads")
        self.highest = highest


class DataPlane(Protocol):
    @property
    def config(self) -> Config | None:
        """The applied configuration; None before start."""
        ...

    async def start(self, config: Config) -> None: ...
    async def apply(self, config: Config) -> None: ...
    async def apply_groups(self, config: Config, groups: list[Group]) -> None: ...
    async def scrape(self) -> tuple[Stats, dict[str, dict[str, dict[str, Any]]]]: ...
    async def member_status(self) -> dict[str, dict[str, dict[str, Any]]]: ...
    async def counters(self) -> tuple[Stats, dict[str, dict[str, dict[str, int]]]]: ...
    async def set_health(self, changes: dict[tuple[str, str], bool]) -> None: ...
    def applied_versions(self) -> dict[str, int]: ...
    async def drain(self) -> None: ...


class LocalPlane:
    """The data plane in this process."""

    def __init__(self) -> None:
        self.server: ProxyServer | None = None

    @property
    def config(self) -> Config | None:
        return self.server.config if self.server is not None else None

    async def start(self, config: Config) -> None:
        self.server = ProxyServer(config)
        await self.server.start()

    async def apply(self, config: Config) -> None:
        assert self.server is not None
        await self.server.apply(config)

    async def apply_groups(self, config: Config, groups: list[Group]) -> None:
        assert self.server is not None
        self.server.apply_groups(config, groups)

    async def scrape(self) -> tuple[Stats, dict[str, dict[str, dict[str, Any]]]]:
        """What /metrics renders in a thread: copies (the loop goes on counting)."""
        assert self.server is not None
        stats = Stats()
        stats.merge(self.server.ctx.stats.export())
        return stats, self.server.member_status()

    async def member_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        assert self.server is not None
        return self.server.member_status()

    async def counters(self) -> tuple[Stats, dict[str, dict[str, dict[str, int]]]]:
        assert self.server is not None
        return self.server.ctx.stats, self.server.active_members()

    async def set_health(self, changes: dict[tuple[str, str], bool]) -> None:
        assert self.server is not None
        self.server.ctx.set_health(changes)

    def applied_versions(self) -> dict[str, int]:
        assert self.server is not None
        return {"main": self.server.config.version}

    async def drain(self) -> None:
        if self.server is not None:
            await self.server.drain()


class Node:
    def __init__(self, local: Config, plane: DataPlane, config_path: str | Path | None = None
                 ) -> None:
        self.local = local  # the file's own config: control, state_dir, who manages
        self.file_managed = is_file_managed(local)
        self.plane = plane
        self.config_path = config_path
        self.applied_at = time.time()
        self.control: ControlServer | None = None
        self.draining = False
        self.serving = False  # the data plane has started: /ready may answer 200
        self.stopped = asyncio.Event()
        self._lock = asyncio.Lock()
        self.term = 0  # the highest leader term seen on a push (fencing), persisted
        self.state = StateWriter(local.state_dir, lambda: self.term) \
            if local.state_dir else None
        # active health checks: file-managed nodes only (slb.node.health)
        self.health = ActiveHealth(plane.set_health) if self.file_managed else None

    # -- start and stop ----------------------------------------------------------------------

    async def start(self) -> None:
        config = self.local
        if not self.file_managed and self.local.state_dir:
            persisted, self.term = load_state(self.local.state_dir)
            if self.state is not None:
                self.state.saved_term = self.term
            if persisted is not None:
                config = self._localise(persisted)
                log.info("serving the persisted snapshot, %s", describe(config))
        host, port = split_host_port(self.local.control.listen)
        try:
            self.control = await start_control_server(self.handle, host, port)
        except OSError as exc:
            raise ConfigError([f"cannot listen on {self.local.control.listen} (control): "
                               f"{exc.strerror or exc}"]) from None
        try:
            await self.plane.start(config)
        except BaseException:
            self.control.close()
            raise
        self.serving = True
        self.applied_at = time.time()
        if self.health is not None:
            await self.health.update(config)
        mode = "file-managed" if self.file_managed else "admin-managed"
        log.info("%s node, %s; control on %s", mode, describe(config), self.local.control.listen)

    @property
    def config(self) -> Config:
        """The applied configuration (the local file's until the plane has started)."""
        applied = self.plane.config
        return applied if applied is not None else self.local

    @property
    def control_port(self) -> int:
        assert self.control is not None
        return int(self.control.sockets[0].getsockname()[1])

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: loop.create_task(self.drain()))
        loop.add_signal_handler(signal.SIGINT, lambda: loop.create_task(self.drain()))
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload_file()))

    async def drain(self) -> None:
        if self.draining:
            return
        self.draining = True  # /ready answers 503 from now on
        log.info("draining")
        await self.plane.drain()
        await self.close()

    async def close(self) -> None:
        if self.health is not None:
            self.health.stop()
        if self.state is not None:
            self.state.close()
        if self.control is not None:
            self.control.close()
        self.stopped.set()

    # -- changes -----------------------------------------------------------------------------

    def _localise(self, config: Config) -> Config:
        return copy_config(config, control=self.local.control, state_dir=self.local.state_dir)

    async def _install(self, config: Config, groups: list[Group] | None = None,
                       started: float | None = None) -> None:
        """Apply ``config``, whole or as a pool delta of ``groups``, begun at ``started``."""
        old, started = self.config, started or time.perf_counter()
        if groups is None:
            await self.plane.apply(config)
            freeze()  # the collector need not walk a 100,000-member snapshot again
        else:
            await self.plane.apply_groups(config, groups)
        self.applied_at = time.time()
        if self.health is not None:
            await self.health.update(config)
        if groups is None:
            what = "snapshot"
        elif len(groups) == 1:
            what = f"group {groups[0].name}"
        else:
            what = f"{len(groups)} groups"
        log.info("applied %s: version %d -> %d in %.1f ms", what, old.version, config.version,
                 (time.perf_counter() - started) * 1e3)
        if self.state is None:
            return
        if groups is None:
            self.state.now(config)  # a full snapshot is on disk before the push is answered
        else:
            self.state.soon(config, groups)

    def _refuse_if_file_managed(self) -> None:
        if self.file_managed:
            raise SnapshotRejected("file_managed", "this node is managed by its file "
                                   f"{self.config_path}: edit it and send SIGHUP")

    @contextlib.asynccontextmanager
    async def _fenced(self, term: int | None) -> AsyncIterator[None]:
        """Hold the lock for one change: refuse an older term, remember a newer one, and
        have the newer one on disk before the change is answered, whatever its outcome."""
        async with self._lock:
            if term is not None and term < self.term:
                raise StaleTerm(term, self.term)
            if term is not None:
                self.term = term
            try:
                yield
            finally:
                if self.state is not None and self.term != self.state.saved_term:
                    # a full snapshot just applied wrote it already; otherwise write it now,
                    # with the applied snapshot (it supersedes a coalesced delta write)
                    self.state.now(self.config)

    async def put_config(self, data: Any, term: int | None = None, take_over: bool = False
                         ) -> Config:
        async with self._fenced(term):
            self._refuse_if_file_managed()
            config = self._localise(parse_snapshot(data, self.config, take_over))
            if take_over:
                log.warning("taken over by admin store %s (was %s, version %d)",
                            config.store, self.config.store, self.config.version)
            try:
                await self._install(config)
            except ConfigError as exc:
                raise SnapshotRejected("invalid", "snapshot cannot be applied",
                                       exc.lines) from None
            return config

    async def patch_group(self, name: str, data: Any, term: int | None = None) -> Config:
        """``PATCH /v1/groups/{name}``: a batch of one group."""
        return await self._patch(lambda: PoolBatch.of(name, parse_delta(data)), term)

    async def patch_groups(self, data: Any, term: int | None = None) -> Config:
        """``PATCH /v1/groups``: every group of the batch in one version step, or none."""
        return await self._patch(lambda: parse_batch(data), term)

    async def _patch(self, parse: Callable[[], PoolBatch], term: int | None) -> Config:
        async with self._fenced(term):  # the term is checked before the body
            started = time.perf_counter()
            self._refuse_if_file_managed()
            config, groups = apply_batch(self.config, parse())
            await self._install(config, groups, started)
            return config

    async def reload_file(self) -> None:
        if self.config_path is None:
            return
        async with self._lock:
            try:
                local = load_config_file(self.config_path)
            except ConfigError as exc:
                log.error("reload of %s refused, configuration unchanged:\n  %s",
                          self.config_path, "\n  ".join(exc.lines))
                return
            if not is_file_managed(local):
                log.error("reload of %s refused: it no longer has virtual_servers",
                          self.config_path)
                return
            if local.control != self.local.control:
                log.warning("control settings changed in %s: they take effect on restart",
                            self.config_path)
            version = max(local.version, self.config.version + 1)
            config = copy_config(self._localise(local), version=version)
            try:
                await self._install(config)
            except ConfigError as exc:
                log.error("reload of %s refused: %s", self.config_path, "; ".join(exc.lines))

    # -- the control API ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        method, path = request.method, request.path
        if path.startswith("/v1/") and not self.serving:
            return Response.error(503, "the node is starting: its data plane is not up yet")
        if path in ("/healthz", "/ready", "/metrics") and method in ("GET", "HEAD"):
            return await self._read(path, request.query)
        if path in ("/v1/config", "/v1/status", "/v1/stats") and method in ("GET", "HEAD"):
            # the snapshot and the status describe the whole topology: token holders only
            return self._authorize(request, reading=True) or await self._read(path,
                                                                             request.query)
        if path == "/v1/config" and method == "PUT":
            take_over = "take_over=1" in request.query.split("&")
            return await self._change(request, lambda data, term: self.put_config(
                data, term, take_over))
        if path.startswith("/v1/groups/") and method == "PATCH":
            name = unquote(path[len("/v1/groups/"):])
            return await self._change(request, lambda data, term: self.patch_group(name, data,
                                                                                  term))
        if path == "/v1/groups" and method == "PATCH":
            return await self._change(request, self.patch_groups)
        if path in ("/v1/config", "/v1/groups") or path.startswith("/v1/groups/"):
            return Response.error(405, f"{method} is not allowed on {path}")
        return Response.error(404, f"no such endpoint: {path}")

    async def _read(self, path: str, query: str = "") -> Response:
        if path == "/healthz":
            if not self.serving:  # up means both planes: probes wait for this, not the port
                return Response(503, b"starting\n", "text/plain")
            return Response(200, b"ok\n", "text/plain")
        if path == "/ready":
            if not self.serving:
                return Response(503, b"starting\n", "text/plain")
            if self.draining:
                return Response(503, b"draining\n", "text/plain")
            if not self.file_managed and self.config.version == 0:
                return Response(503, b"no configuration yet\n", "text/plain")
            return Response(200, b"ready\n", "text/plain")
        if path == "/metrics":
            if not self.serving:
                return Response(503, b"starting\n", "text/plain")
            # Rendered in a thread (1.2 s at 10,000 groups x 10 members), from copies: the
            # loop keeps answering the control API and taking pushes meanwhile.
            stats, status = await self.plane.scrape()
            expiry = certificate_expiry_family(certificate_expiry(self.config))
            health = list(self.health.metrics()) if self.health is not None else []

            def gauges() -> Iterator[Metric]:
                yield expiry
                yield from member_gauges(status)
                yield from health

            registry = CollectorRegistry(auto_describe=True)
            registry.register(StatsCollector(lambda: stats, gauges))
            text = await asyncio.to_thread(generate_latest, registry)
            return Response(200, text, CONTENT_TYPE_LATEST)
        if path == "/v1/stats":  # the admin's traffic sampler: what /metrics says, compact
            return Response(200, json.dumps(traffic_counters(*await self.plane.counters()),
                                            separators=(",", ":")).encode())
        if path == "/v1/config":
            if query == "summary=1":  # version and hash only: cheap for a reconcile loop
                return Response.json(200, self._version_view())
            return Response.json(200, self._config_view())
        groups = await self.plane.member_status()
        if self.health is not None:
            for group, members in self.health.status().items():
                for address, view in members.items():
                    if address in groups.get(group, {}):
                        groups[group][address]["health_check"] = view
        return Response.json(200, {**self._version_view(), "groups": groups})

    def _version_view(self) -> dict[str, Any]:
        versions = self.plane.applied_versions()
        return {
            "version": self.config.version,
            "store": self.config.store,
            "hash": self.config.content_hash(),
            "applied_at": self.applied_at,
            "applied": all(v == self.config.version for v in versions.values()),
            "workers": versions,
            "managed_by": "file" if self.file_managed else "admin",
        }

    def _config_view(self) -> dict[str, Any]:
        snapshot = self.config.public_json()
        # the token authorizes changes: no answer carries it, not even to a token holder
        snapshot["control"] = {k: v for k, v in snapshot["control"].items()
                               if k not in ("token", "token_file", "token_env")}
        return {**self._version_view(), "snapshot": snapshot}

    async def _change(self, request: Request, action: Any) -> Response:
        denied = self._authorize(request)
        if denied is not None:
            return denied
        given = request.headers.get(TERM_HEADER)
        term = int(given) if given is not None and given.isdigit() else None
        if given is not None and term is None:
            return Response.error(400, f"X-SLB-Term must be a non-negative integer, not "
                                  f"{given[:40]!r}")
        try:
            # the body's bytes: a delta is validated from them in one call (slb.model.delta)
            config: Config = await action(request.body or b"null", term)
        except NotJson as exc:
            return Response.error(400, f"the body is not JSON: {exc}")
        except SnapshotRejected as exc:
            return Response.json(exc.status, exc.to_json())
        except StaleTerm as exc:
            return Response.json(409, {"error": "stale_term", "message": str(exc),
                                       "term": exc.highest})
        return Response.json(200, {"version": config.version, "hash": config.content_hash()})

    def _authorize(self, request: Request, reading: bool = False) -> Response | None:
        """None when the caller may go on; else the refusal. With no token set the node is
        read-only: reads are open (there is no secret to guard), changes are refused."""
        token = self.local.control.token
        if token is None:
            if reading:
                return None
            return Response.error(403, "control.token is not set: the control API is read-only")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(),
                                                                 token.encode()):
            response = Response.error(401, "a valid 'Authorization: Bearer <token>' is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="slb"'
            return response
        return None


async def run_node(config_path: str, workers: int) -> None:
    local = load_config_file(config_path)
    if workers > 0:
        from slb.node.supervisor import ProcessPlane

        plane: DataPlane = ProcessPlane(workers)
    else:
        plane = LocalPlane()
    node = Node(local, plane, config_path)
    await node.start()
    node.install_signal_handlers()
    await node.stopped.wait()
    log.info("stopped")
