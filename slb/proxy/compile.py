"""Compiling a ``Config`` into the ``Runtime`` the request path reads, carrying member state over.

A ``Runtime`` holds everything derived from one config: the config itself (the only copy the
process keeps), its client settings (the model's own ``HttpSettings`` object, frozen), the route
tables and pools, and the lookups the client protocol needs per request (header names it
reads, the head size limit, the request id header, the Host bytes per listener). The proxy
context swaps one reference to it on apply, so no request sees a mix of two configs; requests
in flight keep the ``Target`` and ``Pool`` objects they started with.

TLS contexts (certificates per listener, client contexts per group) are compiled here too: a
certificate that cannot be loaded stops the apply before anything is swapped.

``build_runtime`` is pure apart from reusing ``MemberState`` objects of the previous runtime: a
member that survives (same group, same address) keeps its smooth-WRR weight, in-flight count,
idle connections and passive-health counters; its weight and state take the new values at once.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from slb.balancing.member import STATE_UP, MemberState
from slb.balancing.pool import Pool
from slb.metrics import Stats
from slb.model import Config, Group, HttpSettings, Route, VirtualServer
from slb.model.conditions import field_key
from slb.proxy.accesslog import AccessLog
from slb.proxy.actions import RouteActions, Share
from slb.proxy.fields import request_fields
from slb.proxy.router import RouteTable, Target, VirtualHost, compile_table, compile_virtual_host
from slb.proxy.tls import ListenerCertificates, compile_upstream, load_certificates


class Limits:
    """``HttpSettings``' figures the request path reads, as plain slots.

    A field of the frozen pydantic model costs ~90 ns to read against ~10 ns for a slot, and
    a request reads a dozen (two per header field): ~1 us a request with five fields.
    """

    SETTINGS = ("header_timeout", "keepalive_requests", "keepalive_timeout", "max_body_bytes",
                "max_header_bytes", "max_headers", "max_response_header_bytes", "max_uri_bytes")
    __slots__ = (*SETTINGS, "head_limit")

    header_timeout: float
    keepalive_requests: int
    keepalive_timeout: float
    max_body_bytes: int
    max_header_bytes: int
    max_headers: int
    max_response_header_bytes: int
    max_uri_bytes: int
    # a request line plus its header block: what may be buffered before a 414/431
    head_limit: int

    def __init__(self, http: HttpSettings) -> None:
        for name in self.SETTINGS:
            setattr(self, name, getattr(http, name))
        self.head_limit = http.max_header_bytes + http.max_uri_bytes


@dataclass(slots=True, frozen=True, kw_only=True)
class Runtime:
    config: Config
    settings: HttpSettings  # config.http itself
    limits: Limits = field(init=False)  # settings' figures the request path reads (above)
    tables: dict[str, RouteTable]  # by listener address
    pools: dict[str, Pool]  # by group name
    # derived per request by the client protocol, computed here once
    request_fields: dict[bytes, int]  # lowercased header name -> what the protocol does with it
    request_id_field: bytes  # b"X-Request-Id: "
    listen_hosts: dict[str, bytes]  # listener -> the Host sent when a request has none
    # TLS listener -> its certificates, chosen by SNI at handshake time (slb.proxy.tls)
    certificates: dict[str, ListenerCertificates]
    # group -> (client context, server name) for groups with upstream_tls, read per connect
    upstream_tls: dict[str, tuple[ssl.SSLContext, str | None]]
    access_log: AccessLog | None = None  # opened by the context: compiling opens no file
    applied_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # (also on dataclasses.replace: apply_groups' new settings bring new limits)
        object.__setattr__(self, "limits", Limits(self.settings))

    @property
    def listen_addresses(self) -> set[str]:
        return set(self.tables)


def build_runtime(config: Config, previous: Runtime | None, stats: Stats,
                  idle_pools: set[Pool], access_log: AccessLog | None = None) -> Runtime:
    # first what can fail (ConfigError), before member states are carried over
    certificates = load_certificates(config)
    upstream_tls = compile_upstream(config)
    pools: dict[str, Pool] = {}
    for group in config.groups:
        old_pool = previous.pools.get(group.name) if previous is not None else None
        members = carry_members(group, old_pool.members if old_pool is not None else {})
        pools[group.name] = Pool(group, members, stats, idle_pools, replacing=old_pool)

    by_listener: dict[str, list[VirtualServer]] = {}
    vhosts: dict[str, VirtualHost] = {}
    for vs in config.virtual_servers:
        by_listener.setdefault(vs.listen, []).append(vs)
        vhosts[vs.name] = compile_virtual_host(vs, _targets(vs, pools, stats))
    tables = {listen: compile_table(servers, vhosts) for listen, servers in by_listener.items()}

    http = config.http
    return Runtime(config=config, settings=http, tables=tables, pools=pools,
                   request_fields=request_fields(http.request_id_header, _watched(config)),
                   request_id_field=http.request_id_header.encode() + b": ",
                   listen_hosts={listen: listen.encode() for listen in tables},
                   certificates={listen: ListenerCertificates(tables[listen], contexts)
                                 for listen, contexts in certificates.items()},
                   upstream_tls=upstream_tls,
                   access_log=access_log)


def _targets(vs: VirtualServer, pools: dict[str, Pool], stats: Stats
             ) -> Callable[[int], tuple[Target | None, RouteActions | None]]:
    def compile_route(order: int) -> tuple[Target | None, RouteActions | None]:
        route = vs.routes[order]
        timeouts = route.timeouts

        def target(group: str) -> Target:
            pool = pools[group]
            return Target(vs.name, order, pool, stats.histogram(vs.name, group),
                          timeouts.connect or pool.connect_timeout if timeouts is not None
                          else pool.connect_timeout,
                          timeouts.read or pool.read_timeout if timeouts is not None
                          else pool.read_timeout)

        plain = target(route.group) if route.group is not None else None
        if not has_actions(route):
            return plain, None
        shares = [Share(s.group, s.weight, target(s.group)) for s in route.split or ()]
        return plain, RouteActions(vs.name, order, route, plain, shares)
    return compile_route


def _watched(config: Config) -> set[bytes]:
    """The fields routes' conditions test, keyed as ``compile_when`` keys them."""
    return {field_key(name) for vs in config.virtual_servers
            for route in vs.routes if route.when is not None for name in route.when.headers}


