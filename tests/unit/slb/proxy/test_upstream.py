"""The member connection: where one response ends, and when the connection may be reused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_proxy import FakeClient

HEAD_A = b"HEAD /a HTTP/1.1\r\nHost: example.com\r\n\r\n"
GET_B = b"GET /b HTTP/1.1\r\nHost: example.com\r\n\r\n"


@pytest.fixture
def client() -> Iterator[FakeClient]:
    fake = FakeClient()
    yield fake
    fake.close()


def pooled(client: FakeClient) -> int:
    member = next(iter(client.ctx.runtime.pools["g"].members.values()))
    return len(member.idle)


@pytest.mark.parametrize("split", [None, 10, 38, 40])
def test_head_response_alone_is_reused_wherever_the_read_splits(client: FakeClient,
                                                                split: int | None) -> None:
    client.send(HEAD_A)
    member = client.connect()
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-A: 1\r\n\r\n"
    for piece in ([raw] if split is None else [raw[:split], raw[split:]]):
        member.respond(piece)
    assert client.statuses() == [200]
    assert b"Content-Length: 6" in client.written
    assert pooled(client) == 1


def test_body_after_head_response_is_dropped_with_the_connection(client: FakeClient) -> None:
    client.send(HEAD_A + GET_B)
    member = client.connect()
    member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nHTTP/1")
    assert client.statuses() == [200]
    assert member.transport.closed and pooled(client) == 0
    assert b"HTTP/1" not in client.written.partition(b"\r\n\r\n")[2]


def test_body_after_204_is_dropped_with_the_connection(client: FakeClient) -> None:
    client.send(GET_B)
    member = client.connect()
    member.respond(b"HTTP/1.1 204 No Content\r\n\r\nsurplus")
    assert client.statuses() == [204]
    assert b"surplus" not in client.written
    assert member.transport.closed and pooled(client) == 0


def test_interim_then_final_response_in_one_read(client: FakeClient) -> None:
    client.send(GET_B)
    client.connect().respond(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert client.statuses() == [103, 200]
    assert pooled(client) == 1


def test_close_delimited_coded_body_is_rechunked_and_ended(client: FakeClient) -> None:
    client.send(GET_B)
    member = client.connect()
    member.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nGZIPDATA")
    member.close()
    assert client.written.endswith(b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                                   b"8\r\nGZIPDATA\r\n0\r\n\r\n")


def test_coded_body_to_http10_client_is_502(client: FakeClient) -> None:
    client.send(b"GET /b HTTP/1.0\r\n\r\n")
    member = client.connect()
    member.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nGZ\r\n")
    assert client.statuses() == [502]
    assert member.transport.closed


def test_connection_options_of_member_drop_named_fields(client: FakeClient) -> None:
    client.send(GET_B)
    client.connect().respond(b"HTTP/1.1 200 OK\r\nConnection: x-secret\r\nX-Secret: 1\r\n"
                             b"X-Kept: 2\r\nContent-Length: 0\r\n\r\n")
    assert b"X-Secret" not in client.written and b"X-Kept: 2" in client.written


def test_bytes_on_a_pooled_connection_retire_it_before_reuse(client: FakeClient) -> None:
    client.send(GET_B)
    member = client.connect()
    member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert pooled(client) == 1
    member.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL")  # nobody asked
    assert member.transport.closed
    client.send(GET_B)
    ex = client.protocol.exchanges[0]
    assert ex.conn is None  # the poisoned connection was not taken: a fresh connect is asked
    assert client.loop.tasks
