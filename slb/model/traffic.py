"""Where traffic goes: the schema of route conditions, splits and per-route rules (issue 13).

These are the pydantic classes of the keys a route and a group gained for traffic management;
``schema.Route`` and ``schema.Group`` hold them. Like the rest of the schema they are used at load
time only: the proxy compiles them into plain objects (``slb.model.conditions`` for ``when``,
``slb.proxy.actions`` for the rest), so a route without any of them costs nothing per request.

A route sends its requests to exactly one of ``group``, ``split`` or ``redirect``. Every check
that a single field can make is made here, with the field's path in the error: a CIDR that does
not parse, a split whose weights sum to 0, a header rule on a field the proxy owns.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

# Fields a route's header rules may not touch: framing, routing and the proxy's own fields.
# Changing them would let a rule smuggle a second framing past the HTTP rules.
PROTECTED_FIELDS = frozenset({
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "keep-alive",
    "te", "trailer", "proxy-connection",
})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 §5.6.2
_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")  # no CR, LF or NUL (RFC 9110 §5.5)
# the traffic keys of a route, as the admin's drafts carry them to a snapshot
ROUTE_TRAFFIC_FIELDS = ("when", "split", "sticky_cookie", "redirect", "rewrite",
                        "request_headers", "response_headers", "allow", "deny", "rate_limit",
                        "timeouts")
HASH_KEY = re.compile(r"^(client_ip|path|(header|cookie):[!#$%&'*+.^_`|~0-9A-Za-z-]+)$")


class _Strict(BaseModel):
    # the schema's rule: unknown keys are errors, objects are frozen
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_field_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"invalid field name {name!r}")
    return name


def check_field_value(value: str) -> str:
    if not _VALUE.match(value):
        raise ValueError(f"invalid field value {value!r}: no CR, LF or NUL")
    return value


def check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r}: expected an address or address/prefix") \
            from None
    return value


class When(_Strict):
    """Conditions of a route: all must hold. A header or cookie value "*" means present."""

    headers: dict[str, str] = Field(default_factory=dict)
    cookies: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    client_ips: list[Annotated[str, AfterValidator(check_cidr)]] = Field(default_factory=list)

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            check_field_name(name)
            check_field_value(value)
        return headers

    @model_validator(mode="after")
    def _not_empty(self) -> When:
        if not (self.headers or self.cookies or self.query or self.client_ips):
            raise ValueError("an empty `when` always holds: remove it or name a condition")
        return self


class SplitShare(_Strict):
    group: str = Field(min_length=1)
    weight: int = Field(ge=0, le=10000)


class Redirect(_Strict):
    to: str = Field(min_length=1)
    status: Literal[301, 302, 303, 307, 308] = 302
    keep_path: bool = False  # append the request's path and query to `to`

    @field_validator("to")
    @classmethod
    def _to(cls, to: str) -> str:
        return check_field_value(to)


class PrefixChange(_Strict):
    # (`from` is a Python keyword: the attribute is `from_`, the key stays `from`)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: str = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)


class Rewrite(_Strict):
    """The path sent to the member: one of ``strip_prefix`` or ``replace_prefix``."""

    strip_prefix: str | None = None
    replace_prefix: PrefixChange | None = None

    @model_validator(mode="after")
    def _one(self) -> Rewrite:
        if (self.strip_prefix is None) == (self.replace_prefix is None):
            raise ValueError("expected exactly one of strip_prefix, replace_prefix")
        for path in (self.strip_prefix, *((self.replace_prefix.from_, self.replace_prefix.to)
                                          if self.replace_prefix else ())):
            if path is not None and not path.startswith("/"):
                raise ValueError(f"{path!r} must start with '/'")
        return self

    def apply(self, path: str) -> str:
        """The path as the member sees it (unchanged when the prefix is not there)."""
        if self.strip_prefix is not None:
            if path.startswith(self.strip_prefix):
                return path[len(self.strip_prefix):] or "/"
            return path
        change = self.replace_prefix
        assert change is not None
        if path.startswith(change.from_):
            return change.to + path[len(change.from_):]
        return path


class HeaderRules(_Strict):
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields(self) -> HeaderRules:
        for name in [*self.set, *self.remove]:
            check_field_name(name)
            if name.lower() in PROTECTED_FIELDS:
                raise ValueError(f"{name!r} is set by the proxy and cannot be changed")
        for value in self.set.values():
            check_field_value(value)
        return self


class RateLimit(_Strict):
    # A token bucket per key, per worker process (nginx limit_req is per node, shared memory).
    requests_per_second: float = Field(gt=0, le=1e6)
    burst: int = Field(1, ge=1, le=10**6)
    key: str = "client_ip"  # client_ip | header:NAME | route (one bucket for the route)

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        if key != "route" and not re.match(r"^(client_ip|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+)$",
                                            key):
            raise ValueError(f"invalid key {key!r}: expected client_ip, header:NAME or route")
        return key


class RouteTimeouts(_Strict):
    # Overrides of the group's timeouts for this route only (see schema.Timeouts).
    connect: float | None = Field(None, gt=0, le=86400)
    read: float | None = Field(None, gt=0, le=86400)


class HealthCheck(_Strict):
    """Active health checks of a group's members, made once per file-managed node."""

    path: str = "/health"
    interval: float = Field(2.0, gt=0, le=3600)  # seconds between checks of one member
    timeout: float = Field(1.0, gt=0, le=3600)
    rise: int = Field(2, ge=1, le=100)  # consecutive passes that bring a member back (HAProxy 2)
    fall: int = Field(3, ge=1, le=100)  # consecutive failures that take it out (HAProxy 3)
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=lambda: [200], min_length=1)

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        if not path.startswith("/") or " " in path:
            raise ValueError("must start with '/' and hold no space")
        return check_field_value(path)


