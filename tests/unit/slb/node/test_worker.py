"""``slb.node.worker``: a worker applies what its supervisor sends, holding the config once."""

from __future__ import annotations

import pickle
from typing import Any

from slb.model import parse_config
from slb.model.identity import GROUP_DIGEST, MIX_PARTIAL, cache_of
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


async def test_a_worker_never_digests_the_groups_of_a_delta() -> None:
    """The hash is the node's business: a worker shipped a hashed config applies deltas
    without digesting their groups or keeping a XOR it would never read."""
    worker = Worker()
    try:
        config = parse_config(snapshot(1))
        config.content_hash()
        shipped = pickle.loads(pickle.dumps(config))  # as the supervisor sends it
        assert (await worker.handle({"op": "apply", "config": shipped}))["ok"]
        for version, members in ((2, []), (3, config.groups[0].members)):
            group = config.groups[0].model_copy(update={"members": members})
            assert (await worker.handle({"op": "groups", "groups": [group],
                                         "version": version}))["ok"]
            assert GROUP_DIGEST not in cache_of(group)
        assert worker.server is not None
        assert MIX_PARTIAL not in cache_of(worker.server.config)
    finally:
        await worker.drain()
