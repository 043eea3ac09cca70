"""Which group serves this URL, answered by the data plane's own routing code.

An operator pastes a URL; the admin says, per listener of each cluster, which virtual server
the host picks (and why: an exact domain, a wildcard, the listener's default), which route the
path takes and so which group serves it. A second answer key, the order in which a virtual
server tries its routes, is shown on the virtual server's page.

The answer must be the proxy's, not a re-implementation that can drift from it, so a cluster's
content is compiled into the proxy's route tables and asked. This is the ONE module of the
admin that reads the proxy's routing internals (``slb.router``, ``slb.runtime``,
``slb.metrics``); everything it needs from them sits in the three functions of the section
"the data plane's routing" below. When ``slb.model.hosts`` (host normalisation and route
ordering shared by the proxy and the admin) exists, those three become calls of
``slb.model.hosts.resolve(config, host, path, listen)`` and its route ordering, and the imports
of ``slb.router``, ``slb.runtime`` and ``slb.metrics`` go.

Compiled tables are cached per (content hash, cluster): a page that asks about ten routes
compiles each cluster once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from admin.domain.errors import Invalid
from admin.domain.snapshots import Content, build_snapshot, cluster_content, content_hash
from slb.metrics import Stats
from slb.model import ConfigErrors
from slb.router import RouteTable, VirtualHost
from slb.runtime import Runtime, build_runtime

CACHE_SIZE = 32  # compiled clusters kept; one admin rarely shows more at once


@dataclass(frozen=True, slots=True)
class Url:
    """A URL as the proxy sees it: the Host header, the path, the port it arrives on."""

    host: str
    path: str
    port: int


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    cluster: str
    listen: str
    virtual_server: str | None  # None: no virtual server on this listener takes the host
    matched_by: str  # "domain x" | "wildcard *.x" | "default virtual server of the listener"
    route: dict[str, Any] | None  # the route object (draft shape), None: no route matches
    group: str | None

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "listen": self.listen,
                "virtual_server": self.virtual_server, "matched_by": self.matched_by,
                "route": self.route, "group": self.group}


def parse_url(text: str) -> Url:
    """``shop.example.com/api`` or ``https://shop.example.com:8443/api``; Invalid otherwise."""
    text = text.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("not a URL", ["url: expected e.g. http://shop.example.com/api/cart"])
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Invalid("not a URL", ["url: the port is not a number"]) from None
    return Url(parts.netloc.rpartition("@")[2], parts.path or "/", port)


def resolve_url(content: Content, cluster: str, url: Url) -> list[RouteAnswer] | None:
    """One answer per listener of ``cluster`` on the URL's port (every listener when none is
    on it); None when the cluster's content does not compile."""
    runtime = _compiled(content, cluster)
    if runtime is None:
        return None
    tables = runtime.tables
    listeners = [a for a in tables if a.rpartition(":")[2] == str(url.port)] or list(tables)
    _, routes, _ = cluster_content(content, cluster)
    answers = []
    for listen in sorted(listeners):
        answers.append(_answer(cluster, listen, tables[listen], routes, url))
    return answers


def ordered_routes(content: Content, virtual_server: dict[str, Any]
                   ) -> list[dict[str, Any]] | None:
    """The routes of ``virtual_server`` in the order the proxy tries them; None when its
    cluster does not compile."""
    routes = [r for r in content.get("route", [])
              if r["virtual_server"] == virtual_server["name"]]
    runtime = _compiled(content, virtual_server["cluster"])
    table = runtime.tables.get(virtual_server["listen"]) if runtime is not None else None
    if table is None:
        return None
    order = _route_order(table, virtual_server["name"])
    return None if order is None else [routes[i] for i in order]


# -- the data plane's routing (the part that becomes slb.model.hosts after the merge) ----------


def _compiled(content: Content, cluster: str) -> Runtime | None:
    key = (content_hash(content), cluster)
    found = _cache.get(key)
    if found is None:
        try:
            config = build_snapshot(content, cluster, 1, {})
        except ConfigErrors:
            return None
        found = build_runtime(config, None, Stats(), set())
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[key] = found
    return found


_cache: dict[tuple[str, str], Runtime] = {}


def _answer(cluster: str, listen: str, table: RouteTable, routes: list[dict[str, Any]],
            url: Url) -> RouteAnswer:
    vhost = table.virtual_host(url.host)
    if vhost is None:
        return RouteAnswer(cluster, listen, None, "", None, None)
    target = vhost.match(url.path)
    route = None
    if target is not None:
        # route_index counts the virtual server's routes in content order (build_snapshot)
        route = [r for r in routes if r["virtual_server"] == vhost.name][target.route_index]
    return RouteAnswer(cluster, listen, vhost.name, _host_match(table, url.host), route,
                       route["group"] if route else None)


def _host_match(table: RouteTable, host: str) -> str:
    """How ``table`` picks a virtual server for ``host``: for display only."""
    name = host.lower()
    bare = name if name.endswith("]") or ":" not in name else name.rpartition(":")[0]
    bare = bare.rstrip(".")
    if host in table.exact or bare in table.exact:
        return f"domain {bare}"
    for suffix, _ in table.wildcards:
        if bare.endswith(suffix):
            return f"wildcard *{suffix}"
    return "default virtual server of the listener"


def _route_order(table: RouteTable, name: str) -> list[int] | None:
    """Indexes (content order) of virtual server ``name``'s routes, in the order tried."""
    found: dict[str, VirtualHost] = {}
    for vhost in [*table.exact.values(), *(v for _, v in table.wildcards), table.default]:
        if vhost is not None:
            found.setdefault(vhost.name, vhost)
    vhost = found.get(name)
    return None if vhost is None else [c.target.route_index for c in vhost.routes]
