"""Upstream failures as a client sees them: retries, 502/503/504, mid-response loss, ejection.

Members that refuse connections are addresses nothing listens on (``free_port()``); members that
misbehave are real backends whose handler writes garbage, stalls, or closes the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from tests.support.backends import Backend, ReceivedRequest, free_port, response
from tests.support.client import Connection, Response, request
from tests.support.proxy import RunningProxy, simple_config
from tests.support.timing import now, wait_until

BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


def refused() -> str:
    return f"127.0.0.1:{free_port()}"


def total(table: dict[tuple[str, str], int], addresses: Iterable[str] | None = None) -> int:
    wanted = None if addresses is None else set(addresses)
    return sum(v for (_, member), v in table.items() if wanted is None or member in wanted)


async def garbage_handler(req: ReceivedRequest, writer: asyncio.StreamWriter,
                          backend: Backend) -> None:
    writer.write(b"this is not HTTP at all\r\n\r\n")


class Switchable:
    """A backend handler that answers garbage while ``failing`` is set, 200 otherwise."""

    def __init__(self) -> None:
        self.failing = True

    async def __call__(self, req: ReceivedRequest, writer: asyncio.StreamWriter,
                       backend: Backend) -> None:
        if self.failing:
            writer.write(b"garbage, not a status line\r\n\r\n")
        else:
            writer.write(response(200, b"ok\n", {"X-Backend": backend.name}))


# -- connect failures -----------------------------------------------------------------------------


async def test_refused_connection_moves_request_to_next_member(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    good = await backend_factory(name="good")
    bad = refused()
    # bad first: the first wrr pick on a fresh pool is the first member in configuration order
    proxy = await proxy_factory(simple_config(
        [bad, good.address], retry={"tries": 10}, passive_health={"max_fails": 0}))
    response_ = await request(proxy.port, "GET", "/first")
    assert response_.status == 200
    assert response_.header("X-Backend") == "good"
    assert proxy.stats.connect_failures == {("g", bad): 1}
    assert [r.path for r in good.requests] == ["/first"]


async def test_refused_member_is_never_tried_twice_for_one_request(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    good = await backend_factory(name="good")
    bad = refused()
    proxy = await proxy_factory(simple_config(
        [bad, good.address], algorithm="random2", retry={"tries": 10},
        passive_health={"max_fails": 0}))
    conn = await Connection.open(proxy.port)
    try:
        for i in range(20):
            before = total(proxy.stats.connect_failures, [bad])
            response_ = await conn.request("GET", f"/r{i}")
            assert response_.status == 200
            assert total(proxy.stats.connect_failures, [bad]) - before <= 1, f"request {i}"
    finally:
        await conn.close()
    assert len(good.requests) == 20
    assert total(proxy.stats.connect_failures, [bad]) >= 1  # the bad member was tried at all


async def test_all_members_refusing_gives_502_after_tries_attempts(
        proxy_factory: ProxyFactory) -> None:
    members = [refused() for _ in range(3)]
    proxy = await proxy_factory(simple_config(members, retry={"tries": 2}))
    response_ = await request(proxy.port, "GET", "/")
    assert response_.status == 502
    assert total(proxy.stats.connect_failures) == 2
    assert all(v == 1 for v in proxy.stats.connect_failures.values())


async def test_tries_above_member_count_still_tries_each_member_once(
        proxy_factory: ProxyFactory) -> None:
    members = [refused() for _ in range(2)]
    proxy = await proxy_factory(simple_config(members, retry={"tries": 5}))
    response_ = await request(proxy.port, "GET", "/")
    assert response_.status == 502
    assert proxy.stats.connect_failures == {("g", m): 1 for m in members}


async def test_group_without_usable_member_answers_503(proxy_factory: ProxyFactory) -> None:
    cases: list[list[Any]] = [
        [],
        [{"address": refused(), "weight": 0}, {"address": refused(), "weight": 0}],
        [{"address": refused(), "state": "down"}, {"address": refused(), "state": "down"}],
        [{"address": refused(), "weight": 0}, {"address": refused(), "state": "down"}],
    ]
    for members in cases:
        proxy = await proxy_factory(simple_config(members))
        response_ = await request(proxy.port, "GET", "/")
        assert response_.status == 503, members
        assert proxy.stats.connect_failures == {}, members


# -- timeouts and broken responses ----------------------------------------------------------------


async def test_response_not_started_within_read_timeout_gives_504(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    release = asyncio.Event()

    async def stall(req: ReceivedRequest, writer: asyncio.StreamWriter, backend: Backend) -> None:
        try:
            async with asyncio.timeout(3):
                await release.wait()
        except TimeoutError:
            pass
        writer.write(response(200, b"too late\n"))

    backend = await backend_factory(handler=stall, name="slow")
    proxy = await proxy_factory(simple_config([backend.address], timeouts={"read": 0.3}))
    started = now()
    try:
        response_ = await request(proxy.port, "GET", "/slow", timeout=3)
    finally:
        release.set()
    elapsed = now() - started
    assert response_.status == 504
    assert 0.29 <= elapsed <= 0.6, elapsed  # uvloop's clock ticks in milliseconds


async def test_malformed_upstream_response_gives_502(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory(handler=garbage_handler, name="garbage")
    proxy = await proxy_factory(simple_config([backend.address]))
    response_ = await request(proxy.port, "GET", "/")
    assert response_.status == 502
    assert len(backend.requests) == 1  # a member that answered is not asked again


def close_second_request_on_each_connection() -> Callable[..., Awaitable[None]]:
    """Answer the first request of a connection; close without a byte on the second."""
    seen: dict[int, int] = {}

    async def handler(req: ReceivedRequest, writer: asyncio.StreamWriter,
                      backend: Backend) -> None:
        seen[req.connection_id] = seen.get(req.connection_id, 0) + 1
        if seen[req.connection_id] == 2:
            writer.close()
            return
        writer.write(response(200, f"{req.method} {req.path}\n".encode()))

    return handler


async def second_request_on_a_closing_connection(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory, method: str,
        **options: Any) -> tuple[Backend, Response, Response]:
    """GET /one, then ``method`` /two on the same client connection, through a proxy to a
    backend that closes each upstream connection on its second request."""
    backend = await backend_factory(handler=close_second_request_on_each_connection())
    proxy = await proxy_factory(simple_config([backend.address]))
    conn = await Connection.open(proxy.port)
    try:
        first = await conn.request("GET", "/one")
        second = await conn.request(method, "/two", **options)
    finally:
        await conn.close()
    return backend, first, second


async def test_reused_connection_closed_without_answer_is_retried_for_get(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend, first, second = await second_request_on_a_closing_connection(
        backend_factory, proxy_factory, "GET")
    assert first.status == 200
    assert second.status == 200
    assert second.body == b"GET /two\n"
    assert backend.connections == 2
    assert [r.path for r in backend.requests] == ["/one", "/two", "/two"]


async def test_reused_connection_closed_without_answer_is_not_retried_for_post(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend, first, second = await second_request_on_a_closing_connection(
        backend_factory, proxy_factory, "POST", body=b"payload")
    assert first.status == 200
    assert second.status == 502
    assert [(r.method, r.path) for r in backend.requests] == [("GET", "/one"), ("POST", "/two")]


async def read_until_eof(conn: Connection, timeout: float) -> bytes:
    chunks = []
    async with asyncio.timeout(timeout):
        while chunk := await conn.reader.read(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def reply_of_a_member_closing_after(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory,
        partial: bytes) -> tuple[bytes, bytes]:
    """Head and body the client reads, until the proxy closes, when its one member writes
    ``partial`` and closes the connection."""
    async def truncate(req: ReceivedRequest, writer: asyncio.StreamWriter,
                       backend: Backend) -> None:
        writer.write(partial)
        await writer.drain()
        writer.close()

    backend = await backend_factory(handler=truncate)
    proxy = await proxy_factory(simple_config([backend.address]))
    conn = await Connection.open(proxy.port)
    try:
        conn.send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        raw = await read_until_eof(conn, timeout=2)  # TimeoutError here means the proxy hung
    finally:
        await conn.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


async def test_member_closing_mid_response_closes_client_connection(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    head, body = await reply_of_a_member_closing_after(
        backend_factory, proxy_factory,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 100" in head.lower()
    assert body == b"x" * 10


async def test_member_closing_mid_chunked_response_leaves_body_unterminated(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    head, body = await reply_of_a_member_closing_after(
        backend_factory, proxy_factory,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"hello" in body
    assert not body.endswith(b"0\r\n\r\n")  # no last chunk: the client knows it is incomplete


# -- passive health -------------------------------------------------------------------------------


async def test_member_ejected_after_max_fails_consecutive_failures_gets_no_traffic(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    good = await backend_factory(name="good")
    flaky = Switchable()
    bad = await backend_factory(handler=flaky, name="bad")
    proxy = await proxy_factory(simple_config(
        [good.address, bad.address],
        passive_health={"max_fails": 2, "base_ejection": 5.0}))
    member = proxy.member("g", bad.address)
    conn = await Connection.open(proxy.port)
    try:
        statuses = []
        for i in range(10):
            if member.ejected_until > now():
                break
            statuses.append((await conn.request("GET", f"/warm{i}")).status)
        assert member.ejected_until > now(), "never ejected"
        assert statuses.count(502) == 2  # exactly max_fails failures before the ejection
        assert len(bad.requests) == 2
        flaky.failing = False  # healthy again, but still ejected: it must get nothing
        for i in range(10):
            response_ = await conn.request("GET", f"/after{i}")
            assert response_.status == 200
            assert response_.header("X-Backend") == "good"
    finally:
        await conn.close()
    assert len(bad.requests) == 2
    assert proxy.stats.ejections == {("g", bad.address): 1}
    assert 4.5 < member.ejected_until - now() <= 5.01


async def test_second_ejection_lasts_longer_than_first(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    good = await backend_factory(name="good")
    bad = refused()
    proxy = await proxy_factory(simple_config(
        [bad, good.address],
        passive_health={"max_fails": 1, "base_ejection": 0.2, "max_ejection": 10.0}))
    member = proxy.member("g", bad)

    async def eject() -> float:
        """Send requests until ``bad`` is ejected; the ejection's remaining time."""
        for _ in range(10):
            response_ = await request(proxy.port, "GET", "/")
            assert response_.status == 200  # the refused connect is retried on good
            if member.ejected_until > now():
                return member.ejected_until - now()
        raise AssertionError("never ejected")

    first = await eject()
    assert await wait_until(lambda: member.ejected_until <= now(), timeout=1.0)
    failures_before = total(proxy.stats.connect_failures, [bad])
    second = await eject()
    assert total(proxy.stats.connect_failures, [bad]) == failures_before + 1  # tried again
    # remaining time just after the ejecting request (uvloop's clock ticks in milliseconds)
    assert 0.1 < first <= 0.21, first
    assert 0.3 < second <= 0.41, second
    assert proxy.stats.ejections == {("g", bad): 2}


