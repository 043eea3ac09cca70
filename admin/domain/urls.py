"""Which group serves this URL, answered by the data plane's own routing rules.

An operator pastes a URL; the admin says, per listener of each cluster, which virtual server
the host picks (and why: an exact domain, a wildcard, the listener's default), which route the
path takes and so which group serves it. Routes with conditions (``when``) are decided by the
request facts the operator adds (headers, cookies, client address: ``parse_facts``); a route
whose path matched but whose conditions did not hold is listed with the reason. A second
answer, the order in which a virtual server tries its routes, is shown on the virtual server's
page.

The answer must be the proxy's, not a re-implementation that can drift from it: both come from
``slb.model.hosts`` (``resolve`` and ``route_order``), which the proxy's router is compiled
from. A cluster's content is built into the snapshot the nodes would get, cached per (content
hash, cluster): a page that asks about ten routes builds each cluster once.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from admin.domain.errors import Invalid
from admin.domain.snapshots import Content, build_snapshot, cluster_content, content_hash
from slb.model import Config, ConfigErrors, FactsView, resolve, route_order, split_host_port

CACHE_SIZE = 32  # compiled clusters kept; one admin rarely shows more at once


@dataclass(frozen=True, slots=True)
class Url:
    """A URL as the proxy sees it: the Host header, the path, the port it arrives on."""

    host: str
    path: str
    port: int
    query: str = ""


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    cluster: str
    listen: str
    virtual_server: str | None  # None: no virtual server on this listener takes the host
    matched_by: str  # "domain x" | "wildcard *.x" | "default virtual server of the listener"
    route: dict[str, Any] | None  # the route object (draft shape), None: no route matches
    group: str | None
    groups: tuple[str, ...] = ()  # every group the route sends to (a split's)
    passed_over: tuple[str, ...] = ()  # routes whose path matched but conditions did not

    def to_json(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "listen": self.listen,
                "virtual_server": self.virtual_server, "matched_by": self.matched_by,
                "route": self.route, "group": self.group, "groups": list(self.groups),
                "passed_over": list(self.passed_over)}


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
    return Url(host, parts.path or "/", port, parts.query)


def parse_facts(headers: list[str], cookies: list[str], client_ip: str = "",
                query: str = "") -> FactsView:
    """What the operator says of the request: ``name: value`` headers, ``name=value``
    cookies, a client address; Invalid with every malformed one."""
    errors: list[str] = []
    parsed_headers: dict[str, str] = {}
    for i, text in enumerate(h for h in headers if h.strip()):
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            errors.append(f"header[{i}]: expected 'name: value', got {text!r}")
        parsed_headers[name.strip().lower()] = value.strip()
    parsed_cookies: dict[str, str] = {}
    for i, text in enumerate(c for c in cookies if c.strip()):
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            errors.append(f"cookie[{i}]: expected 'name=value', got {text!r}")
        parsed_cookies[name.strip()] = value.strip()
    if client_ip.strip():
        try:
            ipaddress.ip_address(client_ip.strip())
        except ValueError:
            errors.append(f"client_ip: {client_ip!r} is not an IP address")
    if errors:
        raise Invalid("invalid request facts", errors)
    return FactsView(parsed_headers, parsed_cookies, query, client_ip.strip())


def resolve_url(content: Content, cluster: str, url: Url, facts: FactsView | None = None
                ) -> list[RouteAnswer] | None:
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
        found = resolve(config, url.host, url.path, listen, facts)
        if found is None or found.virtual_server is None:
            answers.append(RouteAnswer(cluster, listen, None, "", None, None))
            continue
        route = None
        if found.route_index is not None:
            # route_index counts the virtual server's routes in content order (build_snapshot)
            route = [r for r in routes
                     if r["virtual_server"] == found.virtual_server][found.route_index]
        answers.append(RouteAnswer(cluster, listen, found.virtual_server, found.matched_by,
                                   route, route.get("group") if route else None,
                                   found.groups, found.passed_over))
    return answers


def resolve_everywhere(content: Content, url: str, headers: list[str] | None = None,
                       cookies: list[str] | None = None, client_ip: str = ""
                       ) -> tuple[list[RouteAnswer], list[str]]:
    """``resolve_url`` for every cluster of ``content``: the answers of all, and notes (a
    cluster that does not compile, no listener on the URL's port)."""
    target = parse_url(url)
    facts = parse_facts(headers or [], cookies or [], client_ip, target.query)
    answers: list[RouteAnswer] = []
    notes: list[str] = []
    for cluster in content.get("cluster", []):
        found = resolve_url(content, cluster["name"], target, facts)
        if found is None:
            notes.append(f"cluster {cluster['name']}: its configuration does not compile")
        else:
            answers += found
    if answers and all(not a.listen.endswith(f":{target.port}") for a in answers):
        notes.append(f"No listener is on port {target.port}: every listener is shown.")
    return answers, notes


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