def has_actions(route: Route) -> bool:
    """A route that needs ``RouteActions``; any other costs nothing more per request."""
    return any(value is not None for value in (
        route.split, route.redirect, route.rewrite, route.request_headers,
        route.response_headers, route.allow, route.deny, route.rate_limit))


def carry_members(group: Group, old: dict[str, MemberState]) -> dict[str, MemberState]:
    """The member states of ``group``: surviving ones reused, with new weight and state.

    A group that keeps its addresses in the same order (a weight or state change: every
    health flip) gets ``old`` itself back, its states updated in place. That loop costs what
    building a dict did (0.8 us a group of 10), but ``Pool.set_members`` then knows the
    members are the same ones and skips the ejection horizon (0.8 us more), and no dict is
    left for the collector. Sharing it is safe: a members dict is never changed once built,
    only the states in it.
    """
    members = group.members
    if len(members) == len(old):
        for member, state in zip(members, old.values(), strict=True):  # (lengths checked)
            if member.address != state.address:
                break  # (the states updated so far are updated again below: same values)
            state.weight = member.weight
            state.state = member.state
        else:
            return old
    carried: dict[str, MemberState] = {}
    for member in members:
        state = old.get(member.address)
        if state is None:
            # validated already: a plain split will do
            host, _, port = member.address.rpartition(":")
            state = MemberState(member.address, host.strip("[]"), int(port))
        state.weight = member.weight
        state.state = member.state
        carried[member.address] = state
    return carried


def close_idle_of_leaving(old: dict[str, MemberState], new: dict[str, MemberState]) -> None:
    """Members that left or stopped taking traffic lose their idle connections.

    Requests in flight on them finish on the connection they have (drain).
    """
    for address, member in old.items():
        # a member without idle connections has nothing to close, whatever became of it:
        # testing that first spares the lookup (0.2 us against 0.6 us a group of 10)
        if member.idle and (member.state != STATE_UP or new.get(address) is not member):
            member.close_idle()


def retire(previous: Runtime, current: Runtime) -> None:
    for name, old_pool in previous.pools.items():
        new_pool = current.pools.get(name)
        close_idle_of_leaving(old_pool.members, new_pool.members if new_pool is not None else {})
    if previous.access_log is not None and previous.access_log is not current.access_log:
        previous.access_log.close()


