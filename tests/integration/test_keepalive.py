"""Keep-alive on both sides: upstream connection reuse, stale and idle pooled connections,
the idle pool limit, and the client-side request limit per connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.client import Connection, request
from tests.support.proxy import RunningProxy, simple_config
from tests.support.timing import now, wait_until

BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


async def requests_on_one_connection(port: int, count: int, tag: str) -> list[int]:
    conn = await Connection.open(port)
    try:
        return [(await conn.request("GET", f"/{tag}/{i}")).status for i in range(count)]
    finally:
        await conn.close()


async def test_one_client_connection_uses_one_upstream_connection(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    statuses = await requests_on_one_connection(proxy.port, 50, "seq")
    assert statuses == [200] * 50
    assert len(backend.requests) == 50
    assert backend.connections == 1


async def test_concurrent_client_connections_share_few_upstream_connections(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    clients = 4
    results = await asyncio.gather(
        *(requests_on_one_connection(proxy.port, 25, f"c{n}") for n in range(clients)))
    assert all(statuses == [200] * 25 for statuses in results)
    assert len(backend.requests) == 100
    assert 1 <= backend.connections <= clients
    # later client connections reuse what the earlier ones left in the pool
    more = await asyncio.gather(
        *(requests_on_one_connection(proxy.port, 5, f"d{n}") for n in range(clients)))
    assert all(statuses == [200] * 5 for statuses in more)
    assert backend.connections <= clients


async def test_pooled_connection_closed_by_member_while_idle_is_not_used(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    member = proxy.member("g", backend.address)
    assert (await request(proxy.port, "GET", "/before")).status == 200
    assert len(member.idle) == 1
    backend.close_idle_connections()
    assert await wait_until(lambda: not member.idle), "the proxy kept a closed connection"
    response_ = await request(proxy.port, "GET", "/after")
    assert response_.status == 200
    assert backend.connections == 2
    assert proxy.stats.upstream_failures == {}  # the member is not blamed for it
    assert proxy.stats.retries == {}  # nor was a retry needed


async def test_request_right_after_member_closed_pooled_connection_succeeds(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address]))
    conn = await Connection.open(proxy.port)
    try:
        assert (await conn.request("GET", "/before")).status == 200
        backend.close_idle_connections()  # no wait: the proxy may not have seen the FIN yet
        response_ = await conn.request("GET", "/after")
    finally:
        await conn.close()
    assert response_.status == 200
    assert [r.path for r in backend.requests][-1] == "/after"
    assert proxy.stats.upstream_failures == {}


async def test_idle_upstream_connection_is_closed_after_idle_timeout(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    proxy = await proxy_factory(simple_config([backend.address], timeouts={"idle": 0.3}))
    assert (await request(proxy.port, "GET", "/")).status == 200
    parked = now()
    assert backend.open_connections == 1
    assert proxy.stats.upstream_connections == 1
    assert await wait_until(lambda: backend.open_connections == 0, timeout=1.0)
    closed_after = now() - parked
    assert await wait_until(lambda: proxy.stats.upstream_connections == 0, timeout=0.5)
    assert 0.25 <= closed_after <= 0.6, closed_after
    assert not proxy.member("g", backend.address).idle
    assert (await request(proxy.port, "GET", "/again")).status == 200
    assert backend.connections == 2


async def test_max_idle_limits_connections_kept_after_a_burst(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    arrived = 0
    all_arrived = asyncio.Event()

    async def barrier(req: ReceivedRequest, writer: asyncio.StreamWriter,
                      backend: Backend) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_arrived.set()
        try:
            async with asyncio.timeout(3):
                await all_arrived.wait()
        except TimeoutError:
            pass
        writer.write(response(200, b"ok\n"))

    backend = await backend_factory(handler=barrier)
    proxy = await proxy_factory(simple_config([backend.address], keepalive={"max_idle": 1}))
    results = await asyncio.gather(*(request(proxy.port, "GET", f"/{i}") for i in range(3)))
    assert [r.status for r in results] == [200] * 3
    assert backend.connections == 3  # the three were in flight together
    assert await wait_until(lambda: backend.open_connections <= 1, timeout=1.0), \
        backend.open_connections
    assert backend.open_connections == 1
    assert proxy.stats.upstream_connections == 1
    assert len(proxy.member("g", backend.address).idle) == 1


async def test_client_connection_closed_after_keepalive_requests(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backend = await backend_factory()
    config = simple_config([backend.address])
    config["http"] = {"keepalive_requests": 3}
    proxy = await proxy_factory(config)
    conn = await Connection.open(proxy.port)
    try:
        responses = [await conn.request("GET", f"/{i}") for i in range(3)]
        closed = await conn.closed_by_peer(timeout=1.0)
    finally:
        await conn.close()
    assert [r.status for r in responses] == [200] * 3
    assert [r.header("Connection") for r in responses[:2]] == [None, None]
    assert responses[2].header("Connection") == "close"
    assert closed
    assert len(backend.requests) == 3


async def test_idle_timeout_of_a_group_holds_when_another_group_keeps_connections_longer(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    slow_expiry = await backend_factory(name="long")
    fast_expiry = await backend_factory(name="short")
    config = simple_config([slow_expiry.address], timeouts={"idle": 30})
    config["groups"].append({"name": "short", "members": [{"address": fast_expiry.address}],
                             "timeouts": {"idle": 0.3}})
    config["virtual_servers"][0]["routes"].append({"path": "/short", "group": "short"})
    proxy = await proxy_factory(config)
    # the long-lived idle connection is parked first, the short-lived one behind it
    assert (await request(proxy.port, "GET", "/long")).header("X-Backend") == "long"
    assert (await request(proxy.port, "GET", "/short")).header("X-Backend") == "short"
    assert fast_expiry.open_connections == 1
    closed = await wait_until(lambda: fast_expiry.open_connections == 0, timeout=1.0)
    assert closed, "idle connection of group 'short' outlived its 0.3 s idle timeout"
    assert slow_expiry.open_connections == 1
