"""Canary activation: the draft goes to a few nodes first, and on to all only if they stay well.

``start`` (``POST /api/v1/activate`` with ``canary``) validates the draft as an activation does,
picks the canary nodes (named, or ``percent`` of the nodes by name order, at least one), takes
them out of their cluster's pusher (``Publisher.held``: the pusher would otherwise put the
active version back at its next reconcile) and sends each its cluster's snapshot of the draft
with ``PUT /v1/config``. It then watches, every ``POLL`` seconds for ``watch_seconds``, the 5xx
ratio of the requests the canary nodes answered since the start (``slb_requests_total`` from
their ``/metrics``), against the same ratio of the other nodes over the same window.

The verdict: when the canary nodes' ratio exceeds the others' by more than ``max_error_ratio``
(after at least ``MIN_REQUESTS`` requests), the canary is rolled back at once: the nodes go back
to their pusher and the active content is published again, under a version newer than the
canary's, so they take it back; the draft stays a draft and the audit log says the version
failed, with the figures. When the window ends without that, the draft is activated as a new
version (the same as ``activate``, with the canary's reason) and the nodes rejoin their pusher.
``promote`` and ``abort`` decide at once, by hand. One canary at a time; its state
(``status``) is what the UI shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from admin.domain.errors import Conflict, Invalid, NotFound, require_reason
from admin.domain.snapshots import build_snapshot, content_hash, validate_content
from admin.push.pusher import TERM_HEADER

if TYPE_CHECKING:
    from admin.domain.service import AdminService

log = logging.getLogger("admin")

POLL = 1.0  # seconds between two readings of the nodes' metrics
MIN_REQUESTS = 20  # canary requests before a ratio may roll back
TIMEOUT = 5.0  # one push or one metrics read


@dataclass
class Figures:
    requests: int = 0
    errors: int = 0

    @property
    def ratio(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_ratio": round(self.ratio, 4)}


@dataclass
class Canary:
    nodes: list[dict[str, Any]]  # the node rows sent the draft
    others: list[dict[str, Any]]
    content: dict[str, list[dict[str, Any]]]
    who: str
    reason: str
    watch_seconds: float
    max_error_ratio: float
    started_at: float = field(default_factory=time.time)
    state: str = "watching"  # -> promoted | rolled_back
    verdict: str = ""
    version: int | None = None  # the version it became, once promoted
    baseline: dict[str, Figures] = field(default_factory=dict)
    canary: Figures = field(default_factory=Figures)
    rest: Figures = field(default_factory=Figures)
    task: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "nodes": [n["name"] for n in self.nodes],
                "others": [n["name"] for n in self.others], "who": self.who,
                "reason": self.reason, "started_at": self.started_at,
                "watch_seconds": self.watch_seconds, "max_error_ratio": self.max_error_ratio,
                "canary": self.canary.to_json(), "others_figures": self.rest.to_json(),
                "verdict": self.verdict, "version": self.version}


def parse_spec(spec: Any) -> tuple[list[str] | None, float | None, float, float]:
    """``{"nodes": [...]}`` or ``{"percent": 20}``, with ``watch_seconds`` and
    ``max_error_ratio``; Invalid with every mistake."""
    if not isinstance(spec, dict):
        raise Invalid("invalid canary", ['canary: expected {"nodes": [...]} or {"percent": n}'])
    errors = [f"canary.{key}: unknown field" for key in spec
              if key not in ("nodes", "percent", "watch_seconds", "max_error_ratio")]
    nodes, percent = spec.get("nodes"), spec.get("percent")
    if (nodes is None) == (percent is None):
        errors.append("canary: expected exactly one of nodes, percent")
    if nodes is not None and (not isinstance(nodes, list) or not nodes
                              or not all(isinstance(n, str) for n in nodes)):
        errors.append("canary.nodes: expected a list of node names")
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int | float)
                                or not 0 < percent < 100):
        errors.append("canary.percent: expected a number above 0 and below 100")
    watch, ratio = spec.get("watch_seconds", 120), spec.get("max_error_ratio", 0.02)
    if isinstance(watch, bool) or not isinstance(watch, int | float) or not 0 < watch <= 86400:
        errors.append("canary.watch_seconds: expected seconds, above 0")
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
        errors.append("canary.max_error_ratio: expected a ratio from 0 to 1")
    if errors:
        raise Invalid("invalid canary", errors)
    return nodes, percent, float(watch), float(ratio)


async def start(service: AdminService, spec: Any, who: str, reason: str) -> dict[str, Any]:
    reason = require_reason(reason)
    names, percent, watch, max_ratio = parse_spec(spec)
    if not service.leader_status()["leading"]:  # only the leader pushes (admin.ha)
        leader = service.leader_status()["leader"] or {}
        raise Conflict("this admin is not the leader: start the canary on "
                       f"{leader.get('address', 'the leader')} (GET /api/v1/leader)")
    current: Canary | None = service.canary
    if current is not None and current.state == "watching":
        raise Conflict("a canary is in progress: promote or abort it first")
    content = service.draft_content()
    errors = validate_content(content, service.members_for(content))
    if errors:
        service.store.record(who, "activate", "version/canary", reason,
                             result="invalid: " + "; ".join(errors)[:2000])
        raise Invalid("the configuration cannot be activated", errors)
    rows = sorted((r.to_json() for r in service.store.objects("node")), key=lambda r: r["name"])
    if names is not None:
        unknown = [n for n in names if n not in {r["name"] for r in rows}]
        if unknown:
            raise Invalid("unknown canary nodes", [f"canary.nodes: no node named {n!r}"
                                                   for n in unknown])
        chosen = [r for r in rows if r["name"] in names]
    else:
        assert percent is not None
        chosen = rows[:max(1, math.ceil(len(rows) * percent / 100))]
    if not chosen or len(chosen) == len(rows):
        raise Invalid("no node is left to compare with",
                      ["canary: name fewer nodes than the clusters have"])
    canary = Canary(chosen, [r for r in rows if r not in chosen], content, who, reason, watch,
                    max_ratio)
    service.publisher.held |= {r["name"] for r in chosen}
    service.publisher.sync_nodes()
    try:
        await _push_draft(service, canary)
        canary.baseline = {r["name"]: await _figures(r) for r in rows}
    except (httpx.HTTPError, OSError, ValueError) as exc:
        _release(service, canary)
        raise Conflict(f"the canary could not start: {exc}") from None
    service.canary = canary
    service.store.record(who, "canary", "version/canary", reason,
                         after={"nodes": [r["name"] for r in chosen], "watch_seconds": watch,
                                "max_error_ratio": max_ratio})
    canary.task = asyncio.get_running_loop().create_task(_watch(service, canary))
    log.info("canary started by %s on %s: %s", who, [r["name"] for r in chosen], reason)
    return canary.to_json()


async def _push_draft(service: AdminService, canary: Canary) -> None:
    members = service.members_for(canary.content)
    for node in canary.nodes:
        version = service.store.next_push_version(1)
        snapshot = build_snapshot(canary.content, node["cluster"], version, members,
                                  service.store.identity)
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            reply = await client.put(f"{node['control_url']}/v1/config",
                                     json=snapshot.to_json(),
                                     headers={**_auth(node), **_term(service)})
        if reply.status_code != 200:
            raise ValueError(f"node {node['name']} answered {reply.status_code}: "
                             f"{reply.text[:200]}")


def _term(service: AdminService) -> dict[str, str]:
    """The leader's term, as its pusher sends it (fencing: admin.ha)."""
    term = service.publisher.term
    return {TERM_HEADER: str(term)} if term is not None else {}


