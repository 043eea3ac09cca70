"""Sessions bound to TTL health checks, as the admin's election uses them (admin/ha.py): the
check is passed by its owner; when it is not passed within its TTL it goes critical and Consul
invalidates every session bound to it at once, releasing (or deleting) their locks, however
long the session's own TTL is. Time runs on a ManualClock: each test moves it on purpose.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.consul_double import ConsulDouble, ManualClock
from tests.unit.test_consul_double import raw

LOCK = "slb/admin/leader"
CHECK = "service:slb-admin-a"


@pytest.fixture
async def clocked() -> AsyncIterator[tuple[ConsulDouble, ManualClock]]:
    clock = ManualClock()
    started = await ConsulDouble.start(clock=clock)  # session_ttl_min: Consul's 10 s
    yield started, clock
    await started.close()


async def put(double: ConsulDouble, target: str, body: Any = None) -> tuple[int, Any]:
    """``PUT target`` with a JSON body; (status, the answer as JSON or text)."""
    status, _, answer = await raw(double, "PUT", target,
                                  body=b"" if body is None else json.dumps(body).encode())
    try:
        return status, json.loads(answer)
    except ValueError:
        return status, answer.decode()


async def register_admin(double: ConsulDouble, **check: Any) -> None:
    status, _ = await put(double, "/v1/agent/service/register", {
        "ID": "slb-admin-a", "Name": "slb-admin",
        "Check": {"CheckID": CHECK, "TTL": "3s", **check}})
    assert status == 200


async def session(double: ConsulDouble, **fields: Any) -> str:
    body = {"TTL": "10s", "LockDelay": "1s", "NodeChecks": ["serfHealth"],
            "ServiceChecks": [{"ID": CHECK}], **fields}
    # a field given as None is left out of the request
    status, answer = await put(double, "/v1/session/create",
                               {k: v for k, v in body.items() if v is not None})
    assert status == 200, answer
    return str(answer["ID"])


async def info(double: ConsulDouble, sid: str) -> Any:
    status, _, body = await raw(double, "GET", f"/v1/session/info/{sid}")
    assert status == 200
    return json.loads(body)


async def lock_entry(double: ConsulDouble) -> dict[str, Any] | None:
    status, _, body = await raw(double, "GET", f"/v1/kv/{LOCK}")
    return json.loads(body)[0] if status == 200 else None


async def test_a_session_lives_while_its_check_is_passed_and_dies_at_once_when_it_is_not(
        clocked: tuple[ConsulDouble, ManualClock]) -> None:
    double, clock = clocked
    await register_admin(double, Status="passing")
    sid = await session(double)
    assert (await info(double, sid))[0]["ServiceChecks"] == [{"ID": CHECK, "Namespace": ""}]
    assert (await put(double, f"/v1/kv/{LOCK}?acquire={sid}", {"admin": "a"}))[1] is True
    for _ in range(5):  # passed every 2.9 s: alive well past its check's TTL
        clock.advance(2.9)
        assert (await put(double, f"/v1/agent/check/pass/{CHECK}"))[0] == 200
    assert (await info(double, sid)) != []
    # its owner died: 3 s without a pass, the check is critical and the session gone at once,
    # 7 s before its own TTL could even start to run out
    clock.advance(3.0)
    assert [c["Status"] for c in double.health("slb-admin")[0]["Checks"]
            if c["CheckID"] == CHECK] == ["critical"]
    assert await info(double, sid) == []
    entry = await lock_entry(double)
    assert entry is not None and "Session" not in entry  # released, its value kept
    assert json.loads(base64.b64decode(entry["Value"])) == {"admin": "a"}
    assert (await put(double, f"/v1/session/renew/{sid}"))[0] == 404
    # lock-delay: another admin's session may take the lock only after LockDelay (1 s)
    other = await session(double, ServiceChecks=[])
    assert (await put(double, f"/v1/kv/{LOCK}?acquire={other}", {"admin": "b"}))[1] is False
    clock.advance(1.0)
    assert (await put(double, f"/v1/kv/{LOCK}?acquire={other}", {"admin": "b"}))[1] is True


async def test_a_critical_check_refuses_a_session_and_deregistering_one_invalidates_it(
        clocked: tuple[ConsulDouble, ManualClock]) -> None:
    double, _ = clocked
    await register_admin(double)  # no Status: a new check starts critical, as in Consul
    status, answer = await put(double, "/v1/session/create",
                               {"TTL": "10s", "ServiceChecks": [{"ID": CHECK}]})
    assert (status, answer) == (500, f"Check '{CHECK}' is in critical state")
    assert (await put(double, f"/v1/agent/check/pass/{CHECK}"))[0] == 200
    # the deprecated Checks field binds the same way (merged into NodeChecks)
    sid = await session(double, Behavior="delete", NodeChecks=None, ServiceChecks=None,
                        Checks=["serfHealth", CHECK])
    assert (await info(double, sid))[0]["NodeChecks"] == ["serfHealth", CHECK]
    assert (await put(double, f"/v1/kv/{LOCK}?acquire={sid}", "x"))[1] is True
    # a clean shutdown deregisters the service and its check: the session goes with it, and
    # Behavior delete takes the key along
    assert (await put(double, "/v1/agent/service/deregister/slb-admin-a"))[0] == 200
    assert await info(double, sid) == []
    assert await lock_entry(double) is None
