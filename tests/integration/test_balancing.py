"""Load balancing seen through the proxy: which backend answers (its X-Backend header).

Slow requests are held open by a handler waiting on an ``asyncio.Event``, so the in-flight count
of a member is known exactly while the following requests are balanced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from tests.support.backends import Backend, ReceivedRequest, response
from tests.support.client import Connection, Response, answered_by
from tests.support.proxy import RunningProxy, simple_config
from tests.support.timing import wait_until

BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


class Holder:
    """Backend handler: requests to ``/slow`` wait until ``release()``; others answer at once."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def release(self) -> None:
        self.event.set()

    async def __call__(self, req: ReceivedRequest, writer: asyncio.StreamWriter,
                      backend: Backend) -> None:
        if req.path == "/slow":
            try:
                async with asyncio.timeout(5):
                    await self.event.wait()
            except TimeoutError:
                pass
        writer.write(response(200, f"{backend.name}\n".encode(), {"X-Backend": backend.name}))


class HeldRequests:
    """Slow requests sent on their own client connections, answered once the holder releases."""

    def __init__(self) -> None:
        self.conns: list[Connection] = []

    async def send(self, port: int, count: int) -> None:
        for _ in range(count):
            conn = await Connection.open(port)
            conn.send(b"GET /slow HTTP/1.1\r\nHost: example.com\r\n\r\n")
            self.conns.append(conn)

    async def finish(self) -> list[Response]:
        try:
            return [await conn.read_response(timeout=3) for conn in self.conns]
        finally:
            for conn in self.conns:
                await conn.close()


def held_on(backends: list[Backend]) -> dict[str, int]:
    return {b.name: sum(1 for r in b.requests if r.path == "/slow") for b in backends}


async def names_while_one_member_is_busy(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory, algorithm: str,
        count: int) -> tuple[str, list[str | None]]:
    """Members a, b, c balanced by ``algorithm``; one slow request is held on one of them
    while ``count`` requests are sent on one connection. The busy member and who answered."""
    holder = Holder()
    backends = [await backend_factory(handler=holder, name=n) for n in "abc"]
    proxy = await proxy_factory(simple_config([b.address for b in backends], algorithm))
    held = HeldRequests()
    try:
        await held.send(proxy.port, 1)
        assert await wait_until(lambda: sum(held_on(backends).values()) == 1)
        busy = next(name for name, n in held_on(backends).items() if n == 1)
        names = await answered_by(proxy.port, count)
    finally:
        holder.release()
        finished = await held.finish()
    assert [r.status for r in finished] == [200]
    return busy, names


async def test_wrr_sequence_follows_weights_smoothly_and_repeats(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    c = await backend_factory(name="c")
    proxy = await proxy_factory(simple_config([
        {"address": a.address, "weight": 5},
        {"address": b.address, "weight": 1},
        {"address": c.address, "weight": 1},
    ]))
    names = await answered_by(proxy.port, 21)
    assert names == ["a", "a", "b", "a", "c", "a", "a"] * 3


async def test_least_conn_sends_new_requests_away_from_busy_member(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    busy, names = await names_while_one_member_is_busy(backend_factory, proxy_factory,
                                                       "least_conn", 10)
    assert busy not in names, (busy, names)
    others = Counter(names)
    assert sorted(others.values()) == [5, 5], names  # the two idle members alternate


async def test_least_conn_spreads_held_requests_by_weight(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    holder = Holder()
    a = await backend_factory(handler=holder, name="a")
    b = await backend_factory(handler=holder, name="b")
    proxy = await proxy_factory(simple_config(
        [{"address": a.address, "weight": 2}, {"address": b.address, "weight": 1}],
        "least_conn"))
    held = HeldRequests()
    try:
        await held.send(proxy.port, 6)
        assert await wait_until(lambda: sum(held_on([a, b]).values()) == 6)
        in_flight = held_on([a, b])
        assert proxy.member("g", a.address).active == 4
        assert proxy.member("g", b.address).active == 2
    finally:
        holder.release()
        finished = await held.finish()
    assert in_flight == {"a": 4, "b": 2}  # active per unit of weight kept equal
    assert [r.status for r in finished] == [200] * 6


async def test_least_conn_with_equal_load_follows_weights(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    a = await backend_factory(name="a")
    b = await backend_factory(name="b")
    proxy = await proxy_factory(simple_config(
        [{"address": a.address, "weight": 3}, {"address": b.address, "weight": 1}],
        "least_conn"))
    names = await answered_by(proxy.port, 12)  # one at a time: every pick is a tie
    assert Counter(names) == {"a": 9, "b": 3}
    assert names[:4].count("b") == 1  # interleaved, not in bursts


async def test_random2_long_run_share_follows_weights(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    backends = [await backend_factory(name=n) for n in "abc"]
    weights = {"a": 3, "b": 2, "c": 1}
    proxy = await proxy_factory(simple_config(
        [{"address": b.address, "weight": weights[b.name]} for b in backends], "random2"))
    count = 600
    shares = Counter(await answered_by(proxy.port, count))
    for name, weight in weights.items():
        expected = count * weight / sum(weights.values())
        # binomial standard deviation is at most ~12 here: 60 is five of them
        assert abs(shares[name] - expected) < 60, (name, shares)


async def test_random2_never_picks_the_most_loaded_member(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory) -> None:
    busy, names = await names_while_one_member_is_busy(backend_factory, proxy_factory,
                                                       "random2", 60)
    shares = Counter(names)
    assert busy not in shares, (busy, shares)
    assert len(shares) == 2 and min(shares.values()) >= 10, shares
