"""``slb.node.worker``: a worker applies what its supervisor sends, holding the config once."""

from __future__ import annotations

from typing import Any

from slb.model import parse_config
from slb.node.worker import Worker


def snapshot(version: int, listen: str = "127.0.0.1:0") -> dict[str, Any]:
    return {"version": version,
            "groups": [{"name": "web", "members": [{"address": "10.0.0.1:80"}]}],
            "virtual_servers": [{"name": "site", "listen": listen,
                                 "routes": [{"path": "/", "group": "web"}]}]}


async def test_apply_then_a_group_delta_then_stats() -> None:
    worker = Worker()
    try:
        first = parse_config(snapshot(1))
        assert await worker.handle({"op": "apply", "config": first}) == {"ok": True,
                                                                           "version": 1}
        group = first.groups[0].model_copy(update={"members": []})
        assert await worker.handle({"op": "groups", "groups": [group], "version": 2}) == {
            "ok": True, "version": 2}
        assert worker.server is not None
        assert worker.server.config.version == 2 and worker.server.config.groups[0] == group
        stats = await worker.handle({"op": "stats"})
        assert stats["ok"] and stats["members"] == {"web": {}}
        unknown = await worker.handle({"op": "groups", "groups": [group.model_copy(
            update={"name": "nope"})], "version": 3})
        assert unknown == {"ok": False, "errors": ["no group named 'nope'"]}
    finally:
        await worker.drain()


async def test_a_listener_that_will_not_bind_leaves_no_server() -> None:
    worker = Worker()
    reply = await worker.handle({"op": "apply", "config": parse_config(
        snapshot(1, listen="192.0.2.1:8080"))})  # TEST-NET: not an address of this host
    assert reply["ok"] is False and "cannot listen on 192.0.2.1:8080" in reply["errors"][0]
    assert worker.server is None
    assert await worker.handle({"op": "nope"}) == {"ok": False,
                                                   "errors": ["unknown operation 'nope'"]}
