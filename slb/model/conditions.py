"""Route conditions (``when``) compiled once, evaluated the same way by the proxy and the admin.

A ``Conditions`` is built from a route's ``When`` when a config is applied (or resolved by the
URL tool): header names lowercased to bytes, networks parsed, nothing left to compile per
request. It asks a ``RequestView`` for the few values it needs (one header, one cookie, one
query parameter, the client address) and stops at the first condition that fails, so a request
pays for what the route tests and nothing else.

The proxy's view reads the exchange lazily (``slb.proxy.actions.ExchangeView``); the admin's URL
tool passes a ``FactsView`` built from what the operator typed. Both reach the same ``holds``,
so "which route wins" cannot differ between them.

Semantics: every listed condition must hold. A header or cookie value ``"*"`` means "present,
any value"; otherwise the value must be equal (a header sent twice: its values joined by ", ",
RFC 9110 §5.3). A query parameter compares its first occurrence, percent-decoded. ``client_ips``
holds when the client address is in any of the networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl

from slb.model.traffic import When

ANY = "*"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RequestView(Protocol):
    def header(self, name: bytes) -> bytes | None:
        """The value of a field (``name`` lowercased), None when absent."""
        ...

    def cookie(self, name: str) -> str | None: ...

    def query(self, name: str) -> str | None: ...

    def client_ip(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Conditions:
    headers: tuple[tuple[bytes, bytes | None], ...]  # (lowercased name, value or None = any)
    cookies: tuple[tuple[str, str | None], ...]
    query: tuple[tuple[str, str | None], ...]
    networks: tuple[Network, ...]

    def holds(self, request: RequestView) -> bool:
        for name, value in self.headers:
            if not _matches(request.header(name), value):
                return False
        for cookie, expected in self.cookies:
            if not _matches(request.cookie(cookie), expected):
                return False
        for param, expected in self.query:
            if not _matches(request.query(param), expected):
                return False
        return not self.networks or in_networks(request.client_ip(), self.networks)

    def failed(self, request: RequestView) -> str | None:
        """The first condition that does not hold, worded for the URL tool; None if all do."""
        for name, value in self.headers:
            if not _matches(request.header(name), value):
                return f"header {name.decode()} is not {_wanted(value)}"
        for cookie, expected in self.cookies:
            if not _matches(request.cookie(cookie), expected):
                return f"cookie {cookie} is not {_wanted(expected)}"
        for param, expected in self.query:
            if not _matches(request.query(param), expected):
                return f"query parameter {param} is not {_wanted(expected)}"
        if self.networks and not in_networks(request.client_ip(), self.networks):
            return f"client address {request.client_ip() or '(none)'} is not in client_ips"
        return None


def _matches(found: str | bytes | None, expected: str | bytes | None) -> bool:
    return found is not None and (expected is None or found == expected)


def _wanted(value: str | bytes | None) -> str:
    if value is None:
        return "present"
    return repr(value.decode("latin-1") if isinstance(value, bytes) else value)


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # (a unix socket peer, or nothing typed in the URL tool)
    return any(ip in network for network in networks)


def field_key(name: str) -> bytes:
    """A header condition's field name as the proxy's field tables key it (lowercased bytes)."""
    return name.lower().encode("latin-1")


def compile_when(when: When | None) -> Conditions | None:
    if when is None:
        return None
    return Conditions(
        headers=tuple((field_key(name),
                       None if value == ANY else value.encode("latin-1"))
                      for name, value in when.headers.items()),
        cookies=tuple((name, None if value == ANY else value)
                      for name, value in when.cookies.items()),
        query=tuple((name, None if value == ANY else value)
                    for name, value in when.query.items()),
        networks=tuple(ipaddress.ip_network(text, strict=False) for text in when.client_ips),
    )


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b=2`` -> {"a": "1", "b": "2"}: RFC 6265 §4.2.1, the first of a name wins."""
    cookies: dict[str, str] = {}
    for pair in header.split(";"):
        name, sep, value = pair.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip('"')
    return cookies


def first_query_value(query: str, name: str) -> str | None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class FactsView:
    """A request described by hand (the URL tool): headers, cookies, query and client address."""

    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query_string: str = ""
    address: str = ""

    def header(self, name: bytes) -> bytes | None:
        wanted = name.decode("latin-1")
        values = [v for k, v in self.headers.items() if k.lower() == wanted]
        if wanted == "cookie" and self.cookies:
            values.append("; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        return ", ".join(values).encode("latin-1") if values else None

    def cookie(self, name: str) -> str | None:
        if name in self.cookies:
            return self.cookies[name]
        header = self.header(b"cookie")
        return parse_cookies(header.decode("latin-1")).get(name) if header else None

    def query(self, name: str) -> str | None:
        return first_query_value(self.query_string, name)

    def client_ip(self) -> str:
        return self.address
