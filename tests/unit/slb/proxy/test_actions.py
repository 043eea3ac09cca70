"""``slb.proxy.actions``: how route rules read and change a request, without sockets."""

from __future__ import annotations

from slb.balancing.pool import KEY_CLIENT_NET, KEY_COOKIE, KEY_HEADER, KEY_PATH
from slb.proxy import head
from slb.proxy.actions import ExchangeView, RateLimiter, hash_key
from slb.proxy.exchange import Exchange
from slb.proxy.fields import COLON, CRLF


def prepared(target: bytes, *fields: tuple[bytes, bytes]) -> Exchange:
    """An exchange as on_headers_complete leaves it: fields recorded, the head prepared."""
    ex = Exchange(0.0)
    ex.method = b"GET"
    ex.url = target
    for name, value in fields:
        ex.parts += (name, COLON, value, CRLF)
        if name.lower() == b"host":
            ex.host = value
    head.prepare_request_head(ex, b"10.1.2.3", b"shop", b"X-Request-Id: ", lambda: b"r1")
    return ex


def test_the_view_reads_forwarded_fields_only_and_joins_repeats() -> None:
    ex = prepared(b"/a?beta=1&x=%20y", (b"Host", b"shop"), (b"X-Tag", b"a"),
                  (b"Cookie", b"s=1; t=2"), (b"x-tag", b"b"))
    view = ExchangeView(ex, b"10.1.2.3")
    assert view.header(b"x-tag") == b"a, b"
    assert view.header(b"x-forwarded-for") is None  # the proxy's own field, not the client's
    assert (view.cookie("t"), view.cookie("u")) == ("2", None)
    assert (view.query("beta"), view.query("x"), view.query("no")) == ("1", " y", None)
    assert view.client_ip() == "10.1.2.3"


def test_hash_keys_come_from_the_named_part_of_the_request() -> None:
    ex = prepared(b"/cart?q", (b"Host", b"shop"), (b"X-User", b"ada"), (b"Cookie", b"session=s9"))
    ex.path = "/cart"
    peer = b"192.168.7.33"
    assert hash_key(ex, peer, (KEY_HEADER, b"x-user")) == b"ada"
    assert hash_key(ex, peer, (KEY_COOKIE, b"session")) == b"s9"
    assert hash_key(ex, peer, (KEY_COOKIE, b"other")) == b""
    assert hash_key(ex, peer, (KEY_PATH, b"")) == b"/cart"
    assert hash_key(ex, peer, (KEY_CLIENT_NET, b"")) == b"192.168.7"


def test_a_token_bucket_lets_a_burst_through_then_one_request_per_token() -> None:
    limiter = RateLimiter(rate=2.0, burst=3, key="client_ip")
    assert [limiter.take(b"a", 10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(b"a", 10.0) == 0.5  # half a second until the next token
    assert limiter.take(b"b", 10.0) == 0.0  # another client has its own bucket
    assert limiter.take(b"a", 10.5) == 0.0
    assert limiter.take(b"a", 10.5) > 0.0
    assert limiter.take(b"a", 100.0) == 0.0  # refilled, never above the burst
    assert [limiter.take(b"a", 100.0) for _ in range(3)][-1] > 0.0


def test_rate_limit_keys_are_the_client_a_header_or_the_whole_route() -> None:
    ex = prepared(b"/", (b"Host", b"shop"), (b"X-Api-Key", b"k1"))
    assert RateLimiter(1, 1, "client_ip").bucket_key(ex, b"10.0.0.1") == b"10.0.0.1"
    assert RateLimiter(1, 1, "header:X-API-Key").bucket_key(ex, b"10.0.0.1") == b"k1"
    assert RateLimiter(1, 1, "route").bucket_key(ex, b"10.0.0.1") == b""
