"""``slb.proxy.context``: one runtime reference per process, swapped whole on apply."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from slb.balancing import hashing
from slb.model import Config, Member, parse_config
from slb.proxy import context
from slb.proxy.client import ClientProtocol
from slb.proxy.context import ProxyContext, Sweeper
from tests.support.fake_proxy import FakeTransport, one_group_config
from tests.support.timing import wait_until
from tests.unit.slb.proxy.test_compile import Conn  # an idle connection's stand-in


def config(version: int = 1, weight: int = 1, **http: Any) -> Config:
    return parse_config({
        "version": version, "http": http,
        "groups": [{"name": "web", "members": [{"address": "10.0.0.1:80", "weight": weight}]}],
        "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080",
                             "routes": [{"path": "/", "group": "web"}]}]})


async def test_everything_the_protocol_reads_comes_from_the_one_runtime() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config(request_id_header="X-Trace",
                                                          max_header_bytes=2048,
                                                          max_uri_bytes=1024))
    first = ctx.runtime
    assert ctx.settings is first.config.http
    assert ctx.head_limit == 3072
    assert ctx.request_id_field == b"X-Trace: "
    assert b"x-trace" in ctx.request_fields
    assert ctx.listen_hosts == {"127.0.0.1:8080": b"127.0.0.1:8080"}

    second = ctx.apply(config(version=2, request_id_header="X-Other"))
    assert ctx.runtime is second is not first
    assert ctx.request_id_field == b"X-Other: " and b"x-trace" not in ctx.request_fields
    assert first.request_id_field == b"X-Trace: "  # requests in flight keep theirs


async def test_a_surviving_member_keeps_its_state_and_takes_the_new_weight() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    before = ctx.runtime.pools["web"].members["10.0.0.1:80"]
    before.active = 2
    ctx.apply(config(version=2, weight=7))
    after = ctx.runtime.pools["web"].members["10.0.0.1:80"]
    assert after is before and (after.active, after.weight) == (2, 7)


async def test_a_pool_delta_swaps_the_runtime_with_the_new_config() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    base = ctx.runtime
    group = base.config.groups[0].model_copy(update={"members": []})
    new_config = base.config.with_groups({0: group}, version=2)
    ctx.apply_groups(new_config, [group])
    assert ctx.runtime is not base and ctx.runtime.config is new_config
    assert ctx.runtime.pools["web"].members == {}
    assert ctx.runtime.tables is base.tables


async def test_the_access_log_is_kept_while_its_file_is_and_closed_when_dropped(
        tmp_path: Path) -> None:
    path = str(tmp_path / "access.log")
    on = {"access_log": {"enabled": True, "path": path}}
    ctx = ProxyContext(asyncio.get_running_loop(),
                       parse_config({**config().to_json(), **on}))
    log = ctx.access_log
    assert log is not None and log.path == path
    ctx.apply(parse_config({**config(version=2).to_json(), **on}))
    assert ctx.access_log is log
    ctx.apply(config(version=3))
    assert ctx.access_log is None and log.fd == 2  # closed


class ClientStandIn:
    """A client connection as the sweeper sees it: a deadline, fired once due."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.transport: Any = None
        self.fired = asyncio.Event()

    def on_deadline(self, now: float) -> None:
        self.deadline = float("inf")
        self.fired.set()

    def close_if_idle(self) -> None:
        pass


async def test_the_sweeper_fires_due_deadlines_only() -> None:
    loop = asyncio.get_running_loop()
    ctx = ProxyContext(loop, config())
    due, later = ClientStandIn(loop.time()), ClientStandIn(loop.time() + 3600)
    ctx.connections |= {due, later}
    sweeper = Sweeper(ctx)
    sweeper.start()
    try:
        async with asyncio.timeout(30):
            await due.fired.wait()
    finally:
        sweeper.stop()
    assert due.fired.is_set() and not later.fired.is_set()


class IdlePoolStandIn:
    """A pool holding idle upstream connections that never expire."""

    def expire_idle(self, now: float) -> bool:
        return True


