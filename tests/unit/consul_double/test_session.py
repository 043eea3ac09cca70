"""The double's sessions and locks behave as Consul's: what a leader election over a session and
a KV key (Consul's leader-election guide) relies on, through py-consul's asyncio client.

Time-dependent behaviour (TTL expiry, lock-delay) runs on a ManualClock, so each test moves time
on purpose instead of sleeping; the faults that cut one client off run on real sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import consul
import consul.aio
import pytest

from tests.consul_double import ConsulDouble, ManualClock, start_process
from tests.unit.test_consul_double import client, raw

LOCK = "service/slb-admin/leader"


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[ConsulDouble, ManualClock]]:
    """A double whose session TTLs and lock-delays follow a clock the test moves."""
    clock = ManualClock()
    started = await ConsulDouble.start(clock=clock)
    yield started, clock
    await started.close()


# ------------------------------------------------------------------------------------ create
async def test_a_session_has_consuls_defaults_and_shape(double: ConsulDouble) -> None:
    async with client(double) as c:
        sid = await c.session.create(name="admin-1")
        index, info = await c.session.info(sid)
        _, listed = await c.session.list()
        _, on_node = await c.session.node(double.node_name)
        _, elsewhere = await c.session.node("other-node")

    assert info == {
        "ID": sid, "Name": "admin-1", "Node": double.node_name, "LockDelay": 15_000_000_000,
        "Behavior": "release", "TTL": "", "NodeChecks": ["serfHealth"], "ServiceChecks": None,
        "CreateIndex": int(index), "ModifyIndex": int(index)}
    assert listed == on_node == [info] and elsewhere == []


async def test_session_requests_are_validated_as_consul_does(double: ConsulDouble) -> None:
    cases = [
        ({"TTL": "5s"}, 500, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
        ({"TTL": "86401s"}, 500, "Invalid Session TTL"),
        ({"TTL": "10"}, 500, "Session TTL '10' invalid"),
        ({"Behavior": "explode"}, 500, "Invalid Behavior setting 'explode'"),
        ({"Node": "ghost"}, 500, "Missing node registration"),
        ({"NodeChecks": ["nope"]}, 500, "Missing check 'nope' registration"),
        ({"LockDelay": True}, 400, "Request decode failed"),
        ({"Name": 5}, 400, "Request decode failed"),
    ]
    for body, status, message in cases:
        got_status, _, got = await raw(double, "PUT", "/v1/session/create",
                                       body=json.dumps(body).encode())
        assert (got_status, message in got.decode()) == (status, True), body
    assert (await raw(double, "PUT", "/v1/session/renew/"))[::2] == (400, b"Missing session")


async def test_lock_delay_numbers_below_1000_are_seconds_and_empty_checks_mean_none(
        double: ConsulDouble) -> None:
    status, _, body = await raw(double, "PUT", "/v1/session/create",
                                body=b'{"LockDelay": 5, "Checks": [], "Behavior": "delete"}')
    assert status == 200
    async with client(double) as c:
        _, info = await c.session.info(json.loads(body)["ID"])
    assert info["LockDelay"] == 5_000_000_000 and info["NodeChecks"] == []
    assert info["Behavior"] == "delete"


async def test_a_critical_check_refuses_a_session_and_invalidates_one(
        double: ConsulDouble) -> None:
    double.register("db", "db-1", node="n1", node_address="10.0.0.9")
    async with client(double) as c:
        sid = await c.session.create(node="n1")
        assert await c.kv.put(LOCK, "n1", acquire=sid)
        double.set_node_health("n1", "critical")  # n1's agent is gone
        assert (await c.session.info(sid))[1] is None
        assert "Session" not in (await c.kv.get(LOCK))[1]  # released
        with pytest.raises(consul.ConsulException, match="Check 'serfHealth' is in critical"):
            await c.session.create(node="n1")


# ------------------------------------------------------------------------------------ locks
async def test_acquire_counts_lock_index_and_only_the_holder_may_release(
        double: ConsulDouble) -> None:
    async with client(double) as c:
        a = await c.session.create(name="a", lock_delay=0)
        b = await c.session.create(name="b", lock_delay=0)
        assert await c.kv.put(LOCK, "a", acquire=a) is True
        assert await c.kv.put(LOCK, "b", acquire=b) is False  # held by a
        assert await c.kv.put(LOCK, "a again", acquire=a) is True  # the holder re-acquires
        _, entry = await c.kv.get(LOCK)
        assert (entry["Session"], entry["LockIndex"], entry["Value"]) == (a, 1, b"a again")

        assert await c.kv.put(LOCK, "x", release=b) is False  # not the holder
        assert await c.kv.put(LOCK, "released", release=a) is True
        _, entry = await c.kv.get(LOCK)
        assert "Session" not in entry and entry["LockIndex"] == 1
        assert entry["Value"] == b"released"  # a release writes its body too
        assert await c.kv.put(LOCK, "b", acquire=b) is True  # explicit release: no lock-delay
        assert (await c.kv.get(LOCK))[1]["LockIndex"] == 2


async def test_a_plain_write_to_a_locked_key_keeps_the_holder(double: ConsulDouble) -> None:
    async with client(double) as c:
        sid = await c.session.create()
        assert await c.kv.put(LOCK, "mine", acquire=sid)
        assert await c.kv.put(LOCK, "overwritten") is True
        _, entry = await c.kv.get(LOCK)
    # As in Consul's state store, the session stays and LockIndex takes the request's 0.
    assert (entry["Session"], entry["Value"], entry["LockIndex"]) == (sid, b"overwritten", 0)


# ------------------------------------------------------------------------------------ TTL
async def test_an_unrenewed_session_expires_after_twice_its_ttl_and_releases_its_lock(
        clocked: tuple[ConsulDouble, ManualClock]) -> None:
    double, clock = clocked
    async with client(double) as c:
        sid = await c.session.create(ttl=10)
        assert await c.kv.put(LOCK, "leader", acquire=sid)
        clock.advance(15)
        assert (await c.session.renew(sid))["ID"] == sid  # alive past TTL, within 2 x TTL
        clock.advance(19.9)
        assert (await c.session.info(sid))[1] is not None  # the renew restarted the timer
        clock.advance(0.2)
        assert (await c.session.info(sid))[1] is None
        with pytest.raises(consul.NotFound, match=f"Session id '{sid}' not found"):
            await c.session.renew(sid)
        _, entry = await c.kv.get(LOCK)
    assert "Session" not in entry and entry["Value"] == b"leader"


async def test_lock_delay_blocks_a_new_acquire_after_an_expiry_then_lets_it_through(
        clocked: tuple[ConsulDouble, ManualClock]) -> None:
    double, clock = clocked
    async with client(double) as c:
        old = await c.session.create(ttl=10)  # default lock-delay: 15s
        assert await c.kv.put(LOCK, "old", acquire=old)
        clock.advance(20)  # old leader's session expires
        new = await c.session.create(ttl=10)
        assert await c.kv.put(LOCK, "new", acquire=new) is False
        clock.advance(14.9)
        assert await c.session.renew(new)
        assert await c.kv.put(LOCK, "new", acquire=new) is False
        clock.advance(0.2)
        assert await c.kv.put(LOCK, "new", acquire=new) is True
        _, entry = await c.kv.get(LOCK)
    assert (entry["Session"], entry["LockIndex"]) == (new, 2)


async def test_a_multiplier_of_one_expires_sessions_at_their_ttl() -> None:
    clock = ManualClock()
    async with await ConsulDouble.start(clock=clock, session_ttl_multiplier=1) as double, \
            client(double) as c:
        sid = await c.session.create(ttl=10)
        clock.advance(10)
        assert (await c.session.info(sid))[1] is None


async def test_destroying_a_delete_session_deletes_its_keys(double: ConsulDouble) -> None:
    async with client(double) as c:
        sid = await c.session.create(behavior="delete")
        assert await c.kv.put("ephemeral/me", "here", acquire=sid)
        assert await c.session.destroy(sid) is True
        assert (await c.kv.get("ephemeral/me"))[1] is None
        assert await c.session.destroy(sid) is True  # Consul answers true for a gone session


async def test_a_follower_watching_the_lock_wakes_when_the_leader_session_expires(
        clocked: tuple[ConsulDouble, ManualClock]) -> None:
    double, clock = clocked
    async with client(double) as c:
        leader = await c.session.create(ttl=10)
        assert await c.kv.put(LOCK, "leader", acquire=leader)
        index, _ = await c.kv.get(LOCK)
        watch = asyncio.create_task(c.kv.get(LOCK, index=index, wait="30s"))
        clock.advance(20)
        new_index, entry = await asyncio.wait_for(watch, 5)
    assert int(new_index) > int(index) and "Session" not in entry


# ------------------------------------------------------------------------------------ faults
async def test_one_client_can_be_hung_or_refused_while_the_others_reach_consul(
        double: ConsulDouble) -> None:
    port = await double.client_port("leader")
    async with consul.aio.Consul(host=double.host, port=port,
                                 connections_timeout=0.3) as cut, client(double) as other:
        sid = await cut.session.create(ttl=10)
        double.hang(True, client="leader")
        with pytest.raises(asyncio.TimeoutError):
            await cut.session.renew(sid)
        assert (await other.session.info(sid))[1]["ID"] == sid  # others still get answers
        double.hang(False, client="leader")

        double.fail_with(500, client="leader")
        with pytest.raises(consul.ConsulException, match="No cluster leader"):
            await cut.session.renew(sid)
        assert await other.session.renew(sid)
        double.clear_faults("leader")

        await double.stop(client="leader")
        with pytest.raises(aiohttp.ClientConnectorError):
            await cut.session.renew(sid)
        assert await other.kv.put("still", "served")
        await double.restart(client="leader")
        assert (await cut.session.renew(sid))["ID"] == sid


async def test_process_mode_takes_a_shorter_ttl_minimum_and_scopes_faults_to_a_client() -> None:
    async with await start_process("--session-ttl-min", "1") as proc:
        status, _, body = await raw(proc.address, "PUT", "/v1/session/create",
                                    body=b'{"TTL": "1s"}')
        assert status == 200
        sid = json.loads(body)["ID"]
        status, _, body = await raw(proc.address, "PUT", "/_double/client-port?client=a")
        client_address = f"{proc.host}:{json.loads(body)}"
        await raw(proc.address, "PUT", "/_double/fail?status=500&client=a")
        assert (await raw(client_address, "PUT", f"/v1/session/renew/{sid}"))[0] == 500
        assert (await raw(proc.address, "PUT", f"/v1/session/renew/{sid}"))[0] == 200
        status, _, body = await raw(proc.address, "PUT", f"/_double/invalidate-session/{sid}")
        assert (status, json.loads(body)) == (200, True)
        assert (await raw(proc.address, "PUT", f"/v1/session/renew/{sid}"))[0] == 404
