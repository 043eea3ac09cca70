"""What every connection of one proxy process shares: the applied runtime, counters, clocks.

One reference, ``ProxyContext.runtime``, holds everything derived from the applied config
(``slb.proxy.compile.Runtime``, the config included); ``apply`` and ``apply_groups`` replace it
with one assignment, so a request never sees a mix of two configs. What is not derived from the
config stays here: the loop, the counters, the open connections, the draining flag, the request
id sequence. The names the client protocol reads (``settings``, ``request_fields``,
``head_limit``, ``listen_hosts``, ``request_id_field``, ``access_log``) are read-through
properties of the runtime.

``Sweeper`` is the one periodic task: it fires connection deadlines, closes idle upstream
connections past their idle timeout, flushes the access log and closes the answer log's
rate-limit windows (``slb.proxy.answers``). It ticks every ``SWEEP_INTERVAL`` while there is
a client connection or an idle upstream one, and rests (a tick every ``REST_INTERVAL``) while
there is neither: a client connection's arrival, or an upstream connection parked when its
client had gone, wakes it (``ProxyContext.needs_sweeping``). A node without traffic then
spends next to no CPU between changes (10 ticks a second cost an idle node 1.3-2 ms of CPU a
second: 50 nodes sharing a box spent up to 100 ms a second on them).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from slb.balancing.member import MemberState
from slb.gcpause import freeze, gc_paused
from slb.metrics import Stats
from slb.model import AccessLog as AccessLogSettings
from slb.model import Config, Group, HttpSettings
from slb.proxy.accesslog import AccessLog
from slb.proxy.answers import AnswerLog
from slb.proxy.compile import Runtime, build_runtime, carry_members, close_idle_of_leaving, retire

if TYPE_CHECKING:
    from slb.balancing.pool import Pool

SWEEP_INTERVAL = 0.1  # seconds: the resolution of every client-side timeout
# seconds between ticks with no client connection and no idle upstream one: what only such a
# tick finds (a rate-limit window closing) waits this long at most
REST_INTERVAL = 5.0


class Connection(Protocol):
    """What the sweeper and a drain do with a client connection."""

    deadline: float
    transport: asyncio.BaseTransport

    def on_deadline(self, now: float) -> None: ...

    def close_if_idle(self) -> None: ...


class ProxyContext:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: Config,
                 stats: Stats | None = None) -> None:
        self.loop = loop
        self.stats = stats or Stats()
        self.connections: set[Connection] = set()
        self.idle_pools: set[Pool] = set()
        # set while the sweeper rests: ``needs_sweeping`` calls it
        self.wake_sweeper: Callable[[], None] | None = None
        self.draining = False
        self.answers = AnswerLog(loop.time)  # the error log of the proxy's own answers
        self._request_prefix = os.urandom(4).hex().encode() + b"-"
        self._request_counter = 0
        self.new_request_id = self.next_request_id  # (bound once, not per request)
        self.runtime: Runtime = None  # type: ignore[assignment]
        self.apply(config)

    def apply(self, config: Config) -> Runtime:
        """Compile ``config`` and swap it in; returns the new runtime."""
        previous = self.runtime
        log = _access_log(config.access_log, previous.access_log if previous else None)
        with gc_paused():
            runtime = build_runtime(config, previous, self.stats, self.idle_pools, log)
        self.runtime = runtime
        if previous is not None:
            retire(previous, runtime)
        freeze()
        return runtime

    def apply_groups(self, config: Config, groups: list[Group]) -> None:
        """A pool delta: only the members of ``groups`` change; ``config`` is the whole new
        config. Every pool is swapped before this returns: no request sees half of it."""
        runtime = self.runtime
        leaving = []
        for group in groups:
            pool = runtime.pools[group.name]
            old = pool.members
            pool.set_members(carry_members(group, old))
            leaving.append((old, pool))
        self.runtime = replace(runtime, config=config, settings=config.http,
                               applied_at=time.time())
        for old, pool in leaving:
            close_idle_of_leaving(old, pool.members)

    def set_health(self, changes: dict[tuple[str, str], bool]) -> None:
        """Active health results, ``(group, address) -> down``: a member taken out or brought
        back leaves or rejoins its pool's balancer (rebuilt here, not checked per request)."""
        pools = self.runtime.pools
        touched = set()
        for (group, address), down in changes.items():
            pool = pools.get(group)
            member = pool.members.get(address) if pool is not None else None
            if pool is not None and member is not None and member.checked_down != down:
                member.checked_down = down
                touched.add(pool)
        for pool in touched:
            pool.set_members(pool.members)

    # -- read through to the runtime (the names the client protocol uses) --------------------

    @property
    def settings(self) -> HttpSettings:
        return self.runtime.settings

    @property
    def head_limit(self) -> int:
        return self.runtime.limits.head_limit

    @property
    def request_fields(self) -> dict[bytes, int]:
        return self.runtime.request_fields

    @property
    def request_id_field(self) -> bytes:
        return self.runtime.request_id_field

    @property
    def listen_hosts(self) -> dict[str, bytes]:
        return self.runtime.listen_hosts

    @property
    def access_log(self) -> AccessLog | None:
        return self.runtime.access_log

    def opened(self, conn: Connection) -> None:
        """A client connection is open: counted, and swept from now on."""
        self.connections.add(conn)
        self.stats.client_connections += 1
        self.needs_sweeping()

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        self.stats.client_connections -= 1

    def needs_sweeping(self) -> None:
        """Something the sweeper keeps its pace for has come (a client connection, an idle
        upstream one): a resting sweeper wakes."""
        wake = self.wake_sweeper
        if wake is not None:
            wake()

    def next_request_id(self) -> bytes:
        self._request_counter += 1
        return self._request_prefix + b"%x" % self._request_counter

    def members(self) -> list[tuple[str, MemberState]]:
        return [(pool.name, member) for pool in self.runtime.pools.values()
                for member in pool.members.values()]


