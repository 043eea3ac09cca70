"""Where traffic goes by route (issue 13), through real sockets: header, cookie, query and
client-address canaries; a weighted split across groups with exact shares, a group without a
usable member dropping out, and a sticky cookie. Each group is one backend that names itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support.backends import Backend, free_port
from tests.support.client import Connection, request

TIMEOUT = 5.0
LISTEN = "127.0.0.1:0"


def groups(backends: dict[str, Backend], **extra: list[str]) -> list[dict[str, Any]]:
    out = [{"name": name, "members": [{"address": b.address}]} for name, b in backends.items()]
    out += [{"name": name, "members": [{"address": a} for a in addresses]}
            for name, addresses in extra.items()]
    return out


async def start(proxy_factory: Any, routes: list[dict[str, Any]],
                groups_: list[dict[str, Any]]) -> int:
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": LISTEN, "routes": routes}],
        "groups": groups_,
    })
    return int(proxy.port)


async def test_header_cookie_query_and_address_canaries_win_over_the_plain_route(
        backend_factory: Any, proxy_factory: Any) -> None:
    names = ("stable", "by_header", "by_cookie", "by_query", "by_address")
    backends = {n: await backend_factory(name=n) for n in names}
    port = await start(proxy_factory, [
        {"path": "/api/", "group": "stable"},
        {"path": "/api/", "group": "by_header", "when": {"headers": {"x-canary": "1"}}},
        {"path": "/api/", "group": "by_cookie", "when": {"cookies": {"canary": "*"}}},
        {"path": "/api/", "group": "by_query", "when": {"query": {"beta": "1"}}},
        {"path": "/api/", "group": "by_address", "when": {"client_ips": ["127.0.0.0/8"],
                                                           "headers": {"x-lab": "*"}}},
    ], groups(backends))

    async def served(path: str, headers: dict[str, str] | None = None) -> str | None:
        reply = await request(port, "GET", path, headers=headers, timeout=TIMEOUT)
        assert reply.status == 200, reply
        return reply.header("X-Backend")

    assert await served("/api/a") == "stable"
    assert await served("/api/a", {"X-Canary": "1"}) == "by_header"
    assert await served("/api/a", {"X-Canary": "0"}) == "stable"
    assert await served("/api/a", {"Cookie": "a=1; canary=yes"}) == "by_cookie"
    assert await served("/api/a?beta=1&x=2") == "by_query"
    assert await served("/api/a?beta=2") == "stable"
    assert await served("/api/a", {"x-lab": "1"}) == "by_address"  # 127.0.0.1 is in 127/8


async def test_a_split_gives_exact_shares_over_1000_requests(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = {n: await backend_factory(name=n) for n in ("v1", "v2")}
    port = await start(proxy_factory, [
        {"path": "/", "split": [{"group": "v2", "weight": 10}, {"group": "v1", "weight": 90}]},
    ], groups(backends))
    conn = await Connection.open(port)
    try:
        seen = Counter()
        for _ in range(1000):
            reply = await conn.request("GET", "/", "shop", None, None, TIMEOUT)
            assert reply.status == 200
            seen[reply.header("X-Backend")] += 1
    finally:
        await conn.close()
    assert seen == {"v1": 900, "v2": 100}  # smooth WRR: exactly 10 of every 100


async def test_a_group_with_no_usable_member_drops_out_of_the_split(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = {"v1": await backend_factory(name="v1")}
    port = await start(proxy_factory, [
        {"path": "/", "split": [{"group": "empty", "weight": 50}, {"group": "down", "weight": 50},
                                {"group": "v1", "weight": 1}]},
    ], [*groups(backends, empty=[]),
        {"name": "down", "members": [{"address": f"127.0.0.1:{free_port()}", "state": "drain"},
                                     {"address": f"127.0.0.1:{free_port()}", "state": "down"}]}])
    for _ in range(20):
        reply = await request(port, "GET", "/", timeout=TIMEOUT)
        assert (reply.status, reply.header("X-Backend")) == (200, "v1")


async def test_a_sticky_cookie_keeps_a_client_on_its_side_while_that_side_is_usable(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = {n: await backend_factory(name=n) for n in ("v1", "v2")}
    port = await start(proxy_factory, [
        {"path": "/", "split": [{"group": "v1", "weight": 1}, {"group": "v2", "weight": 1}],
         "sticky_cookie": "slb_split"},
    ], groups(backends))
    first = await request(port, "GET", "/", timeout=TIMEOUT)
    cookie = first.header("Set-Cookie")
    assert cookie is not None and cookie.startswith(f"slb_split={first.header('X-Backend')};")
    pinned = cookie.split(";")[0]
    for _ in range(6):  # alternation would move every other request
        reply = await request(port, "GET", "/", headers={"Cookie": pinned}, timeout=TIMEOUT)
        assert reply.header("X-Backend") == first.header("X-Backend")
        assert reply.header("Set-Cookie") is None  # already pinned: nothing to set
    # a cookie naming a group the split does not have is ignored, and replaced
    reply = await request(port, "GET", "/", headers={"Cookie": "slb_split=gone"},
                          timeout=TIMEOUT)
    assert (reply.header("Set-Cookie") or "").startswith("slb_split=v")


async def test_a_group_whose_members_are_ejected_leaves_the_split_until_they_recover(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = {"v1": await backend_factory(name="v1")}
    proxy = await proxy_factory({
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": LISTEN, "routes": [
            {"path": "/", "split": [{"group": "flaky", "weight": 1}, {"group": "v1",
                                                                        "weight": 1}]}]}],
        "groups": [*groups(backends),
                   {"name": "flaky", "members": [{"address": f"127.0.0.1:{free_port()}"}],
                    "passive_health": {"max_fails": 1, "base_ejection": 3600}}],
    })
    first = await request(proxy.port, "GET", "/", timeout=TIMEOUT)
    assert first.status == 502  # flaky's turn: its only member refuses, and is ejected
    for _ in range(10):
        reply = await request(proxy.port, "GET", "/", timeout=TIMEOUT)
        assert (reply.status, reply.header("X-Backend")) == (200, "v1")
    member = next(iter(proxy.server.ctx.runtime.pools["flaky"].members.values()))
    member.ejected_until = 0.0  # the ejection is over: flaky takes its turns again
    statuses = [(await request(proxy.port, "GET", "/", timeout=TIMEOUT)).status
                for _ in range(4)]
    assert statuses.count(502) >= 1
