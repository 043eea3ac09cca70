"""Fencing on a node: a push carrying an older leader's term is refused, whatever its version.

A node remembers the highest ``X-SLB-Term`` it was pushed with; a deposed admin that still
pushes (it has not noticed that it lost the lock) gets 409 ``stale_term`` and changes nothing,
even with a newer snapshot version. Pushes without the header (one admin, a script) are not
fenced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.integration.test_control_api import admin_node, data_port
from tests.support.backends import Backend, named_backends
from tests.support.client import answered_by
from tests.support.proxy import RunningProxy
from tests.support.proxy import member_entry as member
from tests.support.proxy import snapshot_data as snapshot

BackendFactory = Callable[..., Awaitable[Backend]]
ProxyFactory = Callable[[dict[str, Any]], Awaitable[RunningProxy]]


def term(n: int | str) -> dict[str, str]:
    return {"X-SLB-Term": str(n)}


async def test_push_from_an_older_term_is_refused_and_changes_nothing(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory, tmp_path: Path) -> None:
    a, b = await named_backends(backend_factory, "a", "b")
    proxy, control = await admin_node(proxy_factory, tmp_path)
    assert (await control.push(snapshot(5, {"g": [member(a)]}), headers=term(7))).status == 200
    # the old leader (term 6) pushes a newer version: refused
    refused = await control.push(snapshot(9, {"g": [member(b)]}), headers=term(6))
    assert refused.status == 409
    assert refused.json()["error"] == "stale_term"
    assert refused.json()["term"] == 7
    patched = await control.patch_group("g", {"base_version": 5, "version": 6,
                                              "add": [member(b)]}, headers=term(6))
    assert (patched.status, patched.json()["error"]) == (409, "stale_term")
    assert (await control.config())["version"] == 5
    assert await answered_by(data_port(proxy), 3) == ["a", "a", "a"]


async def test_the_same_or_a_newer_term_is_accepted_and_raises_the_fence(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory, tmp_path: Path) -> None:
    a, b = await named_backends(backend_factory, "a", "b")
    _, control = await admin_node(proxy_factory, tmp_path)
    assert (await control.push(snapshot(1, {"g": [member(a)]}), headers=term(3))).status == 200
    assert (await control.push(snapshot(2, {"g": [member(a)]}), headers=term(3))).status == 200
    assert (await control.push(snapshot(3, {"g": [member(b)]}), headers=term(4))).status == 200
    assert (await control.push(snapshot(4, {"g": [member(a)]}), headers=term(3))).status == 409
    # unfenced pushes (no header) still apply
    assert (await control.push(snapshot(5, {"g": [member(a)]}))).status == 200


async def test_a_term_that_is_not_a_number_is_a_clear_400(
        backend_factory: BackendFactory, proxy_factory: ProxyFactory, tmp_path: Path) -> None:
    (a,) = await named_backends(backend_factory, "a")
    _, control = await admin_node(proxy_factory, tmp_path)
    for bad in ("-1", "seven", ""):
        reply = await control.push(snapshot(1, {"g": [member(a)]}), headers=term(bad))
        assert reply.status == 400, bad
        assert "X-SLB-Term must be a non-negative integer" in reply.json()["message"]
    assert (await control.config())["version"] == 0
