"""Live figures of a group's members, as the proxy nodes report them (``GET /v1/status``).

The web UI polls these every few seconds: for each member, the requests in flight (``active``),
the requests answered (``requests``) and the failures (``failures``), summed over every node of
every cluster that serves the group, and the state each node applies (``applied``), which the
group page shows beside the desired state. Nodes are asked concurrently with a short timeout; a node
that does not answer is listed in ``errors`` and left out of the sums, so one dead node never
blanks the page. Answers are cached for ``TTL`` seconds, so any number of open pages costs each
node at most one status request per ``TTL``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from admin.domain.service import AdminService
from admin.domain.snapshots import cluster_content

TTL = 1.0  # seconds an answer of a node is reused
TIMEOUT = 1.5  # seconds to wait for a node
FIGURES = ("active", "requests", "failures")


@dataclass
class NodeAnswer:
    at: float
    status: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class LiveFigures:
    """Per member sums over the nodes that answered, and which nodes did not."""

    members: dict[str, dict[str, int]] = field(default_factory=dict)
    applied: dict[str, dict[str, str]] = field(default_factory=dict)  # member -> node -> state
    nodes: int = 0  # nodes asked
    answered: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # node -> why it gave no figures

    def to_json(self) -> dict[str, Any]:
        return {"members": self.members, "nodes": self.nodes, "answered": self.answered,
                "errors": self.errors}


class LiveStatus:
    def __init__(self, service: AdminService, ttl: float = TTL, timeout: float = TIMEOUT
                 ) -> None:
        self.service = service
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, NodeAnswer] = {}  # control_url -> last answer
        self._inflight: dict[str, asyncio.Task[NodeAnswer]] = {}

    def nodes_serving(self, group: str) -> list[dict[str, Any]]:
        """The nodes (store bodies) of every cluster whose active routes use ``group``."""
        content = self.service.active_content() or {}
        clusters = {c["name"] for c in content.get("cluster", [])
                    if any(g["name"] == group for g in cluster_content(content, c["name"])[2])}
        # the store's bodies, not ``service.objects``: answers never carry a node's token,
        # but asking the node for its status needs it
        return [row.body for row in self.service.store.objects("node")
                if row.body["cluster"] in clusters]

    async def group(self, group: str, addresses: list[str]) -> LiveFigures:
        nodes = self.nodes_serving(group)
        answers = await asyncio.gather(*(self._status(n) for n in nodes))
        out = LiveFigures(members={a: dict.fromkeys(FIGURES, 0) for a in addresses},
                          nodes=len(nodes))
        for node, answer in zip(nodes, answers, strict=True):
            if answer.status is None:
                out.errors[node["name"]] = answer.error or "no answer"
                continue
            out.answered += 1
            for address, figures in (answer.status.get("groups") or {}).get(group, {}).items():
                out.applied.setdefault(address, {})[node["name"]] = str(figures.get("state"))
                sums = out.members.setdefault(address, dict.fromkeys(FIGURES, 0))
                for key in FIGURES:
                    value = figures.get(key)
                    if isinstance(value, int):
                        sums[key] += value
        return out

    async def _status(self, node: dict[str, Any]) -> NodeAnswer:
        url = node["control_url"]
        cached = self._cache.get(url)
        if cached is not None and time.monotonic() - cached.at < self.ttl:
            return cached
        task = self._inflight.get(url)
        if task is None:  # one request per node at a time, shared by every page asking
            task = asyncio.get_running_loop().create_task(self._refresh(url, node.get("token")))
            self._inflight[url] = task
        # shielded: a page that goes away does not cancel the answer others wait for
        return await asyncio.shield(task)

    async def _refresh(self, url: str, token: str | None) -> NodeAnswer:
        try:
            answer = await self._fetch(url, token)
        finally:
            self._inflight.pop(url, None)
        self._cache[url] = answer
        return answer

    async def _fetch(self, url: str, token: str | None) -> NodeAnswer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                reply = await client.get(f"{url}/v1/status", headers=headers)
        except httpx.TimeoutException:
            return NodeAnswer(time.monotonic(), error=f"no answer in {self.timeout:g} s")
        except Exception as exc:  # refused, reset, bad URL: shown on the page, never raised
            return NodeAnswer(time.monotonic(), error=str(exc) or type(exc).__name__)
        if reply.status_code != 200:
            return NodeAnswer(time.monotonic(), error=f"HTTP {reply.status_code}")
        try:
            body = reply.json()
        except ValueError:
            return NodeAnswer(time.monotonic(), error="the answer is not JSON")
        if not isinstance(body, dict):
            return NodeAnswer(time.monotonic(), error="unexpected answer")
        return NodeAnswer(time.monotonic(), status=body)
