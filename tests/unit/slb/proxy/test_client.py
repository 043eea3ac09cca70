"""The client protocol without sockets: exchanges, order, holds and timeouts on a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from slb.proxy.flow import LINGER_TIMEOUT
from tests.support.fake_proxy import FakeClient

GET_A = b"GET /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def client() -> Iterator[FakeClient]:
    fake = FakeClient()
    yield fake
    fake.close()


def test_forwarded_head_carries_proxy_fields(client: FakeClient) -> None:
    client.send(GET_A)
    member = client.connect()
    head = member.received
    assert head.startswith(b"GET /a HTTP/1.1\r\nHost: example.com\r\n")
    assert b"X-Forwarded-For: 203.0.113.7\r\n" in head
    assert b"X-Forwarded-Host: example.com\r\n" in head
    assert b"X-Request-Id: " in head


def test_header_timeout_answers_408_without_real_waiting(client: FakeClient) -> None:
    client.send(b"GET /a HTTP/1.1\r\nHost: exa")
    client.advance(client.ctx.settings.header_timeout - 0.5)
    assert client.statuses() == []
    client.advance(1.0)
    assert client.statuses() == [408]
    assert client.transport.eof_written  # lingering close: the answer is not reset away
    client.advance(LINGER_TIMEOUT + 0.1)
    assert client.transport.closed


def test_idle_keepalive_connection_closes_quietly_after_keepalive_timeout(
        client: FakeClient) -> None:
    client.send(GET_A)
    client.connect().respond(OK)
    assert client.statuses() == [200]
    client.advance(client.ctx.settings.keepalive_timeout + 0.1)
    assert client.transport.closed
    assert client.statuses() == [200]


def test_valid_request_then_invalid_one_gets_member_answer_then_400(client: FakeClient) -> None:
    client.send(GET_A + b"GET /b HTTP/1.1\r\nHost: example.com\r\nBad Field: x\r\n\r\n")
    assert client.statuses() == []  # the 400 waits for the answer before it
    member = client.connect()
    member.respond(OK)
    assert client.statuses() == [200, 400]
    assert member.received.count(b"HTTP/1.1\r\n") == 1  # only /a reached the member


def test_connection_close_request_gets_member_answer_and_nothing_after_is_read(
        client: FakeClient) -> None:
    client.send(b"GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n" + GET_B)
    member = client.connect()
    member.respond(OK)
    assert client.statuses() == [200]
    assert b"Connection: close" in client.written
    assert b"GET /b" not in member.received
    assert client.transport.eof_written


def test_bytes_after_upgrade_request_wait_for_101(client: FakeClient) -> None:
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n")
    client.send(upgrade + b"POST /evil HTTP/1.1\r\nHost: example.com\r\nContent-Length: 99\r\n")
    member = client.connect()
    assert b"/evil" not in member.received
    member.respond(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   b"Connection: upgrade\r\n\r\n")
    assert client.statuses() == [101]
    assert member.received.endswith(b"POST /evil HTTP/1.1\r\nHost: example.com\r\n"
                                    b"Content-Length: 99\r\n")  # now the tunnel's bytes


def test_upgrade_refused_never_forwards_held_bytes_and_closes_both(client: FakeClient) -> None:
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: upgrade\r\n"
               b"Upgrade: websocket\r\n\r\n")
    client.send(upgrade + GET_B)
    member = client.connect()
    member.respond(OK)
    assert client.statuses() == [200]
    assert b"GET /b" not in member.received
    assert member.transport.closed  # not back to the pool
    assert client.transport.eof_written


def test_surplus_bytes_after_response_close_member_connection(client: FakeClient) -> None:
    client.send(GET_A + GET_B)
    member = client.connect()
    member.respond(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")
    assert client.statuses() == [200]
    assert b"EVIL" not in client.written
    assert member.transport.closed
    assert b"GET /b" not in member.received  # /b waits for a fresh connection
    client.connect().respond(OK)
    assert client.statuses() == [200, 200]


def test_response_head_over_limit_is_502_and_connection_closed() -> None:
    from tests.support.fake_proxy import one_group_config
    client = FakeClient(one_group_config(max_response_header_bytes=2048))
    try:
        client.send(GET_A)
        member = client.connect()
        member.respond(b"HTTP/1.1 200 OK\r\n" + b"X-Fill: " + b"a" * 3000 + b"\r\n\r\n")
        assert client.statuses() == [502]
        assert member.transport.closed
    finally:
        client.close()


def test_bug_on_request_path_is_logged_counted_and_answered_500(
        client: FakeClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(type(client.protocol), "_try", broken)
    with caplog.at_level(logging.ERROR, logger="slb.proxy"):
        client.send(GET_A)
    assert client.statuses() == [500]
    assert client.ctx.stats.internal_errors == 1
    errors = [r for r in caplog.records if r.exc_info]
    assert len(errors) == 1 and "injected bug" in str(errors[0].exc_info[1])


def test_bug_after_response_started_closes_without_second_answer(
        client: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    client.send(GET_A)
    member = client.connect()

    def broken(*args: object) -> None:
        raise RuntimeError("injected bug")

    monkeypatch.setattr(type(client.protocol), "upstream_complete", broken)
    member.respond(OK)
    assert client.statuses() == [200]
    assert client.transport.closed
    assert client.ctx.stats.internal_errors == 1


def test_proxys_own_answer_to_head_has_no_body(client: FakeClient) -> None:
    client.send(b"HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n" + GET_B)
    client.connect().respond(b"HTTP/1.1 200 OK\r\n" + b"X-Fill: " + b"a" * 70000 + b"\r\n\r\n")
    # (502: the head is over max_response_header_bytes) then the next request goes on
    assert client.written.endswith(b"Connection: keep-alive\r\n\r\n")
    client.connect().respond(OK)
    assert client.statuses() == [502, 200]