async def test_the_sweeper_rests_without_connections_and_a_new_one_wakes_it(
        monkeypatch: Any) -> None:
    # a rest as long as the test: only the wake can fire the new connection's deadline
    monkeypatch.setattr(context, "REST_INTERVAL", 3600.0)
    loop = asyncio.get_running_loop()
    ctx = ProxyContext(loop, config())
    sweeper = Sweeper(ctx)
    sweeper.start()
    try:
        assert await wait_until(lambda: sweeper.resting, timeout=30)
        client = ClientStandIn(loop.time())  # due at once: a header timeout run out
        ctx.opened(client)
        assert not sweeper.resting and ctx.stats.client_connections == 1
        async with asyncio.timeout(30):
            await client.fired.wait()
        ctx.closed(client)
        assert ctx.stats.client_connections == 0
        assert await wait_until(lambda: sweeper.resting, timeout=30)  # rests again
    finally:
        sweeper.stop()


async def test_the_sweeper_goes_on_while_idle_upstream_connections_remain() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    ctx.idle_pools.add(IdlePoolStandIn())  # type: ignore[arg-type]
    sweeper = Sweeper(ctx)
    sweeper.start()
    try:
        ticked = sweeper._ticks
        assert await wait_until(lambda: sweeper._ticks >= ticked + 3, timeout=30)
        assert not sweeper.resting  # their idle timeout needs the sweeper's pace
        ctx.idle_pools.clear()
        assert await wait_until(lambda: sweeper.resting, timeout=30)
    finally:
        sweeper.stop()


async def test_a_stopped_sweeper_stays_stopped_when_a_connection_comes() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), config())
    sweeper = Sweeper(ctx)
    sweeper.start()
    assert await wait_until(lambda: sweeper.resting, timeout=30)
    sweeper.stop()  # as a node that closes its listeners
    ctx.opened(ClientStandIn(float("inf")))  # a handshake that ends after the close
    assert not sweeper.resting and sweeper._handle is None


