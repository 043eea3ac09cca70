"""What every connection of one proxy process shares: the applied runtime, counters, clocks.

``ProxyContext.apply`` swaps a new ``Runtime`` in with one assignment (plus the derived lookup
tables of the client side, assigned right after it, in the same loop step, so no request sees a
mix). ``Sweeper`` is the one periodic task: it fires connection deadlines and closes idle
upstream connections past their idle timeout.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from slb.accesslog import AccessLog
from slb.gcpause import freeze, gc_paused
from slb.member import MemberState
from slb.metrics import Stats
from slb.model import Config, Group
from slb.runtime import (
    Runtime,
    build_runtime,
    carry_members,
    close_idle_of_leaving,
    request_fields,
    retire,
)

if TYPE_CHECKING:
    from slb.pool import Pool
    from slb.proxy.client import ClientProtocol

SWEEP_INTERVAL = 0.1  # seconds: the resolution of every client-side timeout


class ProxyContext:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config,
                 stats: Stats | None = None) -> None:
        self.loop = loop
        self.stats = stats or Stats()
        self.connections: set[ClientProtocol] = set()
        self.idle_pools: set[Pool] = set()
        self.draining = False
        self.access_log: AccessLog | None = None
        self._request_prefix = os.urandom(4).hex().encode() + b"-"
        self._request_counter = 0
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.apply(config)

    def apply(self, config: Config) -> Runtime:
        """Compile ``config`` and swap it in; returns the new runtime."""
        previous = self.runtime
        with gc_paused():
            runtime = build_runtime(config, previous, self.stats, self.idle_pools)
        self._install(runtime)
        if previous is not None:
            retire(previous, runtime)
        freeze()
        return runtime

    def apply_group(self, config: Config, group: Group) -> None:
        """A pool delta: only ``group``'s members change; ``config`` is the whole new config."""
        runtime = self.runtime
        pool = runtime.pools[group.name]
        old = pool.members
        pool.set_members(carry_members(group, old))
        self.runtime = replace(runtime, config=config, applied_at=time.time())
        close_idle_of_leaving(old, pool.members)

    def _install(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.settings = settings
        self.head_limit = settings.max_header_bytes + settings.max_uri_bytes
        self.request_fields = request_fields(settings)
        self.request_id_field = settings.request_id_header.encode() + b": "
        self.listen_hosts = {listen: listen.encode() for listen in runtime.tables}
        log_settings = runtime.config.access_log
        if not log_settings.enabled:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = None
        elif self.access_log is None or self.access_log.path != log_settings.path:
            if self.access_log is not None:
                self.access_log.close()
            self.access_log = AccessLog(log_settings)

    def next_request_id(self) -> bytes:
        self._request_counter += 1
        return self._request_prefix + b"%x" % self._request_counter

    def members(self) -> list[tuple[str, MemberState]]:
        return [(pool.name, member) for pool in self.runtime.pools.values()
                for member in pool.members.values()]


class Sweeper:
    """Fires due connection deadlines and expires idle upstream connections."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self._handle: asyncio.TimerHandle | None = None
        self._ticks = 0

    def start(self) -> None:
        self._handle = self.ctx.loop.call_later(SWEEP_INTERVAL, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        ctx = self.ctx
        now = ctx.loop.time()
        for conn in [c for c in ctx.connections if c.deadline <= now]:
            conn.on_deadline(now)
        self._expire_idle(now)
        self._ticks += 1
        if ctx.access_log is not None and self._ticks % 5 == 0:
            ctx.access_log.flush()
        self._handle = ctx.loop.call_later(SWEEP_INTERVAL, self._tick)

    def _expire_idle(self, now: float) -> None:
        pools = self.ctx.idle_pools
        for pool in [p for p in pools if not p.expire_idle(now)]:
            pools.discard(pool)
