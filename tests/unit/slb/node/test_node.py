"""``slb.node.node``: the control API's rules, over a fake data plane (no sockets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slb.metrics import Stats
from slb.model import Config, Group, identity, parse_config
from slb.node.control import Request
from slb.node.files import load_state
from slb.node.node import Node

TOKEN = "secret"
LOCAL = parse_config({"control": {"listen": "127.0.0.1:0", "token": TOKEN}})


class FakePlane:
    """Applies whatever it is given; the node reads the applied config from here."""

    def __init__(self) -> None:
        self.config: Config | None = None
        self.applied: list[int] = []
        self.deltas: list[list[str]] = []  # the groups of each pool delta applied

    async def start(self, config: Config) -> None:
        self.config = config

    async def apply(self, config: Config) -> None:
        self.config = config
        self.applied.append(config.version)

    async def apply_groups(self, config: Config, groups: list[Group]) -> None:
        self.config = config
        self.applied.append(config.version)
        self.deltas.append([g.name for g in groups])

    async def scrape(self) -> tuple[Stats, dict[str, dict[str, dict[str, Any]]]]:
        return Stats(), {}

    async def member_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {}

    async def counters(self) -> tuple[Stats, dict[str, dict[str, dict[str, int]]]]:
        return Stats(), {}

    async def set_health(self, changes: dict[tuple[str, str], bool]) -> None:
        self.health = changes

    def applied_versions(self) -> dict[str, int]:
        return {"main": self.config.version if self.config else 0}

    async def drain(self) -> None:
        pass


def request(method: str, path: str, body: Any = None, token: str | None = TOKEN) -> Request:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return Request(method, path, "", headers, json.dumps(body).encode() if body else b"")


async def started(local: Config = LOCAL, plane: FakePlane | None = None,
                  path: str | None = None) -> Node:
    """A node whose plane has started (its control listener on a free loopback port)."""
    node = Node(local, plane or FakePlane(), path)
    await node.start()
    assert node.control is not None
    node.control.close()  # the tests call ``handle`` directly
    return node


def snapshot(version: int) -> dict[str, Any]:
    return {"version": version, "groups": [{"name": "web", "members": [
        {"address": "10.0.0.1:80"}]}]}


async def test_an_admin_managed_node_takes_snapshots_and_deltas_and_reports_them() -> None:
    plane = FakePlane()
    node = await started(plane=plane)
    assert node.config is LOCAL  # nothing applied yet: the local file
    assert (await node.handle(request("GET", "/ready"))).status == 503
    put = await node.handle(request("PUT", "/v1/config", snapshot(2)))
    assert put.status == 200 and json.loads(put.body)["version"] == 2
    assert node.config is plane.config and node.config.control == LOCAL.control
    patch = await node.handle(request("PATCH", "/v1/groups/web", {
        "base_version": 2, "version": 3, "remove": ["10.0.0.1:80"]}))
    assert patch.status == 200 and plane.applied == [2, 3]
    view = json.loads((await node.handle(request("GET", "/v1/config"))).body)
    assert (view["version"], view["hash"]) == (3, plane.config.content_hash())
    assert view["snapshot"]["groups"][0]["members"] == []
    assert (await node.handle(request("GET", "/ready"))).status == 200


async def test_changes_are_refused_with_the_reason() -> None:
    node = await started()
    await node.handle(request("PUT", "/v1/config", snapshot(2)))
    stale = await node.handle(request("PUT", "/v1/config", snapshot(2)))
    assert (stale.status, json.loads(stale.body)["error"]) == (409, "stale")
    behind = await node.handle(request("PATCH", "/v1/groups/web", {"base_version": 1,
                                                                    "version": 3}))
    assert (behind.status, json.loads(behind.body)["error"]) == (409, "base_mismatch")
    assert (await node.handle(request("PUT", "/v1/config", snapshot(3), token="no"))
            ).status == 401
    not_json = Request("PUT", "/v1/config", "", {"authorization": f"Bearer {TOKEN}"}, b"{")
    assert (await node.handle(not_json)).status == 400
    assert (await node.handle(request("DELETE", "/v1/config"))).status == 405


async def test_a_file_managed_node_refuses_pushes() -> None:
    local = parse_config({**LOCAL.to_json(), **snapshot(1), "virtual_servers": [
        {"name": "vs", "listen": "127.0.0.1:0", "routes": [{"path": "/", "group": "web"}]}]})
    node = await started(local, path="slb.yaml")
    refused = await node.handle(request("PUT", "/v1/config", snapshot(5)))
    assert (refused.status, json.loads(refused.body)["error"]) == (409, "file_managed")


async def test_the_snapshot_and_status_need_the_token_and_never_show_it() -> None:
    node = await started()
    await node.handle(request("PUT", "/v1/config", snapshot(2)))
    for path in ("/v1/config", "/v1/status"):
        assert (await node.handle(request("GET", path, token=None))).status == 401
        assert (await node.handle(request("GET", path, token="wrong"))).status == 401
        answer = await node.handle(request("GET", path))
        assert answer.status == 200 and TOKEN.encode() not in answer.body
    for path in ("/healthz", "/ready", "/metrics"):  # probes and scrapers have no token
        assert (await node.handle(request("GET", path, token=None))).status == 200


async def test_a_node_answers_its_control_api_before_it_serves_traffic() -> None:
    """The control listener opens first; until the plane is up it says 503."""
    seen: list[int] = []

    class SlowPlane(FakePlane):
        async def start(self, config: Config) -> None:
            for path in ("/healthz", "/ready", "/v1/status"):
                seen.append((await node.handle(request("GET", path))).status)
            await super().start(config)

    node = Node(LOCAL, SlowPlane())
    await node.start()
    assert node.control is not None
    node.control.close()
    assert seen == [503, 503, 503]
    assert (await node.handle(request("GET", "/v1/status"))).status == 200
    assert (await node.handle(request("GET", "/healthz"))).status == 200


def two_groups(version: int) -> dict[str, Any]:
    return {"version": version, "groups": [
        {"name": name, "members": [{"address": "10.0.0.1:80"}, {"address": "10.0.0.2:80"}]}
        for name in ("web", "api")]}


def term(n: int) -> dict[str, str]:
    return {"x-slb-term": str(n)}


async def test_a_batch_applies_every_group_in_one_step_or_nothing() -> None:
    plane = FakePlane()
    node = await started(plane=plane)
    await node.handle(request("PUT", "/v1/config", two_groups(2)))
    bad = await node.handle(request("PATCH", "/v1/groups", {
        "base_version": 2, "version": 3, "groups": [
            {"name": "web", "remove": ["10.0.0.1:80"]},
            {"name": "api", "remove": ["10.0.0.9:80"]}]}))
    answer = json.loads(bad.body)
    assert (bad.status, answer["error"]) == (400, "invalid")
    assert answer["details"] == ["groups[1] (api): remove: 10.0.0.9:80 is not a member"]
    assert (node.config.version, plane.deltas) == (2, [])  # web untouched too

    good = await node.handle(request("PATCH", "/v1/groups", {
        "base_version": 2, "version": 3, "groups": [
            {"name": "web", "remove": ["10.0.0.1:80"]},
            {"name": "api", "upsert": [{"address": "10.0.0.2:80", "state": "down"}]}]}))
    assert good.status == 200
    assert json.loads(good.body) == {"version": 3, "hash": node.config.content_hash()}
    assert plane.deltas == [["web", "api"]] and plane.applied == [2, 3]
    assert [len(g.members) for g in node.config.groups] == [1, 2]
    again = await node.handle(request("PATCH", "/v1/groups", {
        "base_version": 2, "version": 3, "groups": []}))
    assert (again.status, json.loads(again.body)["applied_version"]) == (409, 3)
    assert (await node.handle(request("PUT", "/v1/groups"))).status == 405
    assert (await node.handle(request("PATCH", "/v1/groups", {"groups": []}, token="no"))
            ).status == 401


async def test_a_batch_is_fenced_like_every_push() -> None:
    node = await started()
    put = request("PUT", "/v1/config", two_groups(2))
    put.headers.update(term(5))
    assert (await node.handle(put)).status == 200
    old = request("PATCH", "/v1/groups", {"base_version": 2, "version": 3, "groups": [
        {"name": "web", "remove": ["10.0.0.1:80"]}]})
    old.headers.update(term(4))
    refused = await node.handle(old)
    assert (refused.status, json.loads(refused.body)["error"]) == (409, "stale_term")
    assert node.config.version == 2


async def test_a_delta_reaches_the_plane_before_its_groups_json_which_is_made_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The changed groups' JSON (for the answer's hash and the state file) is made after the
    plane has the delta, and once: the answer and the write share it."""
    made: list[str] = []  # the groups whose JSON was made, in order
    make = identity._made_json

    def counting(group: Any) -> bytes:
        made.append(group.name)
        return make(group)
    monkeypatch.setattr(identity, "_made_json", counting)

    class Plane(FakePlane):
        async def apply_groups(self, config: Config, groups: list[Group]) -> None:
            self.made_before = list(made)
            await super().apply_groups(config, groups)

    plane = Plane()
    node = await started(parse_config({**LOCAL.to_json(), "state_dir": str(tmp_path)}), plane)
    assert (await node.handle(request("PUT", "/v1/config", two_groups(2)))).status == 200
    made.clear()
    answer = await node.handle(request("PATCH", "/v1/groups", {
        "base_version": 2, "version": 3, "groups": [
            {"name": "api", "upsert": [{"address": "10.0.0.2:80", "state": "down"}]}]}))
    assert plane.made_before == []
    await node.close()  # writes the delta
    assert made == ["api"]
    assert json.loads(answer.body)["hash"] == parse_config(node.config.to_json()).content_hash()
    saved = load_state(tmp_path)[0]
    assert saved is not None and (saved.version, saved.groups) == (3, node.config.groups)