def check_hash_key(key: str | None) -> str | None:
    if key is not None and not HASH_KEY.match(key):
        raise ValueError(f"invalid hash_key {key!r}: expected header:NAME, cookie:NAME, "
                         "client_ip or path")
    return key


class RouteTraffic(_Strict):
    """Where a route's traffic goes beyond its one group (the keys of ``ROUTE_TRAFFIC_FIELDS``):
    one declaration for the schema's ``Route`` and the admin's route drafts, so both check
    the same keys the same way. A route without these costs nothing more."""

    when: When | None = None
    split: list[SplitShare] | None = None
    sticky_cookie: str | None = Field(None, min_length=1, max_length=100,
                                      pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    request_headers: HeaderRules | None = None
    response_headers: HeaderRules | None = None
    allow: list[Annotated[str, AfterValidator(check_cidr)]] | None = None
    deny: list[Annotated[str, AfterValidator(check_cidr)]] | None = None
    rate_limit: RateLimit | None = None
    timeouts: RouteTimeouts | None = None


def destination_problem(route: Any) -> str | None:
    """What is wrong with where a route sends its requests, or None: the one check of a
    route's ``group``/``split``/``redirect`` and the keys that go with them, shared by the
    schema's ``Route`` and the admin's route drafts."""
    given = [key for key in ("group", "split", "redirect") if getattr(route, key) is not None]
    if len(given) != 1:
        return ("a route needs exactly one of group, split, redirect"
                + (f" (it has {' and '.join(given)})" if given else ""))
    split: list[SplitShare] | None = route.split
    if split is not None:
        if not split:
            return "split needs at least one group"
        if sum(share.weight for share in split) == 0:
            return "split weights sum to 0: no group would take traffic"
        names = [share.group for share in split]
        if len(set(names)) != len(names):
            return "a group appears twice in split"
    elif route.sticky_cookie is not None:
        return "sticky_cookie is used with split only"
    if route.redirect is not None and (route.rewrite or route.request_headers
                                       or route.timeouts or route.response_headers):
        return ("a redirect is answered by the proxy: rewrite, header rules and timeouts do "
                "not apply")
    return None
