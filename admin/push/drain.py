"""Drain and wait: until no node has a request in flight to the members taken out.

A deploy script pulls a member out, waits, restarts its backend. "Waits" must mean: every node
applied the pull-out *and* finished the requests it had sent there, and closed its idle
connections to it (a node closes them when a member stops taking traffic). Each node's
``GET /v1/status`` has, per group and member, ``active`` (requests in flight, summed over its
workers) and ``idle_connections``; ``wait_drained`` polls every node every ``POLL`` seconds until
all are zero for every member named, or until the timeout, and reports per node what it saw
last. A member a node no longer lists (it left the snapshot) is drained there.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from admin.push.pusher import NodeTarget

POLL = 0.1  # seconds between two looks at the nodes
DRAIN_TIMEOUT = 60.0  # seconds: the default wait of ?wait=drained
TIMEOUT_MAX = 3600.0


async def node_drain(client: httpx.AsyncClient, node: NodeTarget,
                     members: dict[str, set[str]]) -> dict[str, Any]:
    """``{"node", "drained", "members": {"group/address": {"active", "idle_connections"}}}``,
    or ``"error"`` when the node did not answer (not drained: nobody knows)."""
    headers = {"Authorization": f"Bearer {node.token}"} if node.token else {}
    try:
        reply = await client.get(node.control_url.rstrip("/") + "/v1/status", headers=headers)
        reply.raise_for_status()
        groups = reply.json().get("groups") or {}
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return {"node": node.name, "drained": False,
                "error": f"GET /v1/status: {type(exc).__name__}: {exc}"}
    counts = {}
    for group, addresses in sorted(members.items()):
        for address in sorted(addresses):
            figures = (groups.get(group) or {}).get(address) or {}
            counts[f"{group}/{address}"] = {"active": int(figures.get("active", 0)),
                                            "idle_connections":
                                                int(figures.get("idle_connections", 0))}
    drained = all(c["active"] == 0 and c["idle_connections"] == 0 for c in counts.values())
    return {"node": node.name, "drained": drained, "members": counts}


async def wait_drained(nodes: list[NodeTarget], members: dict[str, set[str]],
                       timeout: float) -> tuple[bool, list[dict[str, Any]]]:
    """Poll every node until ``members`` (group -> addresses) are drained on all, or until
    ``timeout`` seconds; whether they were, and each node's last answer."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=httpx.Timeout(min(5.0, max(timeout, 0.1)))) as client:
        while True:
            answers = list(await asyncio.gather(*(node_drain(client, n, members)
                                                  for n in nodes)))
            done = all(a["drained"] for a in answers)
            if done or time.monotonic() >= deadline:
                return done, answers
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
