"""Routing: Host header to virtual server, then path to route, compiled once per snapshot.

The rules are ``slb.model.hosts``' (the admin's URL tool uses the same functions): exact domain,
then the longest wildcard suffix, then the listener's default virtual server; inside it, routes
in ``route_sort_key`` order. Here they are compiled into lookups for the request path: per
listener a ``RouteTable`` with one dict for exact domains and the wildcards longest first, and
per virtual server a ``VirtualHost`` whose routes are already sorted, regexes compiled, and
conditions (``when``) compiled into ``slb.model.conditions.Conditions``: a route whose path
matches but whose conditions fail is passed over for the next one. ``match`` returns the
``CompiledRoute``; its ``actions`` (``slb.proxy.actions``) are None for a plain route, whose
``target`` is then used as is.

``RouteTable.virtual_host`` takes the Host header as sent: the first lookup is on it as is
(the common case: a client sends the name as configured), then on ``bare_host`` of it.
``lookup`` does the same from the bytes the request carries, and remembers the answer per value
(bounded: the header is client-controlled), so a known Host is not decoded nor looked up
again.

``VirtualHost.match`` remembers, per path, the routes whose path test passes (in order): the
common request reads one dict instead of testing every route before its own, and only the
``when`` conditions, which depend on more than the path, are evaluated each time. Paths are
client-controlled: only short ones are kept, in a bounded table (``slb.proxy.memo``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from slb.model.conditions import Conditions, compile_when
from slb.model.hosts import bare_host, default_server, route_sort_key, wildcard_suffix
from slb.proxy.actions import ExchangeView
from slb.proxy.fields import WATCHED
from slb.proxy.memo import remember
from slb.proxy.target import Target

# per virtual host, paths whose candidate routes are remembered: at most this many, this long
# (so at most ~0.3 MB a virtual host whatever a client sends)
PATH_MEMO_LIMIT = 1024
PATH_MEMO_LENGTH = 200

if TYPE_CHECKING:
    from slb.model import VirtualServer
    from slb.proxy.actions import RouteActions
    from slb.proxy.exchange import Exchange

EXACT = 0
PREFIX = 1
REGEX = 2
_KINDS = {"exact": EXACT, "prefix": PREFIX, "regex": REGEX}


@dataclass(slots=True, frozen=True)
class CompiledRoute:
    kind: int
    path: str
    regex: Callable[[str], object] | None
    target: Target | None  # None: a split or a redirect (actions decide)
    when: Conditions | None = None
    actions: RouteActions | None = None
    # the first field ``when`` requires: while a request has no field of kind WATCHED, and this
    # one is WATCHED in the table its head was parsed with, it is absent and ``when`` fails
    gate: bytes | None = None


class VirtualHost:
    __slots__ = ("_by_path", "name", "redirect_port", "routes")

    def __init__(self, name: str, routes: list[CompiledRoute],
                 redirect_port: int | None = None) -> None:
        self.name = name
        self.routes = tuple(routes)
        self.redirect_port = redirect_port  # redirect_to_https: every request gets a 308
        self._by_path: dict[str, tuple[CompiledRoute, ...]] = {}

    def match(self, path: str, ex: Exchange, peer: bytes) -> CompiledRoute | None:
        candidates = self._by_path.get(path)
        if candidates is None:
            # (remembered: config/slb.yaml's "/" route is its 6th, 0.4 -> 0.1 us a request)
            candidates = self.candidates(path)
            if len(path) <= PATH_MEMO_LENGTH:
                remember(self._by_path, path, candidates, PATH_MEMO_LIMIT)
        for route in candidates:
            when = route.when
            if when is None:
                return route
            gate = route.gate
            if (gate is not None and not ex.watched
                    and ex.fields.get(gate) == WATCHED):
                continue  # (no view, no scan of the fields: ~1 us a request)
            if when.holds(ExchangeView(ex, peer)):
                return route
        return None

    def candidates(self, path: str) -> tuple[CompiledRoute, ...]:
        """The routes whose path test ``path`` passes, in the order they are tried."""
        found = []
        for route in self.routes:
            kind = route.kind
            if kind == PREFIX:
                if not path.startswith(route.path):
                    continue
            elif kind == EXACT:
                if path != route.path:
                    continue
            elif route.regex is None or route.regex(path) is None:
                continue
            found.append(route)
            if route.when is None:
                break  # always taken: the routes after it are never reached
        return tuple(found)


class RouteTable:
    """The virtual servers of one listener."""

    __slots__ = ("_raw", "default", "exact", "wildcards")

    def __init__(self, exact: dict[str, VirtualHost],
                 wildcards: list[tuple[str, VirtualHost]], default: VirtualHost | None) -> None:
        self.exact = exact
        # '*.shop.example.com' stored as '.shop.example.com', longest first
        self.wildcards = tuple(sorted(wildcards, key=lambda item: -len(item[0])))
        self.default = default
        self._raw: dict[bytes, VirtualHost | None] = {}  # lookup's, by the Host bytes

    def lookup(self, host: bytes) -> VirtualHost | None:
        """``virtual_host`` of a Host field's bytes, remembered per value (the one memo: the
        field is client-controlled, so it is bounded)."""
        found = self._raw.get(host, False)
        if found is False:  # (a known Host is not decoded nor looked up twice: ~0.1 us)
            found = self.virtual_host(host.decode("latin-1"))
            remember(self._raw, host, found)
        return found  # type: ignore[return-value]

    def virtual_host(self, host: str) -> VirtualHost | None:
        """``host`` is the Host header as sent (case and port included), or a TLS server
        name (once per handshake: not remembered)."""
        found = self.exact.get(host)
        if found is not None:
            return found
        bare = bare_host(host)
        found = self.exact.get(bare)
        if found is None:
            for suffix, vhost in self.wildcards:
                if bare.endswith(suffix):
                    return vhost
            return self.default
        return found


def compile_virtual_host(vs: VirtualServer,
                         compile_route: Callable[[int], tuple[Target | None,
                                                              RouteActions | None]]
                         ) -> VirtualHost:
    """``vs``'s routes in the order they are tried; ``compile_route(i)`` is route i's target
    and actions."""
    keyed = []
    for order, route in enumerate(vs.routes):
        kind = _KINDS[route.match]
        matcher = re.compile(route.path).match if kind == REGEX else None
        target, actions = compile_route(order)
        when = compile_when(route.when)
        gate = when.headers[0][0] if when is not None and when.headers else None
        keyed.append((route_sort_key(route.match, route.path, route.priority, order,
                                     route.when is not None),
                      CompiledRoute(kind, route.path, matcher, target, when, actions, gate)))
    return VirtualHost(vs.name, [route for _, route in sorted(keyed, key=lambda kv: kv[0])],
                       vs.redirect_to_https)


def compile_table(servers: list[VirtualServer], vhosts: dict[str, VirtualHost]) -> RouteTable:
    """The table of one listener from its virtual servers (``vhosts`` by name)."""
    exact: dict[str, VirtualHost] = {}
    wildcards: list[tuple[str, VirtualHost]] = []
    for vs in servers:
        for domain in vs.domains:
            suffix = wildcard_suffix(domain)
            if suffix is None:
                exact[domain] = vhosts[vs.name]
            else:
                wildcards.append((suffix, vhosts[vs.name]))
    return RouteTable(exact, wildcards, vhosts[default_server(servers).name])