async def test_an_upstream_connection_parked_after_its_client_left_is_still_expired(
        monkeypatch: Any) -> None:
    # a rest as long as the test: only a wake can expire the parked connection
    monkeypatch.setattr(context, "REST_INTERVAL", 3600.0)
    loop = asyncio.get_running_loop()
    member_saw_close = asyncio.Event()

    async def member(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the proxy closes its connection
        member_saw_close.set()
        writer.close()

    server = await asyncio.start_server(member, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    document = one_group_config()
    document["groups"] = [{"name": "g", "members": [{"address": f"127.0.0.1:{port}"}],
                           "timeouts": {"idle": 0.2}}]
    ctx = ProxyContext(loop, parse_config(document))
    connect_may_finish = asyncio.Event()

    class HeldConnects:
        """The loop, with member connects held until the test lets them finish."""

        def __getattr__(self, name: str) -> Any:
            return getattr(loop, name)

        async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
            await connect_may_finish.wait()
            return await loop.create_connection(*args, **kwargs)

    sweeper = Sweeper(ctx)
    sweeper.start()
    client = ClientProtocol(ctx, "127.0.0.1:8080")
    client.loop = HeldConnects()  # type: ignore[assignment]
    client.connection_made(FakeTransport())
    try:
        client.data_received(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
        client.connection_lost(None)  # the client leaves while its member connect is under way
        assert await wait_until(lambda: sweeper.resting, timeout=30)
        connect_may_finish.set()  # the connect ends: the connection is parked idle
        async with asyncio.timeout(30):
            await member_saw_close.wait()  # closed after its 0.2 s idle timeout
        assert not ctx.idle_pools
    finally:
        sweeper.stop()
        for _, state in ctx.members():
            state.close_idle()
        server.close()


async def test_a_resting_sweeper_has_flushed_the_access_log(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    ctx = ProxyContext(asyncio.get_running_loop(), parse_config(
        {**config().to_json(), "access_log": {"enabled": True, "path": str(path)}}))
    log = ctx.access_log
    assert log is not None
    log.lines.append("the last request's line\n")  # as a request that just ended leaves it
    sweeper = Sweeper(ctx)
    sweeper.start()
    try:
        assert await wait_until(lambda: sweeper.resting, timeout=30)
        assert path.read_text() == "the last request's line\n"
    finally:
        sweeper.stop()
        log.close()


# -- apply_groups: a pool delta over surviving members (a health flip, a weight change) -------

def three(algorithm: str = "wrr") -> Config:
    return parse_config({
        "version": 1,
        "groups": [{"name": "web", "algorithm": algorithm,
                    **({"hash_key": "path"} if algorithm == "hash" else {}),
                    "members": [{"address": f"10.0.0.{i}:80"} for i in (1, 2, 3)]}],
        "virtual_servers": [{"name": "site", "listen": "127.0.0.1:8080",
                             "routes": [{"path": "/", "group": "web"}]}]})


def delta(ctx: ProxyContext, **changes: tuple[int, str]) -> None:
    """One ``apply_groups`` of group ``web`` with members (by last octet) set to (weight, state)."""
    base = ctx.runtime.config
    group = base.groups[0]
    members = [Member(m.address, *changes.get(f"m{m.address.split('.')[3][0]}",
                                              (m.weight, m.state)))
               for m in group.members]
    changed = group.model_copy(update={"members": members})
    ctx.apply_groups(base.with_groups({0: changed}, version=base.version + 1), [changed])


async def test_a_flipped_member_keeps_its_object_and_counters_and_leaves_the_balancer() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), three())
    pool = ctx.runtime.pools["web"]
    states = dict(pool.members)
    two = states["10.0.0.2:80"]
    two.active, two.requests, two.failures, two.current_weight = 2, 40, 3, -1
    delta(ctx, m2=(1, "down"))
    assert ctx.runtime.pools["web"] is pool and pool.members == states
    assert pool.members["10.0.0.2:80"] is two
    assert (two.active, two.requests, two.failures, two.current_weight) == (2, 40, 3, -1)
    assert two.state == "down"
    assert [m.address for m in pool.balancer.members] == ["10.0.0.1:80", "10.0.0.3:80"]
    assert {pool.pick((), 0.0) for _ in range(10)} == {states["10.0.0.1:80"],
                                                       states["10.0.0.3:80"]}
    delta(ctx, m2=(1, "up"))  # back, in its configured place
    assert pool.balancer.members == tuple(states.values())


async def test_a_drained_member_loses_its_idle_connections_only() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), three())
    pool = ctx.runtime.pools["web"]
    idle = {address: Conn() for address in pool.members}
    for address, member in pool.members.items():
        member.idle.append(idle[address])  # type: ignore[arg-type]
    drained = pool.members["10.0.0.2:80"]
    drained.active = 1  # a request in flight on its own connection: finishes there
    delta(ctx, m2=(1, "drain"))
    assert {a: c.closed for a, c in idle.items()} == {
        "10.0.0.1:80": False, "10.0.0.2:80": True, "10.0.0.3:80": False}
    assert drained.idle == [] and drained.active == 1
    assert [len(m.idle) for m in pool.members.values()] == [1, 0, 1]


async def test_a_weight_change_reaches_the_balancer() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), three())
    pool = ctx.runtime.pools["web"]
    delta(ctx, m1=(3, "up"), m3=(0, "up"))
    picked = Counter(pool.pick((), 0.0).address for _ in range(40))  # type: ignore[union-attr]
    assert picked == {"10.0.0.1:80": 30, "10.0.0.2:80": 10}
    assert ctx.runtime.config.groups[0].members[0].weight == 3


async def test_the_ejection_horizon_stands_over_a_flip_of_another_member() -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), three())
    pool = ctx.runtime.pools["web"]
    first = pool.members["10.0.0.1:80"]
    for _ in range(pool.passive_health.max_fails):
        pool.record_failure(first, now=100.0)
    horizon = pool.ejected_horizon
    assert horizon > 100.0
    delta(ctx, m3=(1, "down"))
    assert pool.ejected_horizon == horizon
    assert pool.pick((), 100.5) is pool.members["10.0.0.2:80"]  # the ejected one skipped


async def test_a_hash_group_keeps_its_table_over_a_state_flip(monkeypatch: Any) -> None:
    ctx = ProxyContext(asyncio.get_running_loop(), three("hash"))
    pool = ctx.runtime.pools["web"]
    owner = pool.balancer.owner(b"/cart")  # type: ignore[attr-defined]
    filled: list[int] = []
    monkeypatch.setattr(hashing, "build_table", lambda *a: filled.append(1))
    delta(ctx, m2=(1, "down"))
    assert filled == []
    assert pool.balancer.owner(b"/cart") is owner
