"""No byte crosses from one exchange to another (issue 8): the raw-byte smuggling suite.

Each test writes exact bytes to the proxy, which forwards to a strict recording member
(tests/support/strict_member.py), and checks both ends:

- the member: everything it parsed came through the proxy's request path (X-Forwarded-For
  naming the proxy's peer and a request id on every request), and it choked on nothing, unless
  the test says so;
- the client: exactly one response per request it sent, in order, cut by h11's strict parser
  (tests/support/client.py ``split_responses``), with the statuses the issue's "What must hold"
  requires, and the close where one is required.

A test that expects the client connection to stay open ends its bytes with ``LAST`` (a request
with ``Connection: close``), so the proxy's close is the end of the stream and the test never
waits for silence. Member answers name the request they answer (method, target, connection,
request id), so a response delivered to the wrong request shows.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from tests.support.backends import response
from tests.support.client import (
    Connection,
    RawReply,
    Split,
    build_request,
    send_raw,
    split_responses,
)
from tests.support.proxy import simple_config
from tests.support.strict_member import Reply, StrictMember, start_member
from tests.support.timing import wait_until

HOST = "example.com"
TIMEOUT = 5.0
INJECTED = response(200, b"INJECTED\n", {"X-Injected": "1"})
LAST = build_request("GET", "/last", headers=[("Connection", "close")])
WEBSOCKET = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
             ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
H2C = [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
       ("HTTP2-Settings", "AAMAAABkAAQCAAAAAAIAAAAA")]
SWITCH = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
          b"Upgrade: websocket\r\n\r\n")

Start = Callable[..., Awaitable[int]]


# -- set-up and checks ----------------------------------------------------------------------------


@pytest.fixture
async def member() -> AsyncIterator[StrictMember]:
    started = await start_member()
    yield started
    await started.close()


@pytest.fixture
async def start(member: StrictMember, proxy_factory: Any) -> Start:
    """``await start(**http_settings)``: a proxy in front of the strict member; its port."""

    async def make(**http: Any) -> int:
        config = simple_config([member.address])
        if http:
            config["http"] = http
        return (await proxy_factory(config)).port

    return make


def req(method: str = "GET", path: str = "/", *fields: tuple[str, str], body: bytes | None = None,
        host: str | None = HOST) -> bytes:
    return build_request(method, path, host, list(fields), body)


def http10(path: str, *fields: str) -> bytes:
    return (f"GET {path} HTTP/1.0\r\n" + "".join(f + "\r\n" for f in fields) + "\r\n").encode()


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


async def exchange(port: int, *writes: bytes, methods: Sequence[str] = (),
                   timeout: float = TIMEOUT) -> tuple[Split, RawReply]:
    reply = await send_raw(port, *writes, timeout=timeout)
    return split_responses(reply.data, methods, reply.closed), reply


def answered(split: Split, *expected: int | str) -> None:
    """The responses, in order: a path means the member's 200 naming that path, a number a
    response of that status (made by the proxy, or by a script)."""

    def seen(index: int) -> int | str:
        r = split.responses[index]
        want = expected[index] if index < len(expected) else 0
        if isinstance(want, int) or r.status != 200:
            return r.status
        return r.body.decode("latin-1").split(" ")[1] if b" " in r.body else "(scripted 200)"

    got = [seen(i) for i in range(len(split.responses))]
    assert got == list(expected), f"responses {got}, wanted {list(expected)} " \
                                  f"(then {split.rest[:200]!r}: {split.error})"
    assert not split.rest, f"bytes after the responses: {split.rest[:300]!r} ({split.error})"


# -- 1. nothing follows an Upgrade request before the member's 101 ------------------------------


UPGRADE_REQUESTS = {
    "websocket GET": req("GET", "/up", *WEBSOCKET),
    "h2c GET": req("GET", "/up", *H2C),
    "websocket POST with body": req("POST", "/up", *WEBSOCKET, body=b"hello"),
    "h2c POST with body": req("POST", "/up", *H2C, body=b"hello"),
}


@pytest.mark.parametrize("upgrade", list(UPGRADE_REQUESTS.values()), ids=list(UPGRADE_REQUESTS))
async def test_request_after_refused_upgrade_is_parsed_by_the_proxy_or_dropped(
        start, member, upgrade):
    port = await start()
    split, reply = await exchange(port, upgrade + req("GET", "/second") + LAST)
    member.assert_nothing_raw()
    # The member said 200, not 101: what follows is HTTP again (or the proxy closes).
    assert split.responses and split.statuses[0] == 200
    answered(split, *["/up", "/second", "/last"][:len(split.responses)])
    assert reply.closed
    assert member.paths() == ["/up", "/second", "/last"][:len(member.requests)]
    assert member.early == [(member.requests[0], b"")], "bytes sent before the member's answer"


async def test_unfinished_post_after_refused_upgrade_cannot_capture_the_next_clients_request(
        start, member):
    port = await start()
    attacker = await Connection.open(port)
    try:
        # The attack from the issue: the POST's 120 body bytes are to be the victim's request.
        attacker.send(req("GET", "/up", *WEBSOCKET)
                      + b"POST /capture HTTP/1.1\r\nHost: example.com\r\n"
                        b"Content-Length: 120\r\n\r\n")
        first = await attacker.read_response(timeout=TIMEOUT)
        assert first.status == 200
        split, _ = await exchange(port, req("GET", "/victim", ("Cookie", "session=SECRET"),
                                            ("Connection", "close")))
    finally:
        await attacker.close()
    answered(split, "/victim")
    assert not any(b"SECRET" in r.body for r in member.requests), "the victim's request was " \
        "read as the body of the attacker's"
    member.assert_nothing_raw()


@pytest.mark.parametrize("upgrade, body", [
    (req("GET", "/up", *WEBSOCKET), b""),
    (req("POST", "/up", *WEBSOCKET, body=b"hello"), b"hello"),
], ids=["GET", "POST with body"])
async def test_bytes_after_upgrade_reach_the_member_only_after_its_101(
        start, member, upgrade, body):
    member.script("/up", Reply(SWITCH, tunnel=True))
    port = await start()
    reply = await send_raw(port, upgrade + b"ping", timeout=TIMEOUT,
                           until=lambda data: data.endswith(b"ping"))
    split = split_responses(reply.data, closed=reply.closed)
    assert split.statuses == [101] and split.rest == b"ping"
    assert member.paths() == ["/up"] and member.requests[0].body == body
    assert member.early == [(member.requests[0], b"")], "bytes sent before the member's 101"
    assert list(member.tunnels.values()) == [b"ping"]
    member.assert_nothing_raw()


# -- 2, 3. Connection options never remove framing or routing fields ----------------------------


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: example.com\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [
    req("POST", "/a", ("Connection", "Content-Length"), body=SMUGGLED),
    req("POST", "/a", ("Connection", "keep-alive, content-length"), body=SMUGGLED),
    req("POST", "/a", ("Connection", "close, CONTENT-LENGTH"), body=SMUGGLED),
    req("POST", "/a", ("Connection", "Transfer-Encoding"), ("Transfer-Encoding", "chunked"),
        body=chunked(SMUGGLED)),
    req("GET", "/a", ("Connection", "Host")),
    req("GET", "/a", ("Connection", "keep-alive"), ("Connection", "host")),
], ids=["content-length", "keep-alive+content-length", "close+CONTENT-LENGTH",
        "transfer-encoding", "host", "host in a second Connection field"])
async def test_connection_naming_framing_or_host_is_refused_and_closed(
        start, member, request_bytes):
    port = await start()
    split, reply = await exchange(port, request_bytes + req("GET", "/after"))
    answered(split, 400)
    assert reply.closed
    assert member.requests == [] and member.errors == []


async def test_connection_naming_the_request_id_removes_only_the_clients_copy(start, member):
    port = await start()
    split, _ = await exchange(port, req("GET", "/a", ("X-Request-Id", "client-chosen"),
                                        ("Connection", "X-Request-Id, close")))
    answered(split, "/a")
    seen = member.requests[0]
    assert [v for k, v in seen.headers if k.lower() == "x-request-id"] != ["client-chosen"]
    assert len([k for k, _ in seen.headers if k.lower() == "x-request-id"]) == 1
    member.assert_nothing_raw()


@pytest.mark.parametrize("name, sent, forwarded", [
    ("X-Forwarded-For", "6.6.6.6", "127.0.0.1"),
    ("X-Forwarded-Host", "evil.example", HOST),
])
async def test_connection_naming_a_forwarded_field_removes_only_the_clients_copy(
        start, member, name, sent, forwarded):
    port = await start()
    split, _ = await exchange(port, req("GET", "/a", (name, sent),
                                        ("Connection", f"{name}, close")))
    answered(split, "/a")
    assert [v for k, v in member.requests[0].headers if k.lower() == name.lower()] == [forwarded]
    member.assert_nothing_raw()


# -- 4. bytes beyond one response's framing are never delivered --------------------------------


SURPLUS = {
    "after a short Content-Length body": ("GET", response(200, b"ok") + INJECTED, 200),
    "after a 204": ("GET", b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED, 204),
    "body after a 204": ("GET", b"HTTP/1.1 204 No Content\r\n\r\nINJECTED body", 204),
    "after a 304": ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" + INJECTED, 304),
    "after a HEAD response": ("HEAD", response(200, b"", {"Content-Length": "9"}) + INJECTED,
                              200),
    "body after a HEAD response": ("HEAD", response(200, b"INJECTED\n"), 200),
    "after a chunked body": ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + chunked(b"ok") + INJECTED, 200),
}


@pytest.mark.parametrize("method, answer, status", list(SURPLUS.values()), ids=list(SURPLUS))
async def test_surplus_bytes_after_a_response_never_reach_a_client(
        start, member, method, answer, status):
    member.script("/a", Reply(answer))
    port = await start()
    split, reply = await exchange(port, req(method, "/a") + req("GET", "/b") + LAST,
                                  methods=[method])
    assert b"INJECTED" not in reply.data
    assert split.statuses[:1] == [status]
    answered(split, split.statuses[0], "/b", "/last")
    assert reply.closed
    a, b = member.requests[0], member.requests[1]
    assert (a.path, b.path) == ("/a", "/b")
    assert b.connection_id != a.connection_id, "sent on a connection holding surplus bytes"
    member.assert_nothing_raw()


MISFRAMED = {
    "Content-Length and Transfer-Encoding": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"ok") + INJECTED,
    "two Content-Lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n"
    b"\r\nok" + INJECTED,
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n"
    b"0\r\n\r\n" + INJECTED,
}


@pytest.mark.parametrize("answer", list(MISFRAMED.values()), ids=list(MISFRAMED))
async def test_misframed_member_response_is_502_and_its_connection_not_reused(
        start, member, answer):
    member.script("/a", Reply(answer))
    port = await start()
    split, reply = await exchange(port, req("GET", "/a", ("Connection", "close")))
    # A 502, or (a bad chunk shows after the head went out) the response cut short, closed.
    cut = not split.responses and split.error is not None
    assert split.statuses == [502] or cut, (split.statuses, split.error)
    assert reply.closed and b"INJECTED" not in reply.data
    split, _ = await exchange(port, req("GET", "/b", ("Connection", "close")))
    answered(split, "/b")
    assert member.requests[1].connection_id != member.requests[0].connection_id
    member.assert_nothing_raw()


async def test_chunk_extensions_and_trailers_end_the_body_where_they_should(start, member):
    body = b"5;ext=1\r\nhello\r\n3\r\nGET\r\n0\r\nX-Trailer: 1\r\n\r\n"
    port = await start()
    split, reply = await exchange(port, req("POST", "/a", ("Transfer-Encoding", "chunked"),
                                            body=body) + req("GET", "/b") + LAST)
    answered(split, "/a", "/b", "/last")
    assert member.requests[0].body == b"helloGET"
    assert reply.closed
    member.assert_nothing_raw()


# -- 5, 6. exactly one answer per request, in order, then the close ---------------------------


@pytest.mark.parametrize("first", [
    req("GET", "/a", ("Connection", "close")),
    http10("/a", "Host: example.com"),
    http10("/a"),
], ids=["Connection: close", "HTTP/1.0", "HTTP/1.0 without Host"])
async def test_request_that_ends_the_connection_gets_its_answer_then_the_close(
        start, member, first):
    port = await start()
    split, reply = await exchange(port, first + req("GET", "/b"))
    answered(split, "/a")
    assert reply.closed
    assert member.paths() == ["/a"]
    member.assert_nothing_raw()


async def test_http10_keep_alive_requests_pipelined_are_all_answered(start, member):
    port = await start()
    split, reply = await exchange(port, http10("/a", "Host: example.com", "Connection: keep-alive")
                                  + http10("/b", "Host: example.com", "Connection: keep-alive")
                                  + LAST)
    answered(split, "/a", "/b", "/last")
    assert reply.closed
    member.assert_nothing_raw()


INVALID = {
    "garbage": b"NOT HTTP AT ALL\r\n\r\n",
    "Content-Length and Transfer-Encoding": req(
        "POST", "/x", ("Content-Length", "5"), ("Transfer-Encoding", "chunked"),
        body=b"0\r\n\r\n"),
    "two Content-Lengths": req("POST", "/x", ("Content-Length", "1"), ("Content-Length", "2"),
                               body=b"ab"),
    "no Host": req("GET", "/x", host=None),
    "bad chunk size": req("POST", "/x", ("Transfer-Encoding", "chunked"), body=b"zz\r\n\r\n"),
    "Connection: Content-Length": req("POST", "/x", ("Connection", "Content-Length"),
                                      body=b"abc"),
    "invalid Host": req("GET", "/x", host="a b"),
    "fragment": req("GET", "/x#frag"),
}


@pytest.mark.parametrize("first", [req("GET", "/a"), req("POST", "/a", body=b"hello")],
                         ids=["GET", "POST"])
@pytest.mark.parametrize("invalid", list(INVALID.values()), ids=list(INVALID))
async def test_valid_request_then_invalid_one_gets_its_answer_then_400_then_close(
        start, member, first, invalid):
    port = await start()
    split, reply = await exchange(port, first + invalid + req("GET", "/after"))
    answered(split, "/a", 400)
    assert reply.closed
    assert member.paths() == ["/a"]
    member.assert_nothing_raw()


# -- 7. transfer codings other than chunked are kept --------------------------------------------


PAYLOAD = b"compressible " * 200
GZIPPED = gzip.compress(PAYLOAD)
GZIP_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(GZIPPED)
GZIP_TO_CLOSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + GZIPPED
CODED = {"gzip, chunked": Reply(GZIP_CHUNKED), "gzip ended by close": Reply(GZIP_TO_CLOSE,
                                                                              close=True)}


@pytest.mark.parametrize("answer", list(CODED.values()), ids=list(CODED))
async def test_member_transfer_coding_reaches_http11_client_rechunked_and_whole(
        start, member, answer):
    member.script("/gz", answer)
    port = await start()
    split, reply = await exchange(port, req("GET", "/gz") + LAST)
    answered(split, 200, "/last")
    coded = split.responses[0]
    assert coded.codings == ["gzip", "chunked"], coded.headers
    assert coded.body == GZIPPED and gzip.decompress(coded.body) == PAYLOAD
    assert reply.closed
    member.assert_nothing_raw()


@pytest.mark.parametrize("answer", list(CODED.values()), ids=list(CODED))
async def test_member_transfer_coding_to_http10_client_is_502(start, member, answer):
    member.script("/gz", answer)
    port = await start()
    split, reply = await exchange(port, http10("/gz", "Host: example.com"))
    answered(split, 502)
    assert reply.closed
    member.assert_nothing_raw()


# -- 8. a member's response head is limited ------------------------------------------------------


def big_head(size: int) -> bytes:
    """A 200 whose head carries about ``size`` bytes of fields."""
    fields = {f"X-Pad-{i:05d}": "p" * 90 for i in range(size // 104 + 1)}
    return response(200, b"padded\n", fields)


async def test_member_response_head_over_64_kib_is_502_and_member_connection_closed(
        start, member):
    member.script("/big", Reply(big_head(70 * 1024)))
    port = await start()
    split, reply = await exchange(port, req("GET", "/big", ("Connection", "close")))
    answered(split, 502)
    assert b"X-Pad" not in reply.data
    big = member.requests[0]
    assert await wait_until(lambda: big.connection_id in member.closed)
    member.assert_nothing_raw()


async def test_member_response_head_under_64_kib_is_relayed(start, member):
    member.script("/big", Reply(big_head(60 * 1024)))
    port = await start()
    split, _ = await exchange(port, req("GET", "/big") + LAST)
    answered(split, 200, "/last")
    assert split.responses[0].body == b"padded\n"
    member.assert_nothing_raw()


@pytest.mark.parametrize("size, status", [(8192, 502), (2048, 200)])
async def test_max_response_header_bytes_sets_the_member_head_limit(start, member, size, status):
    member.script("/big", Reply(big_head(size)))
    port = await start(max_response_header_bytes=4096)
    split, _ = await exchange(port, req("GET", "/big", ("Connection", "close")))
    answered(split, status)
    member.assert_nothing_raw()


# -- 9. Host and the target are valid URI parts ------------------------------------------------


INVALID_TARGETS = [
    ("/", "shop.example.com/evil"), ("/", "a b"), ("/", "u@host"), ("/", "host:80x"),
    ("/", "host:-1"), ("/", "host:80:80"), ("/", "[::1"), ("/", "::1"), ("/", "host?x"),
    ("/", "b\xfccher.example"), ("/", "caf\xc3\xa9.example"), ("/", "ho\\st"),
    ("http://u:p@example.com/", HOST), ("http://u@example.com/", HOST),
    ("http://example.com:80x/", HOST), ("http://ex ample.com/", HOST), ("/p#frag", HOST),
    ("http://example.com/p#frag", HOST), ("/#", HOST),
]


@pytest.mark.parametrize("target, host", INVALID_TARGETS,
                         ids=[f"{t} Host={h!r}" for t, h in INVALID_TARGETS])
async def test_invalid_host_userinfo_or_fragment_is_400(start, member, target, host):
    port = await start()
    split, reply = await exchange(port, req("GET", target, ("Connection", "close"), host=host))
    answered(split, 400)
    assert reply.closed
    assert member.requests == [] and member.errors == []


VALID_HOSTS = ["[::1]:8080", "1.2.3.4", "xn--bcher-kva.example", "example.com:8080",
               "example.com:", "sub_domain.example", "EXAMPLE.com", "[::1]"]


@pytest.mark.parametrize("host", VALID_HOSTS)
async def test_valid_host_forms_are_forwarded(start, member, host):
    port = await start()
    split, _ = await exchange(port, req("GET", "/a", ("Connection", "close"), host=host))
    answered(split, "/a")
    assert member.requests[0].header("host") == host
    member.assert_nothing_raw()


async def test_absolute_form_authority_becomes_host(start, member):
    port = await start()
    split, _ = await exchange(port, req("GET", "http://example.com:8080/abs?q=1",
                                        ("Connection", "close"), host="other.example"))
    answered(split, "/abs?q=1")
    seen = member.requests[0]
    assert (seen.path, seen.header("host")) == ("/abs?q=1", "example.com:8080")
    member.assert_nothing_raw()


async def test_two_clients_never_see_each_others_answers(start, member):
    """Neighbour of class 4 across connections: surplus on one client's exchange with the
    member never becomes another client's answer."""
    member.script("/a", Reply(response(200, b"ok") + INJECTED))
    port = await start()
    results = await asyncio.gather(
        exchange(port, req("GET", "/a") + req("GET", "/b") + LAST),
        exchange(port, req("GET", "/c") + req("GET", "/d") + LAST))
    (first, raw_first), (second, raw_second) = results
    assert b"INJECTED" not in raw_first.data + raw_second.data
    answered(first, 200, "/b", "/last")
    answered(second, "/c", "/d", "/last")
    member.assert_nothing_raw()
