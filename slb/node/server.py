"""The data plane of one process: listeners and the applied configuration.

``ProxyServer.apply`` is the one way a full configuration gets in: bind any new address and
compile (the steps that can fail, and then nothing has changed), swap, serve the new listeners,
then close listeners no configuration needs any more. A TLS listener is served with a listener
context whose SNI callback reads the applied runtime (``slb.proxy.tls``), so a swap changes its
certificates without touching the listener. ``apply_groups`` applies a pool delta. ``drain`` stops
accepting, lets requests in flight finish, closes idle keep-alive connections, and returns when
the last connection is gone or ``drain_timeout`` has passed.

The control API is not here: ``slb.node`` serves it, in front of one in-process ProxyServer or
of worker processes that each run one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from slb.balancing.outlier import is_ejected
from slb.errors import ConfigError
from slb.model import Config, Group, TlsSettings
from slb.node.files import summary
from slb.proxy.client import ClientProtocol
from slb.proxy.context import ProxyContext, Sweeper
from slb.proxy.listener import bind_socket, serve
from slb.proxy.tls import listener_context

log = logging.getLogger("slb")


class ProxyServer:
    def __init__(self, config: Config, reuse_port: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.reuse_port = reuse_port
        self.ctx = ProxyContext(self.loop, config)
        self.sweeper = Sweeper(self.ctx)
        self.listeners: dict[str, asyncio.Server] = {}
        self.kinds: dict[str, TlsSettings | None] = {}  # listener -> its TLS settings, or plain
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        wanted = listener_kinds(self.config)
        await self._serve(self._bind(set(wanted)), wanted)
        self.sweeper.start()

    def listener_port(self, address: str) -> int:
        return int(self.listeners[address].sockets[0].getsockname()[1])

    @property
    def config(self) -> Config:
        return self.ctx.runtime.config

    async def apply(self, config: Config) -> None:
        """Bind new addresses, compile and swap, then serve (see the module docstring).

        A listener whose TLS settings change (or that turns TLS on or off) is served anew on a
        duplicate of its socket: the port never closes, and connections already accepted keep
        their transport.
        """
        wanted = listener_kinds(config)
        bound = self._bind(set(wanted) - set(self.listeners))
        try:
            self.ctx.apply(config)
        except ConfigError:
            for sock in bound.values():
                sock.close()
            raise
        changed = {address for address, kind in wanted.items()
                   if address in self.listeners and self.kinds.get(address) != kind}
        for address in changed:
            old = self.listeners.pop(address)
            listening = old.sockets[0]
            bound[address] = socket.fromfd(listening.fileno(), listening.family,
                                           socket.SOCK_STREAM)  # (a dup of the descriptor)
            old.close()
        await self._serve(bound, wanted)
        for address in set(self.listeners) - set(wanted):
            self.listeners.pop(address).close()
            self.kinds.pop(address, None)

    def apply_groups(self, config: Config, groups: list[Group]) -> None:
        self.ctx.apply_groups(config, groups)

    def _bind(self, addresses: set[str]) -> dict[str, socket.socket]:
        """Bind every address or none: binding is what can fail (ConfigError)."""
        bound: dict[str, socket.socket] = {}
        address = ""
        try:
            for address in sorted(addresses):
                bound[address] = bind_socket(address, self.reuse_port)
        except OSError as exc:
            for sock in bound.values():
                sock.close()
            raise ConfigError([f"cannot listen on {address}: {exc.strerror or exc}"]) from None
        return bound

    async def _serve(self, bound: dict[str, socket.socket],
                     kinds: dict[str, TlsSettings | None]) -> None:
        for address, sock in sorted(bound.items()):
            tls = kinds[address]
            context = None if tls is None else self._listener_context(address, tls)
            self.listeners[address] = await serve(
                sock, self._factory(address), context,
                tls.handshake_timeout if tls is not None else None)
            self.kinds[address] = tls

    def _listener_context(self, address: str, settings: TlsSettings) -> ssl.SSLContext:
        ctx = self.ctx
        return listener_context(settings, lambda: ctx.runtime.certificates.get(address),
                                ctx.stats.count_handshake_failure, ctx.stats.count_handshake)

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

    def active_members(self) -> dict[str, dict[str, dict[str, int]]]:
        """Only the members with requests in flight, as ``{group: {address: {"active": n}}}``:
        what ``/v1/stats`` needs of ``member_status``, without a dict for each of the
        topology's members (10,000 on a node the admin samples every few seconds)."""
        active: dict[str, dict[str, dict[str, int]]] = {}
        for name, pool in self.ctx.runtime.pools.items():
            for address, member in pool.members.items():
                if member.active:
                    active.setdefault(name, {})[address] = {"active": member.active}
        return active

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


def listener_kinds(config: Config) -> dict[str, TlsSettings | None]:
    """Each listener of ``config``: the TLS settings it is served with, None for plain HTTP."""
    return {vs.listen: config.tls if vs.tls is not None else None
            for vs in config.virtual_servers}


def describe(config: Config) -> str:
    return f"version {config.version}: {summary(config)}"