def _auth(node: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {node['token']}"} if node.get("token") else {}


async def _figures(node: dict[str, Any]) -> Figures:
    """Requests and 5xx answers a node counted so far (``slb_requests_total``)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        reply = await client.get(f"{node['control_url']}/metrics")
    reply.raise_for_status()
    figures = Figures()
    for family in text_string_to_metric_families(reply.text):
        if family.name != "slb_requests":
            continue
        for sample in family.samples:
            if sample.name == "slb_requests_total":
                figures.requests += int(sample.value)
                if sample.labels.get("code") == "5xx":
                    figures.errors += int(sample.value)
    return figures


async def _window(canary: Canary, nodes: list[dict[str, Any]]) -> Figures:
    total = Figures()
    for node in nodes:
        with contextlib.suppress(httpx.HTTPError, OSError):
            now = await _figures(node)
            base = canary.baseline.get(node["name"], Figures())
            total.requests += max(0, now.requests - base.requests)
            total.errors += max(0, now.errors - base.errors)
    return total


async def _watch(service: AdminService, canary: Canary) -> None:
    deadline = time.monotonic() + canary.watch_seconds
    while canary.state == "watching":
        await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        if canary.state != "watching":
            return
        canary.canary = await _window(canary, canary.nodes)
        canary.rest = await _window(canary, canary.others)
        if canary.canary.requests >= MIN_REQUESTS and \
                canary.canary.ratio > canary.rest.ratio + canary.max_error_ratio:
            rollback(service, canary, "automatic: the canary nodes' 5xx ratio "
                     f"{canary.canary.ratio:.4f} exceeds the others' "
                     f"{canary.rest.ratio:.4f} by more than {canary.max_error_ratio}")
            return
        if time.monotonic() >= deadline:
            promote(service, canary, "automatic: the watch ended within the error ratio")
            return


def promote(service: AdminService, canary: Canary, why: str) -> None:
    """Activate the canary's content for every node (as ``activate`` does)."""
    _stop(canary)
    canary.state = "promoted"
    canary.verdict = why
    digest = content_hash(canary.content)
    canary.version = service.store.add_version(canary.content, digest, canary.who,
                                               canary.reason)
    service.store.record(canary.who, "canary promote", f"version/{canary.version}",
                         canary.reason, after=_decision(canary))
    _release(service, canary)
    service.publisher.publish_now(None)
    service.on_content_change()
    log.info("canary promoted to version %d: %s", canary.version, why)


def rollback(service: AdminService, canary: Canary, why: str) -> None:
    """The canary nodes go back to the active version; the draft stays a draft."""
    _stop(canary)
    canary.state = "rolled_back"
    canary.verdict = why
    service.store.record(canary.who, "canary rollback", "version/canary", canary.reason,
                         after=_decision(canary), result="failed: " + why)
    _release(service, canary)
    # the active content again, under a version newer than the canary's (a node ignores a
    # snapshot older than the one it applied)
    service.publisher.publish_now(None)
    log.warning("canary rolled back: %s", why)


def decide(service: AdminService, action: str, who: str) -> dict[str, Any]:
    """``promote`` or ``abort`` the canary in progress, by hand."""
    canary: Canary | None = service.canary
    if canary is None or canary.state != "watching":
        raise NotFound("no canary is in progress")
    if action == "promote":
        promote(service, canary, f"promoted by {who}")
    else:
        rollback(service, canary, f"aborted by {who}")
    return canary.to_json()


def status(service: AdminService) -> dict[str, Any]:
    canary: Canary | None = service.canary
    return {"canary": canary.to_json() if canary is not None else None}


def _decision(canary: Canary) -> dict[str, Any]:
    return {"verdict": canary.verdict, "canary": canary.canary.to_json(),
            "others": canary.rest.to_json(), "max_error_ratio": canary.max_error_ratio,
            "nodes": [n["name"] for n in canary.nodes]}


def _stop(canary: Canary) -> None:
    task = canary.task
    if task is not None and task is not asyncio.current_task():
        task.cancel()


def _release(service: AdminService, canary: Canary) -> None:
    service.publisher.held -= {n["name"] for n in canary.nodes}
    service.publisher.sync_nodes()
