"""Compiling a ``Config`` into the objects the request path uses, carrying member state over.

``build_runtime`` is pure apart from reusing ``MemberState`` objects of the previous runtime: a
member that survives (same group, same address) keeps its smooth-WRR weight, in-flight count,
idle connections and passive-health counters; its weight and state take the new values at once.
The result is swapped in by one assignment; requests in flight keep the ``Target`` and ``Pool``
objects they started with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from slb.member import STATE_UP, MemberState
from slb.metrics import Stats
from slb.model import Config, Group, HttpSettings
from slb.pool import Pool
from slb.proxy.head import request_fields as _request_fields
from slb.router import RouteTable, Target, VirtualHost, compile_route, make_virtual_host


@dataclass(slots=True, frozen=True)
class ClientSettings:
    """HttpSettings as plain attributes for the request path."""

    header_timeout: float
    keepalive_timeout: float
    keepalive_requests: int
    max_uri_bytes: int
    max_header_bytes: int
    max_headers: int
    max_response_header_bytes: int
    max_body_bytes: int
    request_id_header: str
    drain_timeout: float

    @classmethod
    def of(cls, http: HttpSettings) -> ClientSettings:
        return cls(**http.model_dump())


@dataclass(slots=True, frozen=True)
class Runtime:
    config: Config
    settings: ClientSettings
    tables: dict[str, RouteTable]
    pools: dict[str, Pool]
    applied_at: float = field(default_factory=time.time)

    @property
    def version(self) -> int:
        return self.config.version

    @property
    def listen_addresses(self) -> set[str]:
        return set(self.tables)


def build_runtime(config: Config, previous: Runtime | None, stats: Stats,
                  idle_pools: set[Pool]) -> Runtime:
    pools: dict[str, Pool] = {}
    for group in config.groups:
        old_pool = previous.pools.get(group.name) if previous is not None else None
        members = carry_members(group, old_pool.members if old_pool is not None else {})
        pools[group.name] = Pool(group, members, stats, idle_pools)

    by_listener: dict[str, list[tuple[VirtualHost, list[str], bool]]] = {}
    for vs in config.virtual_servers:
        routes = []
        for order, route in enumerate(vs.routes):
            target = Target(vs.name, order, pools[route.group],
                            stats.histogram(vs.name, route.group))
            routes.append(compile_route(route.match, route.path, route.priority, order, target))
        by_listener.setdefault(vs.listen, []).append(
            (make_virtual_host(vs.name, routes), vs.domains, vs.default))

    tables: dict[str, RouteTable] = {}
    for listen, hosts in by_listener.items():
        exact: dict[str, VirtualHost] = {}
        wildcards: list[tuple[str, VirtualHost]] = []
        default = next((vhost for vhost, _, is_default in hosts if is_default), hosts[0][0])
        for vhost, domains, _ in hosts:
            for domain in domains:
                if domain.startswith("*."):
                    wildcards.append((domain[1:], vhost))
                else:
                    exact[domain] = vhost
        tables[listen] = RouteTable(exact, wildcards, default)

    return Runtime(config=config, settings=ClientSettings.of(config.http), tables=tables,
                   pools=pools)


def carry_members(group: Group, old: dict[str, MemberState]) -> dict[str, MemberState]:
    """The member states of ``group``: surviving ones reused, with new weight and state."""
    members: dict[str, MemberState] = {}
    for member in group.members:
        state = old.get(member.address)
        if state is None:
            # validated already: a plain split will do
            host, _, port = member.address.rpartition(":")
            state = MemberState(member.address, host.strip("[]"), int(port))
        state.weight = member.weight
        state.state = member.state
        members[member.address] = state
    return members


def close_idle_of_leaving(old: dict[str, MemberState], new: dict[str, MemberState]) -> None:
    """Members that left or stopped taking traffic lose their idle connections.

    Requests in flight on them finish on the connection they have (drain).
    """
    for address, member in old.items():
        if new.get(address) is member and member.state == STATE_UP:
            continue
        while member.idle:
            member.idle.pop().close()


def retire(previous: Runtime, current: Runtime) -> None:
    for name, old_pool in previous.pools.items():
        new_pool = current.pools.get(name)
        close_idle_of_leaving(old_pool.members, new_pool.members if new_pool is not None else {})


def request_fields(settings: ClientSettings) -> dict[bytes, int]:
    return _request_fields(settings.request_id_header)
