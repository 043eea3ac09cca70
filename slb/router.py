"""Routing: Host header to virtual server, then path to route, compiled once per snapshot.

Per listener, a ``RouteTable`` maps exact domains with one dict lookup, then wildcard domains
(``*.example.com`` matches any name below it, the longest suffix winning, as nginx's
``server_name``), then the listener's default virtual server: the one marked ``default``, else the
first on that listener (nginx's rule for ``default_server``).

Inside a virtual server, routes are tried highest ``priority`` first, then longest path (so a
longer prefix beats a shorter one of the same priority), regexes after plain paths of the same
priority in configuration order. Matching is on the raw path without the query string.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slb.metrics import LatencyHistogram
    from slb.pool import Pool

EXACT = 0
PREFIX = 1
REGEX = 2
_KINDS = {"exact": EXACT, "prefix": PREFIX, "regex": REGEX}


@dataclass(slots=True, frozen=True)
class Target:
    """What a request is routed to: a group, with the names metrics and logs need."""

    virtual_server: str
    route_index: int
    pool: Pool
    latency: LatencyHistogram


@dataclass(slots=True, frozen=True)
class CompiledRoute:
    kind: int
    path: str
    regex: Callable[[str], object] | None
    target: Target


class VirtualHost:
    __slots__ = ("name", "routes")

    def __init__(self, name: str, routes: list[CompiledRoute]) -> None:
        self.name = name
        self.routes = tuple(routes)

    def match(self, path: str) -> Target | None:
        for route in self.routes:
            kind = route.kind
            if kind == PREFIX:
                if path.startswith(route.path):
                    return route.target
            elif kind == EXACT:
                if path == route.path:
                    return route.target
            elif route.regex is not None and route.regex(path) is not None:
                return route.target
        return None


def compile_route(kind: str, path: str, priority: int, order: int,
                  target: Target) -> tuple[tuple[int, int, int, int], CompiledRoute]:
    """A route and its sort key: priority desc, plain paths before regexes, longer first."""
    code = _KINDS[kind]
    matcher = re.compile(path).match if code == REGEX else None
    key = (-priority, 1 if code == REGEX else 0, -len(path) if code != REGEX else 0, order)
    return key, CompiledRoute(code, path, matcher, target)


def make_virtual_host(name: str,
                      routes: list[tuple[tuple[int, int, int, int], CompiledRoute]]) -> VirtualHost:
    return VirtualHost(name, [route for _, route in sorted(routes, key=lambda item: item[0])])


class RouteTable:
    """The virtual servers of one listener."""

    __slots__ = ("_cache", "default", "exact", "wildcards")

    def __init__(self, exact: dict[str, VirtualHost],
                 wildcards: list[tuple[str, VirtualHost]], default: VirtualHost | None) -> None:
        self.exact = exact
        # '*.shop.example.com' stored as '.shop.example.com', longest first
        self.wildcards = tuple(sorted(wildcards, key=lambda item: -len(item[0])))
        self.default = default
        self._cache: dict[str, VirtualHost | None] = {}

    def virtual_host(self, host: str) -> VirtualHost | None:
        """``host`` is the Host header as sent (case and port included)."""
        found = self.exact.get(host)
        if found is not None:
            return found
        cached = self._cache.get(host, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        name = host.lower()
        bare = name if name.endswith("]") or ":" not in name else name.rpartition(":")[0]
        bare = bare.rstrip(".")
        found = self.exact.get(bare)
        if found is None:
            for suffix, vhost in self.wildcards:
                if bare.endswith(suffix):
                    found = vhost
                    break
            else:
                found = self.default
        if len(self._cache) < 4096:  # bounded: Host is client-controlled
            self._cache[host] = found
        return found