async def test_a_restarted_node_still_refuses_a_deposed_leader(tmp_path: Path) -> None:
    local = parse_config({**LOCAL.to_json(), "state_dir": str(tmp_path)})
    first = await started(local)
    put = request("PUT", "/v1/config", two_groups(2))
    put.headers.update(term(7))
    assert (await first.handle(put)).status == 200
    # a newer leader's delta raises the term: on disk before it is answered, not coalesced
    delta = request("PATCH", "/v1/groups", {"base_version": 2, "version": 3, "groups": []})
    delta.headers.update(term(8))
    assert (await first.handle(delta)).status == 200
    assert load_state(tmp_path)[1] == 8
    await first.close()

    second = await started(local)
    assert (second.term, second.config.version) == (8, 3)
    deposed = request("PUT", "/v1/config", two_groups(9))
    deposed.headers.update(term(7))
    refused = await second.handle(deposed)
    assert (refused.status, json.loads(refused.body)["term"]) == (409, 8)
    await second.close()


async def test_a_term_seen_before_any_snapshot_is_kept_too(tmp_path: Path) -> None:
    local = parse_config({**LOCAL.to_json(), "state_dir": str(tmp_path)})
    first = await started(local)
    bad = request("PUT", "/v1/config", {"version": "x"})
    bad.headers.update(term(3))
    assert (await first.handle(bad)).status == 400  # refused, yet the term was seen
    await first.close()
    second = await started(local)
    assert (second.term, second.config.version) == (3, 0)
    await second.close()