def _access_log(settings: AccessLogSettings, current: AccessLog | None) -> AccessLog | None:
    """The access log ``settings`` ask for: the current one if it writes the same file.

    A log the new runtime does not keep is closed by ``retire`` once it is swapped out.
    """
    if not settings.enabled:
        return None
    if current is not None and current.path == settings.path:
        current.format = settings.format  # (a line is formatted when logged: no reopen needed)
        return current
    return AccessLog(settings)


class Sweeper:
    """Fires due connection deadlines and expires idle upstream connections; rests while
    there is nothing to sweep (the module docstring)."""

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self._handle: asyncio.TimerHandle | None = None
        self._ticks = 0

    @property
    def resting(self) -> bool:
        return self.ctx.wake_sweeper is not None

    def start(self) -> None:
        self.stop()  # (one chain of ticks, however often it is started)
        self._arm(SWEEP_INTERVAL)

    def stop(self) -> None:
        self.ctx.wake_sweeper = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, delay: float) -> None:
        self._handle = self.ctx.loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        ctx = self.ctx
        now = ctx.loop.time()
        for conn in [c for c in ctx.connections if c.deadline <= now]:
            conn.on_deadline(now)
        self._expire_idle(now)
        self._ticks += 1
        busy = bool(ctx.connections or ctx.idle_pools)
        log = ctx.access_log
        if log is not None and (self._ticks % 5 == 0 or not busy):
            log.flush()
        if self._ticks % 10 == 0 or not busy:
            ctx.answers.roll()  # reports what the rate limit held back
        if busy:
            ctx.wake_sweeper = None
            self._arm(SWEEP_INTERVAL)
        else:
            ctx.wake_sweeper = self.start
            self._arm(REST_INTERVAL)

    def _expire_idle(self, now: float) -> None:
        pools = self.ctx.idle_pools
        for pool in [p for p in pools if not p.expire_idle(now)]:
            pools.discard(pool)
