"""Which group serves this URL, answered by the data plane's own routing rules.

An operator pastes a URL; the admin says, per listener of each cluster, which virtual server
the host picks (and why: an exact domain, a wildcard, the listener's default), which route the
path takes and so which group serves it. A second answer, the order in which a virtual server
tries its routes, is shown on the virtual server's page.

The answer must be the proxy's, not a re-implementation that can drift from it: both come from
``slb.model.hosts`` (``resolve`` and ``route_order``), which the proxy's router is compiled
from. A cluster's content is built into the snapshot the nodes would get, cached per (content
hash, cluster): a page that asks about ten routes builds each cluster once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from admin.domain.errors import Invalid
from admin.domain.snapshots import Content, build_snapshot, cluster_content, content_hash
from slb.model import Config, ConfigErrors, resolve, route_order, split_host_port

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
    if not text or any(c.isspace() for c in text):
        raise Invalid("not a URL", [f"url: {text!r} is not a URL: expected e.g. "
                                    "http://shop.example.com/api/cart"])
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("not a URL", ["url: expected e.g. http://shop.example.com/api/cart"])
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Invalid("not a URL", ["url: the port is not a number"]) from None
    host = parts.netloc.rpartition("@")[2]
    try:  # the proxy's own rule for a host: a DNS name or an IP address
        split_host_port(host if parts.port else f"{host}:{port}")
    except ValueError as exc:
        raise Invalid("not a URL", [f"url: {exc}: expected e.g. "
                                    "http://shop.example.com/api/cart"]) from None
    return Url(host, parts.path or "/", port)


def resolve_url(content: Content, cluster: str, url: Url) -> list[RouteAnswer] | None:
    """One answer per listener of ``cluster`` on the URL's port (every listener when none is
    on it); None when the cluster's content does not compile."""
    config = _config(content, cluster)
    if config is None:
        return None
    listens = sorted({vs.listen for vs in config.virtual_servers})
    listeners = [a for a in listens if a.rpartition(":")[2] == str(url.port)] or listens
    _, routes, _ = cluster_content(content, cluster)
    answers = []
    for listen in listeners:
        found = resolve(config, url.host, url.path, listen)
        if found is None or found.virtual_server is None:
            answers.append(RouteAnswer(cluster, listen, None, "", None, None))
            continue
        route = None
        if found.route_index is not None:
            # route_index counts the virtual server's routes in content order (build_snapshot)
            route = [r for r in routes
                     if r["virtual_server"] == found.virtual_server][found.route_index]
        answers.append(RouteAnswer(cluster, listen, found.virtual_server, found.matched_by,
                                   route, route["group"] if route else None))
    return answers


def ordered_routes(content: Content, virtual_server: dict[str, Any]
                   ) -> list[dict[str, Any]] | None:
    """The routes of ``virtual_server`` in the order the proxy tries them; None when its
    cluster does not compile."""
    routes = [r for r in content.get("route", [])
              if r["virtual_server"] == virtual_server["name"]]
    config = _config(content, virtual_server["cluster"])
    if config is None:
        return None
    built = next((vs for vs in config.virtual_servers if vs.name == virtual_server["name"]),
                 None)
    return None if built is None else [routes[i] for i in route_order(built.routes)]


def _config(content: Content, cluster: str) -> Config | None:
    key = (content_hash(content), cluster)
    found = _cache.get(key)
    if found is None:
        try:
            found = build_snapshot(content, cluster, 1, {})
        except ConfigErrors:
            return None
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[key] = found
    return found


_cache: dict[tuple[str, str], Config] = {}
