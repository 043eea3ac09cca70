"""Which virtual server and route a request reaches: the rules, shared by proxy and admin.

The proxy compiles these rules into lookup tables (``slb.proxy.router``); the admin's URL tool
asks ``resolve`` on a ``Config``. Both use the functions below, so they cannot disagree.

Host: the Host header is compared lowercased, without its port and without a trailing dot
(``bare_host``; an IPv6 literal keeps its brackets). Per listener: an exact domain first, then
wildcard domains (``*.example.com`` matches any name below it, not the name itself; the longest
suffix wins, as nginx's ``server_name``), then the listener's default virtual server: the one
marked ``default``, else the first on that listener (nginx's rule for ``default_server``).

Path: inside a virtual server, routes are tried highest ``priority`` first, then plain paths
before regexes, then longest path (so a longer prefix beats a shorter one of the same priority),
then a route with conditions (``when``) before one without, then configuration order
(``route_sort_key``). ``exact`` compares the whole path, ``prefix`` its start, ``regex`` matches
at its start (``re.match``). Matching is on the path without the query. A route whose path
matches but whose conditions do not hold (``slb.model.conditions``) is passed over: the next
one in order is tried, so a canary route with ``when`` falls through to the plain route of the
same path. ``resolve`` says why each route passed over was passed over.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from slb.model.conditions import RequestView, compile_when
from slb.model.schema import Config, Route, VirtualServer, split_host_port

DEFAULT_MATCH = "default virtual server of the listener"


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a request for a host and path goes on one listener."""

    listen: str  # the listener address the virtual server is on
    virtual_server: str | None
    matched_by: str  # "domain a.example" | "wildcard *.example" | DEFAULT_MATCH
    route_index: int | None  # index into that virtual server's routes
    group: str | None  # the route's group (None for a split or a redirect)
    # the groups the route sends traffic to (a split's, in its order), and why routes whose
    # path matched were passed over: "routes[2]: header x-canary is not '1'"
    groups: tuple[str, ...] = ()
    passed_over: tuple[str, ...] = ()


def bare_host(host: str) -> str:
    """Lowercased, port and trailing dot removed (an IPv6 literal keeps its brackets)."""
    name = host.lower()
    if not name.endswith("]") and ":" in name:
        name = name.rpartition(":")[0]
    return name.rstrip(".")


def wildcard_suffix(domain: str) -> str | None:
    """``*.example.com`` -> ``.example.com`` (what a matching host ends with); None if exact."""
    return domain[1:] if domain.startswith("*.") else None


def route_sort_key(match: str, path: str, priority: int, order: int,
                   conditional: bool = False) -> tuple[int, int, int, int, int]:
    """Routes sorted by this key are tried in order: see the module docstring."""
    regex = match == "regex"
    return (-priority, 1 if regex else 0, 0 if regex else -len(path), 0 if conditional else 1,
            order)


def route_order(routes: Sequence[Route]) -> list[int]:
    """Indexes of ``routes`` in the order they are tried."""
    return sorted(range(len(routes)), key=lambda i: route_sort_key(
        routes[i].match, routes[i].path, routes[i].priority, i, routes[i].when is not None))


def default_server(servers: Sequence[VirtualServer]) -> VirtualServer:
    """The virtual server of a listener that takes the hosts no domain names."""
    return next((vs for vs in servers if vs.default), servers[0])


def path_matches(match: str, pattern: str, path: str) -> bool:
    if match == "prefix":
        return path.startswith(pattern)
    if match == "exact":
        return path == pattern
    return re.match(pattern, path) is not None


def resolve(config: Config, host: str, path: str, listen: str | None = None,
            request: RequestView | None = None) -> Resolution | None:
    """Where ``host`` (a Host header) and ``path`` go on ``listen``.

    Without ``listen``, the first listener (in configuration order) on the Host's port, 80 if
    it names none. None when no virtual server listens there. ``request`` gives the headers,
    cookies, query and client address route conditions test; without it, no condition holds.
    """
    if listen is None:
        listen = _listener_for(config, host)
        if listen is None:
            return None
    servers = [vs for vs in config.virtual_servers if vs.listen == listen]
    if not servers:
        return None
    vs, matched_by = _virtual_server(servers, bare_host(host))
    passed_over: list[str] = []
    for index in route_order(vs.routes):
        route = vs.routes[index]
        if not path_matches(route.match, route.path, path):
            continue
        conditions = compile_when(route.when)
        if conditions is not None:
            why = conditions.failed(request) if request is not None else "no request facts given"
            if why is not None:
                passed_over.append(f"routes[{index}]: {why}")
                continue
        return Resolution(listen, vs.name, matched_by, index, route.group,
                          tuple(route.groups()), tuple(passed_over))
    return Resolution(listen, vs.name, matched_by, None, None, (), tuple(passed_over))


def _virtual_server(servers: list[VirtualServer], bare: str) -> tuple[VirtualServer, str]:
    wildcards: list[tuple[str, VirtualServer]] = []
    for vs in servers:
        for domain in vs.domains:
            suffix = wildcard_suffix(domain)
            if suffix is None:
                if domain == bare:
                    return vs, f"domain {bare}"
            else:
                wildcards.append((suffix, vs))
    for suffix, vs in sorted(wildcards, key=lambda item: -len(item[0])):
        if bare.endswith(suffix):
            return vs, f"wildcard *{suffix}"
    return default_server(servers), DEFAULT_MATCH


def _listener_for(config: Config, host: str) -> str | None:
    name = host.lower()
    port = 80
    if not name.endswith("]") and ":" in name:
        text = name.rpartition(":")[2]
        port = int(text) if text.isdigit() else -1
    for vs in config.virtual_servers:
        if split_host_port(vs.listen)[1] == port:
            return vs.listen
    return None
