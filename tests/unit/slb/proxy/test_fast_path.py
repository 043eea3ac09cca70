"""What the request path's shortcuts (issue 11) must not change: limits that follow a reload,
the read timeout between a member's reads, trailers, the response head limit, and routing
through the Host and path memos."""

from __future__ import annotations

import asyncio
from typing import Any

from slb.model import parse_config
from slb.proxy.context import ProxyContext
from tests.support.fake_proxy import FakeClient, one_group_config

GET_A = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"


def test_limits_follow_the_settings_of_a_pool_delta() -> None:
    document = one_group_config(max_headers=20)
    loop = asyncio.new_event_loop()
    try:
        ctx = ProxyContext(loop, parse_config(document))
        assert ctx.runtime.limits.max_headers == 20
        document["http"] = {"max_headers": 30, "keepalive_timeout": 5}
        new = parse_config(document)
        ctx.apply_groups(new, list(new.groups))
        assert ctx.runtime.limits.max_headers == 30
        assert ctx.runtime.limits.keepalive_timeout == 5
    finally:
        loop.close()


def test_the_read_timeout_counts_from_the_members_last_read() -> None:
    client = FakeClient()
    try:
        read = client.ctx.runtime.pools["g"].read_timeout
        client.send(GET_A + GET_A)
        member = client.connect()
        member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        client.advance(read * 0.8)
        member.respond(b"cd")
        client.advance(read * 0.8)  # longer than the read timeout since the first read
        member.respond(b"ef")
        assert client.statuses() == [200]
        assert client.written.endswith(b"abcdef")
        assert not client.transport.closed
        # the second answer stops mid-body: cut once the member is silent past the timeout
        member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab")
        client.advance(read + 0.5)
        assert client.transport.closed
        assert member.transport.closed
    finally:
        client.close()


def test_trailer_fields_are_not_forwarded_nor_held_against_the_head_limit() -> None:
    client = FakeClient(one_group_config(max_response_header_bytes=2048))
    try:
        client.send(GET_A + GET_A)
        member = client.connect()
        member.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"2\r\nok\r\n0\r\nX-Sum: " + b"s" * 3000 + b"\r\n\r\n")
        assert client.statuses() == [200]
        assert b"X-Sum" not in client.written
        assert client.written.endswith(b"2\r\nok\r\n0\r\n\r\n")
        member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")  # reused
        assert client.statuses() == [200, 200]
    finally:
        client.close()


def test_a_head_over_the_limit_across_reads_is_502() -> None:
    client = FakeClient(one_group_config(max_response_header_bytes=2048))
    try:
        client.send(GET_A)
        member = client.connect()
        member.respond(b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * 1500 + b"\r\n")
        assert client.statuses() == []
        member.respond(b"X-B: " + b"b" * 1000 + b"\r\nContent-Length: 2\r\n\r\nok")
        assert client.statuses() == [502]
        assert member.transport.closed
    finally:
        client.close()


def test_a_head_under_the_limit_with_a_field_split_across_reads_passes() -> None:
    # (a field split between two reads once counted twice when the second read passed the
    # limit: 1,970 bytes counted as ~3,950 against 2,048)
    head = b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 1970 + b"\r\nContent-Length: 2\r\n\r\n"
    assert len(head) < 2048
    for cut in (20, 1000, len(head) - 30):
        client = FakeClient(one_group_config(max_response_header_bytes=2048))
        try:
            client.send(GET_A)
            member = client.connect()
            member.respond(head[:cut])
            member.respond(head[cut:] + b"ok" + b"x" * 100)  # (the read passes the limit)
            assert client.statuses() == [200], cut
        finally:
            client.close()


def routing_config() -> dict[str, Any]:
    return {
        "virtual_servers": [
            {"name": "shop", "listen": "127.0.0.1:8080", "domains": ["shop.test"],
             "routes": [{"path": "/api/", "group": "canary",
                         "when": {"headers": {"x-canary": "1"}}},
                        {"path": "/api/", "group": "api"},
                        {"path": "/", "group": "web"}]},
            {"name": "other", "listen": "127.0.0.1:8080", "domains": ["other.test"],
             "default": True, "routes": [{"path": "/", "group": "web"}]},
        ],
        "groups": [{"name": name, "members": [{"address": f"127.0.0.{i}:80"}]}
                   for i, name in enumerate(("canary", "api", "web"), start=1)],
    }


def group_of(client: FakeClient, request: bytes) -> str:
    client.send(request)
    ex = client.protocol.exchanges[0]
    assert ex.target is not None
    group = ex.target.pool.name
    conn = ex.conn or client.connect().conn  # (a member's idle connection, or a new one)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return group


def test_a_remembered_path_still_tests_each_requests_conditions() -> None:
    client = FakeClient(routing_config())
    try:
        plain = b"GET /api/x HTTP/1.1\r\nHost: shop.test\r\n\r\n"
        canary = b"GET /api/x HTTP/1.1\r\nHost: shop.test\r\nX-Canary: 1\r\n\r\n"
        assert [group_of(client, r) for r in (plain, canary, plain, canary)] == [
            "api", "canary", "api", "canary"]
    finally:
        client.close()


def test_hosts_and_long_paths_route_as_without_the_memos() -> None:
    client = FakeClient(routing_config())
    try:
        long_path = b"/api/" + b"p" * 500
        requests = [
            (b"GET /api/x HTTP/1.1\r\nHost: SHOP.test:8080\r\n\r\n", "api"),  # case, port
            (b"GET /api/x HTTP/1.1\r\nHost: unknown.test\r\n\r\n", "web"),  # the default
            (b"GET " + long_path + b" HTTP/1.1\r\nHost: shop.test\r\n\r\n", "api"),
            (b"GET " + long_path + b" HTTP/1.1\r\nHost: shop.test\r\nX-Canary: 1\r\n\r\n",
             "canary"),
        ]
        for _ in range(2):  # the second time from the memos (the long path: never kept)
            assert [group_of(client, r) for r, _ in requests] == [g for _, g in requests]
    finally:
        client.close()


def test_a_head_over_the_limit_on_a_reused_connection_is_502() -> None:
    client = FakeClient(one_group_config(max_response_header_bytes=2048))
    try:
        client.send(GET_A + GET_A)
        member = client.connect()
        member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        assert client.statuses() == [200]
        member.respond(b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 3000
                       + b"\r\nContent-Length: 2\r\n\r\nok")  # one read, the first
        assert client.statuses() == [200, 502]
    finally:
        client.close()


def test_an_http10_request_kept_alive_by_proxy_connection_is_still_http10() -> None:
    client = FakeClient()
    try:
        client.send(b"GET /a HTTP/1.0\r\nHost: example.com\r\nProxy-Connection: keep-alive\r\n\r\n")
        client.connect().respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"2\r\nok\r\n0\r\n\r\n")
        assert client.statuses() == [200]
        assert b"chunked" not in client.written  # an HTTP/1.0 client: the body ends at close
        assert client.written.endswith(b"\r\n\r\nok")
        assert client.transport.closed
    finally:
        client.close()
