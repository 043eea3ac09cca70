"""``hash`` and ``ip_hash`` through real sockets (issue 13): a key stays on its member; a key
whose member is ejected, drained or set down goes on to another, and comes back when the member
returns. The bounds over 100,000 keys are measured in tests/unit/slb/balancing/test_hashing.py.
"""

from __future__ import annotations

import copy
from typing import Any

from slb.model import parse_config
from tests.support.backends import Backend
from tests.support.client import request

TIMEOUT = 5.0
SESSIONS = [f"s{i}" for i in range(24)]


def config(backends: list[Backend], algorithm: str, states: dict[str, str] | None = None,
           **group: Any) -> dict[str, Any]:
    return {
        "control": {"listen": "127.0.0.1:0"},
        "virtual_servers": [{"name": "shop", "listen": "127.0.0.1:0",
                             "routes": [{"path": "/", "group": "carts"}]}],
        "groups": [{"name": "carts", "algorithm": algorithm, **group, "members": [
            {"address": b.address, "state": (states or {}).get(b.name, "up")}
            for b in backends]}],
    }


async def owners(port: int, sessions: list[str]) -> dict[str, str | None]:
    found = {}
    for session in sessions:
        reply = await request(port, "GET", "/cart", headers={"Cookie": f"session={session}"},
                              timeout=TIMEOUT)
        assert reply.status == 200
        found[session] = reply.header("X-Backend")
    return found


async def test_a_session_cookie_stays_on_its_member_and_comes_back_after_a_drain(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = [await backend_factory(name=f"m{i}") for i in range(3)]
    raw = config(backends, "hash", hash_key="cookie:session")
    proxy = await proxy_factory(raw)
    first = await owners(proxy.port, SESSIONS)
    assert first == await owners(proxy.port, SESSIONS)  # the same member every time
    assert len(set(first.values())) == 3  # and the sessions spread over all of them

    await proxy.server.apply(parse_config(copy.deepcopy(
        config(backends, "hash", {"m1": "drain"}, hash_key="cookie:session"))))
    drained = await owners(proxy.port, SESSIONS)
    for session, member in first.items():
        if member == "m1":
            assert drained[session] in ("m0", "m2")
        else:
            assert drained[session] == member  # only m1's sessions moved

    await proxy.server.apply(parse_config(copy.deepcopy(raw)))
    assert await owners(proxy.port, SESSIONS) == first  # back where they were


async def test_an_ejected_members_keys_go_elsewhere_and_return_on_recovery(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = [await backend_factory(name=f"m{i}") for i in range(3)]
    proxy = await proxy_factory(config(backends, "hash", hash_key="cookie:session"))
    first = await owners(proxy.port, SESSIONS)
    ejected = proxy.member("carts", backends[0].address)
    loop_time = proxy.server.ctx.loop.time()
    ejected.ejected_until = loop_time + 3600  # as passive health does after failures
    during = await owners(proxy.port, SESSIONS)
    assert "m0" not in during.values()
    assert all(during[s] == m for s, m in first.items() if m != "m0")
    ejected.ejected_until = 0.0  # recovered
    assert await owners(proxy.port, SESSIONS) == first


async def test_ip_hash_keeps_a_client_on_one_member(
        backend_factory: Any, proxy_factory: Any) -> None:
    backends = [await backend_factory(name=f"m{i}") for i in range(3)]
    proxy = await proxy_factory(config(backends, "ip_hash"))
    seen = {(await request(proxy.port, "GET", "/", timeout=TIMEOUT)).header("X-Backend")
            for _ in range(6)}
    assert len(seen) == 1