async def test_success_resets_consecutive_failure_count(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    script = iter([False, False, True, False, False, False])  # True: answer properly

    async def scripted(req: ReceivedRequest, writer: asyncio.StreamWriter,
                       backend: Backend) -> None:
        if next(script):
            writer.write(response(200, b"ok\n"))
        else:
            writer.write(b"garbage\r\n\r\n")

    backend = await backend_factory(handler=scripted)
    proxy = await proxy_factory(simple_config(
        [backend.address], passive_health={"max_fails": 3, "base_ejection": 5.0}))
    member = proxy.member("g", backend.address)
    statuses = [(await request(proxy.port, "GET", f"/{i}")).status for i in range(5)]
    assert statuses == [502, 502, 200, 502, 502]
    assert member.ejected_until <= now()  # 2 + 2 failures, never 3 in a row
    assert proxy.stats.ejections == {}
    assert (await request(proxy.port, "GET", "/5")).status == 502  # the third in a row
    assert member.ejected_until > now()
    assert proxy.stats.ejections == {("g", backend.address): 1}


async def names_with_second_member_ejected(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory,
        passive_health: dict[str, Any]) -> tuple[RunningProxy, Backend, int, list[str | None]]:
    """Members good and ejected; ejected fails until it is ejected, then answers properly.
    The X-Backend of 10 requests sent on one connection after that, and how many requests
    ``ejected`` had received before them."""
    good = await backend_factory(name="good")
    flaky = Switchable()
    ejected = await backend_factory(handler=flaky, name="ejected")
    proxy = await proxy_factory(simple_config(
        [good.address, ejected.address], passive_health=passive_health))
    member = proxy.member("g", ejected.address)
    for i in range(10):
        if member.ejected_until > now():
            break
        await request(proxy.port, "GET", f"/eject{i}")
    assert member.ejected_until > now(), "never ejected"
    flaky.failing = False
    before = len(ejected.requests)
    conn = await Connection.open(proxy.port)
    try:
        names = [(await conn.request("GET", f"/p{i}")).header("X-Backend") for i in range(10)]
    finally:
        await conn.close()
    return proxy, ejected, before, names


async def test_panic_mode_sends_traffic_to_ejected_members_again(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    proxy, ejected, before, names = await names_with_second_member_ejected(
        backend_factory, proxy_factory,
        {"max_fails": 1, "base_ejection": 5.0, "panic_threshold": 100})
    assert proxy.member("g", ejected.address).ejected_until > now()  # still ejected
    assert names.count("ejected") >= 3, names  # 1 of 2 usable is below 100%: both take traffic
    assert names.count("good") >= 3, names
    assert len(ejected.requests) - before == names.count("ejected")


async def test_without_panic_ejected_member_is_avoided(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    _, ejected, before, names = await names_with_second_member_ejected(
        backend_factory, proxy_factory,
        {"max_fails": 1, "base_ejection": 5.0})  # panic_threshold 50
    assert names == ["good"] * 10  # 1 of 2 usable is 50%, not below the threshold
    assert len(ejected.requests) == before
