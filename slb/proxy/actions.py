"""A route's own rules, compiled: conditions' view of a request, splits, answers, edits (issue 13).

A route without ``when``, ``split`` or any rule compiles to a ``CompiledRoute`` whose
``actions`` is None: the dispatch reads one attribute more and nothing else changes. A route
with rules gets one ``RouteActions``, built at apply time, which ``ClientProtocol._dispatch``
calls once per request in this order:

1. ``allow``/``deny`` (client address against networks parsed at apply time): 403;
2. ``rate_limit``: a token bucket per key in this worker process (nginx ``limit_req``, without
   its shared memory): 429 with ``Retry-After``, the refusal counted as a metric;
3. ``redirect``: the proxy answers with ``Location`` (the request path and query appended
   with ``keep_path``);
4. ``split``: smooth weighted round-robin across groups (nginx's step, the same function that
   balances members, ``slb.balancing.balancer.smooth_wrr``): a group with no usable member
   leaves the round until it has one again. ``sticky_cookie`` pins a client to the group its
   cookie names while that group has a usable member, and is set when the split chooses;
5. ``rewrite`` and ``request_headers``: the head already prepared for the member is edited
   (split into lines, fields dropped, set, joined): done for these routes only;
6. ``response_headers`` and the sticky cookie: carried on the exchange (``response_edit``, None
   for a plain route) to the response relay, which drops the member's fields of those names
   and appends the route's.

``ExchangeView`` is how conditions (``slb.model.conditions``) and hash keys read a request: a
header is found by scanning the recorded fields, the cookie header is parsed once per view.
"""

from __future__ import annotations

import ipaddress
import math
from typing import TYPE_CHECKING

from slb.balancing.balancer import smooth_wrr
from slb.balancing.pool import (
    KEY_CLIENT_IP,
    KEY_CLIENT_NET,
    KEY_COOKIE,
    KEY_HEADER,
    KEY_PATH,
)
from slb.errors import RouteAnswer
from slb.model.conditions import Network, first_query_value, in_networks, parse_cookies
from slb.proxy.fields import COLON

if TYPE_CHECKING:
    from slb.balancing.pool import Pool
    from slb.metrics import Stats
    from slb.model import Route
    from slb.proxy.exchange import Exchange
    from slb.proxy.target import Target

RATE_KEYS = 65536  # buckets kept per rate limit before the full ones are forgotten
_CRLF = b"\r\n"
_INF = float("inf")
_NOTHING: frozenset[bytes] = frozenset()


class ExchangeView:
    """A request as conditions and hash keys see it (``slb.model.conditions.RequestView``)."""

    __slots__ = ("_cookies", "ex", "peer")

    def __init__(self, ex: Exchange, peer: bytes) -> None:
        self.ex = ex
        self.peer = peer
        self._cookies: dict[str, str] | None = None

    def header(self, name: bytes) -> bytes | None:
        # forwarded fields are (name, ": ", value, CRLF) quadruples after the request line;
        # the proxy's own fields that follow them are not (their second part is not COLON)
        parts = self.ex.parts
        found: bytes | None = None
        for i in range(1, len(parts) - 2, 4):
            if parts[i + 1] is not COLON:
                break
            if parts[i].lower() == name:
                value = parts[i + 2]
                found = value if found is None else found + b", " + value
        return found

    def cookie(self, name: str) -> str | None:
        cookies = self._cookies
        if cookies is None:
            header = self.header(b"cookie")
            # several Cookie fields are joined with "; " (RFC 9113 §8.2.3 says how)
            cookies = self._cookies = parse_cookies(
                header.decode("latin-1").replace(", ", "; ") if header else "")
        return cookies.get(name)

    def query(self, name: str) -> str | None:
        _, sep, query = self.ex.url.partition(b"?")
        return first_query_value(query.decode("latin-1"), name) if sep else None

    def client_ip(self) -> str:
        return self.peer.decode("latin-1")


def hash_key(ex: Exchange, peer: bytes, key: tuple[int, bytes]) -> bytes:
    """What a hash group hashes for this request (b"" when the request lacks it)."""
    kind, name = key
    if kind == KEY_CLIENT_IP:
        return peer
    if kind == KEY_CLIENT_NET:
        if peer.count(b".") == 3 and b":" not in peer:
            return peer.rpartition(b".")[0]  # nginx ip_hash: the first three octets
        return peer
    if kind == KEY_PATH:
        return ex.path.encode("latin-1")
    view = ExchangeView(ex, peer)
    if kind == KEY_HEADER:
        return view.header(name) or b""
    assert kind == KEY_COOKIE
    value = view.cookie(name.decode("latin-1"))
    return value.encode("latin-1") if value is not None else b""


class RateLimiter:
    """Token buckets by key: ``rate`` tokens a second up to ``burst``; a request takes one."""

    __slots__ = ("_buckets", "burst", "field", "key", "rate")

    def __init__(self, rate: float, burst: int, key: str) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.key = key  # "client_ip" | "route" | "header:name"
        # the header a "header:name" key reads, lowercased once
        self.field = key.partition(":")[2].lower().encode()
        self._buckets: dict[bytes, tuple[float, float]] = {}  # key -> (tokens, at)

    def bucket_key(self, ex: Exchange, peer: bytes) -> bytes:
        if self.key == "client_ip":
            return peer
        if self.key == "route":
            return b""
        return ExchangeView(ex, peer).header(self.field) or b""

    def take(self, key: bytes, now: float) -> float:
        """0 if a request may pass (its token taken), else the seconds until one may."""
        buckets = self._buckets
        tokens, at = buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            if len(buckets) >= RATE_KEYS and key not in buckets:
                self._forget_full(now)
            buckets[key] = (tokens - 1.0, now)
            return 0.0
        buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Buckets refilled to the brim are the same as no bucket: drop them (else all)."""
        rate, burst = self.rate, self.burst
        kept = {k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * rate < burst}
        self._buckets = kept if len(kept) < RATE_KEYS // 2 else {}


class Share:
    """One group of a split, weighted by smooth WRR like a member (see ``smooth_wrr``)."""

    __slots__ = ("current_weight", "ejected_until", "name", "target", "weight")

    def __init__(self, name: str, weight: int, target: Target) -> None:
        self.name = name
        self.weight = weight
        self.target = target
        self.current_weight = 0
        self.ejected_until = 0.0  # _INF while its group has no usable member


def usable(pool: Pool, now: float) -> bool:
    """A member takes traffic and is not ejected: the group can serve a request now."""
    return any(m.ejected_until <= now for m in pool.balancer.members)


class RouteActions:
    """The compiled rules of one route (see the module docstring for their order)."""

    __slots__ = ("allow", "cookie_prefix", "deny", "keep_path", "limiter", "redirect",
                 "redirect_status",
                 "request_drop", "request_set", "response_drop", "response_set", "rewrite",
                 "route_label", "shares", "sticky", "target", "vhost")

    def __init__(self, vhost: str, index: int, route: Route, target: Target | None,
                 shares: list[Share]) -> None:
        self.vhost = vhost
        self.route_label = str(index)
        self.target = target  # the route's group; None for a split or a redirect
        self.shares = tuple(shares)
        self.allow: tuple[Network, ...] | None = _networks(route.allow)
        self.deny: tuple[Network, ...] | None = _networks(route.deny)
        limit = route.rate_limit
        self.limiter = RateLimiter(limit.requests_per_second, limit.burst, limit.key) \
            if limit is not None else None
        redirect = route.redirect
        self.redirect = redirect.to if redirect is not None else None
        self.redirect_status = redirect.status if redirect is not None else 0
        self.sticky = route.sticky_cookie
        self.cookie_prefix = f"Set-Cookie: {route.sticky_cookie}=".encode() \
            if route.sticky_cookie else b""
        self.rewrite = route.rewrite
        request = route.request_headers
        self.request_drop = frozenset(n.lower().encode() for n in [*request.remove, *request.set]) \
            if request is not None else frozenset()
        self.request_set = b"".join(f"{n}: {v}\r\n".encode() for n, v in request.set.items()) \
            if request is not None else b""
        response = route.response_headers
        self.response_drop = frozenset(
            n.lower().encode() for n in [*response.remove, *response.set]) \
            if response is not None else None
        self.response_set = b"".join(f"{n}: {v}\r\n".encode() for n, v in response.set.items()) \
            if response is not None else b""
        self.keep_path = redirect.keep_path if redirect is not None else False

    def apply(self, ex: Exchange, peer: bytes, now: float, stats: Stats) -> Target:
        """The target for ``ex``, its head edited; raises ``RouteAnswer`` when the route
        answers itself (403, 429, a redirect)."""
        if self.allow is not None or self.deny is not None:
            address = peer.decode("latin-1")
            if (self.allow is not None and not in_networks(address, self.allow)) or (
                    self.deny is not None and in_networks(address, self.deny)):
                stats.count_route_refusal(self.vhost, self.route_label, "deny")
                raise RouteAnswer(403, "DENY")
        limiter = self.limiter
        if limiter is not None:
            wait = limiter.take(limiter.bucket_key(ex, peer), now)
            if wait:
                stats.count_route_refusal(self.vhost, self.route_label, "rate_limit")
                raise RouteAnswer(429, "RL", b"Retry-After: %d\r\n" % max(1, math.ceil(wait)))
        if self.redirect is not None:
            raise RouteAnswer(self.redirect_status, "RD", self._location(ex))
        target = self.target if not self.shares else self._split(ex, peer, now)
        assert target is not None
        if self.rewrite is not None or self.request_set or self.request_drop:
            self._edit_head(ex)
        if self.response_drop is not None:
            sticky = ex.response_edit  # (a sticky cookie the split set)
            ex.response_edit = (self.response_drop,
                                self.response_set + (sticky[1] if sticky else b""))
        return target

    def _location(self, ex: Exchange) -> bytes:
        to = self.redirect
        assert to is not None
        if self.keep_path:
            url = ex.url if ex.url[:1] == b"/" else ex.path.encode("latin-1")
            location = to.rstrip("/").encode() + url
        else:
            location = to.encode()
        return b"Location: " + location + _CRLF

    def _split(self, ex: Exchange, peer: bytes, now: float) -> Target:
        shares = self.shares
        for share in shares:
            share.ejected_until = 0.0 if usable(share.target.pool, now) else _INF
        if self.sticky is not None:
            wanted = ExchangeView(ex, peer).cookie(self.sticky)
            for share in shares:
                if share.name == wanted and share.weight > 0 and share.ejected_until == 0.0:
                    return share.target
        share = smooth_wrr(shares, (), now)  # (ejected_until is 0 or infinity)
        if share is None:
            # no group has a usable member: the first one answers (503, or its panic mode)
            share = next(s for s in shares if s.weight > 0)
        if self.sticky is not None:
            ex.response_edit = (_NOTHING, self.cookie_prefix + share.name.encode()
                                + b"; Path=/; HttpOnly\r\n")
        return share.target

    def _edit_head(self, ex: Exchange) -> None:
        """Rewrite the request line's path and the route's request fields in ``ex.head``."""
        lines = ex.head[:-4].split(_CRLF)
        if self.rewrite is not None:
            method, target, version = lines[0].split(b" ")
            path, sep, query = target.partition(b"?")
            rewritten = self.rewrite.apply(path.decode("latin-1")).encode("latin-1")
            lines[0] = b" ".join((method, rewritten + sep + query, version))
        drop = self.request_drop
        if drop:
            lines = [lines[0]] + [line for line in lines[1:]
                                  if line.partition(b":")[0].lower() not in drop]
        ex.head = _CRLF.join(lines) + _CRLF + self.request_set + _CRLF


def _networks(texts: list[str] | None) -> tuple[Network, ...] | None:
    if texts is None:
        return None
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)
