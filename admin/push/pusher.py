"""Pushing the desired snapshot to every proxy node of a cluster.

One ``_NodePusher`` per node, each with its own asyncio task and its own HTTP client, so a node
that is down, slow or refusing never delays the others. ``Pusher.publish`` only records the new
desired state (one slot per node: a burst of publishes coalesces into one push per node) and wakes
the tasks; it never blocks.

What a node is sent:

* a **full snapshot** (``PUT /v1/config``) after an activation or rollback (``publish`` without
  ``changed_groups``), when the node's state is unknown (first contact, restart, drift, a timeout
  that may or may not have applied), after a 409 on a delta, or whenever the delta below cannot
  be proved to produce exactly the desired snapshot;
* **one pool delta batch** (``PATCH /v1/groups``: every changed group's members, one version
  step, applied by the node all or nothing) when only members of the groups named in
  ``changed_groups`` changed since the snapshot the node is known to have applied, as planned
  by ``plan.plan`` (a pure function; its docstring says when a delta is safe). Otherwise: full
  snapshot. A health flip of 100 groups is one request per node, not 100. The batch and its
  body are computed once per (known state, desired state): every node in sync shares them.

Versions never go backwards within one store. Every snapshot names the admin store that made
it; a node refuses a snapshot that is not newer than the applied one, and one of another store
unless the PUT says ``?take_over=1``. A node that runs another store's snapshot, or a version
of this store above the desired one, is *held* (``admin.push.report``): reported as such in its
status (``needs_take_over``) and ``last_error``, left alone, never counted as in sync, until an
operator takes it over (``take_over``, after the admin raised its counter above the node's
version) or, for another store's node, ``automatic_take_over`` does. That a node cannot take the
desired state is derived from what it applied, never stored beside it.

Fencing: with ``term`` set (by the leader, ``admin.ha``) every request carries ``X-SLB-Term``;
a node answers 409 ``stale_term`` to a term below the highest it has seen, and that answer is
the node's ``last_error``: a newer leader pushes to it.

Reconcile: on start and every ``reconcile_interval`` (jittered) each node's ``GET /v1/config`` is
compared with the desired version and hash; a difference (a node restarted with an older
persisted snapshot, a change made behind the admin's back) is repaired with a full snapshot.

Errors (refused, timed out, HTTP errors) go to ``last_error`` and are retried forever with
exponential backoff and jitter (0.1 s up to ``backoff_max``), with the latest desired state.

Connections: one keep-alive connection per node (``wire.NodeClient``, kept
``KEEPALIVE_EXPIRY`` s idle): a flip must reach 50 nodes within 250 ms, and a connection per
request cost a handshake and a fresh accept on a busy node. A pooled connection can be stale
(the node restarted or closed it while idle): one seen closed is dropped before use; one that
breaks while the request goes out (closed, reset, no answer) is retried once at once on a fresh
connection, so a restarted node costs no lost push and no backoff. A retry is safe: every
change names its versions, so a node that applied the first attempt refuses the second (409),
and the pusher asks it what it has (``GET``) before sending anything else. A connect failure or
a timeout is not retried there (the node is down or stuck: the backoff applies); a timed-out
connection is closed, never reused.

Metrics: ``status()`` and ``status_json()`` per node; ``push_durations[node]``: pushes' times."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from admin.push.histogram import DurationHistogram
from admin.push.plan import Batch, plan
from admin.push.report import NodeReport
from admin.push.targets import NodeTarget, Published
from admin.push.wire import TERM_HEADER, NodeClient, Reply, dumps, http_error, json_or_empty
from admin.push.wire import Failed as _Failed
from slb.model import Config

__all__ = ["TERM_HEADER", "NodeTarget", "Pusher"]  # TERM_HEADER and NodeTarget: re-exported
log = logging.getLogger("admin.push")

BACKOFF_START = 0.1  # seconds: first retry delay, doubled per failure up to backoff_max
HISTORY = 1024  # publishes remembered to build deltas; a node further behind gets a full PUT


class _Conflict(Exception):
    """A 409 (or 404/400) on a delta: send a full snapshot instead."""


class _NodePusher(NodeReport):
    def __init__(self, owner: Pusher, target: NodeTarget) -> None:
        self.owner = owner
        self.target = target
        self.client = NodeClient(owner.timeout)  # one keep-alive connection to this node
        self.task: asyncio.Task[None] | None = None
        # what the node is known to have applied: the Config object (for deltas) and the
        # publish it came from; None when unknown or when its content is not one we published
        self.known: Published | None = None
        self.applied_version: int | None = None
        self.applied_hash: str | None = None
        self.applied_store: str | None = None  # the admin store the node's snapshot came from
        self.take_over = False  # the next full PUT replaces another store's snapshot
        self.last_contact: float | None = None
        self.last_error: str | None = None
        self.last_push_seconds: float | None = None
        self.pushes = 0
        self.full_pushes = 0
        self.delta_pushes = 0
        self.failures = 0
        self.checks = 0
        self.wake = asyncio.Event()  # a new desired state
        self.kick = asyncio.Event()  # new target settings: cut a backoff wait short
        self.check_due = True  # GET /v1/config before anything else

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"push:{self.target.name}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        await self.client.aclose()

    def reset_state(self) -> None:
        self.known = None
        self.applied_version = None
        self.applied_hash = None
        self.check_due = True

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.owner.reconcile_interval
        next_check = loop.time()
        backoff = BACKOFF_START
        while True:
            if loop.time() >= next_check:
                self.check_due = True
            if not self.check_due and not self._needs_push():
                conflict = self._conflict_error()
                if conflict is not None and conflict != self.last_error:
                    self.last_error = conflict
                    self.owner._notify()  # (for the node view: Publisher.nodes_json)
                try:
                    async with asyncio.timeout(max(0.0, next_check - loop.time())):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                self.wake.clear()
                continue
            self.wake.clear()
            try:
                if self.check_due:
                    next_check = loop.time() + interval * random.uniform(0.9, 1.1)
                    await self._check()
                    self.check_due = False
                if self._needs_push():
                    await self._push()
            except Exception as exc:
                failure = exc if isinstance(exc, _Failed) else None
                if failure is None:  # a bug or a bad URL: never kill the task
                    log.exception("node %s: push failed", self.target.name)
                    self.reset_state()
                    failure = _Failed(f"{type(exc).__name__}: {exc}", recheck=True)
                self.failures += 1
                self.last_error = str(failure)
                if failure.recheck:
                    self.check_due = True
                self.owner._notify()
                delay = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, self.owner.backoff_max)
                log.warning("node %s: %s (retry in %.2fs)", self.target.name, failure, delay)
                # a newer desired state does not cut this short: the retry sends the latest
                self.kick.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.kick.wait()
                continue
            backoff = BACKOFF_START
            self.owner._notify()

    def _needs_push(self) -> bool:
        """The node is behind the desired version (or unknown). A node at the desired version
        or past it is either in sync or cannot take it (``_conflict_error``): no push."""
        desired = self.owner._desired
        if desired is None:
            return False
        held = self.holder()
        if held is not None and held["kind"] == "ahead" and self.take_over \
                and self.owner.on_ahead is not None and self.applied_version is not None:
            # taken over, and now known to be ahead: publish above its version, once
            self.owner.on_ahead(self.applied_version)
            held = self.holder()
        if held is not None and held["kind"] == "other_store" and not self.take_over:
            if not self.owner.automatic_take_over:
                return False  # shown as needing a take-over; pushing would only be refused
            log.warning("node %s: taking it over from admin store %s (take_over: automatic)",
                        self.target.name, held["store"])
            self.take_over = True
        return self.applied_version is None or self.applied_version < desired.config.version \
            or (self.take_over and held is not None and held["kind"] == "other_store")

    # -- reconcile ---------------------------------------------------------------------------

    async def _check(self) -> None:
        desired = self.owner._desired
        response = await self._request("GET", "/v1/config?summary=1")  # version + hash
        if response.status_code != 200:
            raise _Failed(http_error("GET", "/v1/config", response), recheck=True)
        try:
            view = response.json()
            version, digest = int(view["version"]), str(view["hash"])
            store = view.get("store")
        except (ValueError, KeyError, TypeError) as exc:
            raise _Failed(f"GET /v1/config: unexpected answer: {exc}", recheck=True) from None
        self.checks += 1
        self._set_applied(version, digest, store if isinstance(store, str) else None)
        if desired is not None and digest == desired.config.content_hash():
            self.known = desired
        elif self.known is not None and digest != self.known.config.content_hash():
            self.known = None  # drift: the node has something we did not give it
        self.last_error = self._conflict_error()

    def _set_applied(self, version: int, digest: str | None, store: str | None) -> None:
        self.applied_version, self.applied_hash, self.applied_store = version, digest, store

    # -- pushing -----------------------------------------------------------------------------

    async def _push(self) -> None:
        desired = self.owner._desired
        assert desired is not None
        started = time.monotonic()
        batch = self._plan(desired)
        delivered = False
        if batch is not None:
            try:
                await self._send_batch(desired, *batch)
                delivered = True
            except _Conflict as exc:
                if self.applied_version == desired.config.version:
                    # the node has the desired version already: from our own request, applied
                    # on a connection that broke before the answer and then retried?
                    await self._check()
                    delivered = self.applied_hash == desired.config.content_hash()
                if not delivered:
                    log.info("node %s: %s; sending the full snapshot", self.target.name, exc)
        if delivered:
            self.delta_pushes += 1
        else:
            await self._send_full(desired)
            self.full_pushes += 1
        self.last_push_seconds = elapsed = time.monotonic() - started
        self.pushes += 1
        self.owner.push_durations[self.target.name].observe(elapsed)
        self.last_error = None

    async def _send_full(self, desired: Published) -> None:
        config = desired.config
        path = "/v1/config?take_over=1" if self.take_over else "/v1/config"
        response = await self._request("PUT", path, self.owner._body_of(config))
        if response.status_code == 409:
            body = json_or_empty(response)
            if body.get("error") == "other_store":
                applied = body.get("applied_version")
                self._set_applied(applied if isinstance(applied, int) else 0, None,
                                  str(body.get("applied_store")))
                self.known = None
                raise _Failed(self._conflict_error() or http_error("PUT", path, response))
            if body.get("error") == "stale":
                # the node already has this version or a newer one: learn what it has
                self.check_due = True
                applied = body.get("applied_version")
                if isinstance(applied, int) and applied > config.version:
                    raise _Failed(f"node has newer version {applied} than the desired version "
                                  f"{config.version} (PUT /v1/config: 409 stale)", recheck=True)
            raise _Failed(http_error("PUT", "/v1/config", response), recheck=True)
        if response.status_code != 200:
            raise _Failed(http_error("PUT", "/v1/config", response))
        self._accept(desired, response, "PUT /v1/config")
        self.take_over = False

    def _plan(self, desired: Published) -> tuple[Batch, bytes] | None:
        """The delta batch (and its body) from what the node is known to have applied;
        None: a full PUT."""
        known, applied = self.known, self.applied_version
        if known is None or applied is None or self.applied_hash != known.config.content_hash():
            return None
        return self.owner._batch_of(known, applied, desired)

    async def _send_batch(self, desired: Published, batch: Batch, body: bytes) -> None:
        path = "/v1/groups"
        response = await self._request("PATCH", path, body)
        if response.status_code in (409, 404, 400):
            # out of date (base_mismatch, stale), or a node without the batch endpoint (404)
            reply = json_or_empty(response)
            applied = reply.get("applied_version")
            if isinstance(applied, int):
                self.applied_version = applied
            self.known = None
            raise _Conflict(http_error("PATCH", path, response))
        if response.status_code != 200:
            raise _Failed(http_error("PATCH", path, response), recheck=True)
        self._accept(desired, response, f"PATCH {path} ({len(batch.edits)} groups)")

    def _accept(self, desired: Published, response: Reply, what: str) -> None:
        body = json_or_empty(response)
        version, digest = body.get("version"), body.get("hash")
        if not isinstance(version, int) or not isinstance(digest, str):
            self.reset_state()
            raise _Failed(f"{what}: unexpected answer {response.text[:200]!r}", recheck=True)
        self._set_applied(version, digest, desired.config.store)
        if digest == desired.config.content_hash():
            self.known = desired
        else:
            self.known = None
            raise _Failed(f"{what}: the node reports hash {digest[:12]}, expected "
                          f"{desired.config.content_hash()[:12]}", recheck=True)

    async def _request(self, method: str, path: str, body: bytes | None = None
                       ) -> Reply:
        response = await self.client.request(self.target, self.owner.term, method, path, body)
        self.last_contact = time.time()
        return response


class Pusher:
    """Keeps every node of a cluster on the desired snapshot; see the module docstring."""

    def __init__(self, *, timeout: float = 5.0, reconcile_interval: float = 10.0,
                 backoff_max: float = 10.0, automatic_take_over: bool = False) -> None:
        self.timeout = timeout
        # take over nodes that run another store's snapshot without asking (never "ahead")
        self.automatic_take_over = automatic_take_over
        # a node taken over is ahead of the desired version: publish above it (the publisher)
        self.on_ahead: Callable[[int], None] | None = None
        self.reconcile_interval = reconcile_interval
        self.backoff_max = max(backoff_max, BACKOFF_START)
        self.push_durations: dict[str, DurationHistogram] = {}
        self._nodes: dict[str, _NodePusher] = {}
        self._desired: Published | None = None
        # (seq, changed groups) of recent publishes: enough to build deltas, no old configs kept
        self._history: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=HISTORY)
        self._seq = 0
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()
        self._changed, self.generation = asyncio.Event(), 0  # (generation: +1 per _notify)
        self._body: tuple[Config, bytes] | None = None
        # batches planned for the desired state, by (known seq, applied version): nodes in
        # the same state share one plan and one serialised body
        self._batches: dict[tuple[int, int], tuple[Batch, bytes] | None] = {}
        # the leader's term, sent with every request: a node refuses an older one (admin.ha)
        self.term: int | None = None

    async def start(self) -> None:
        self._started = True
        for node in self._nodes.values():
            node.start()

    async def close(self) -> None:
        self._started = False
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.stop() for node in nodes), *self._closing)

    def set_nodes(self, nodes: list[NodeTarget]) -> None:
        wanted = {n.name: n for n in nodes}
        for name in list(self._nodes):
            if name not in wanted:
                self._retire(self._nodes.pop(name))
                self.push_durations.pop(name, None)
        for name, target in wanted.items():
            node = self._nodes.get(name)
            if node is not None and node.target == target:
                continue
            if node is not None and node.target.control_url == target.control_url:
                node.target = target  # a new token: retry now, keep what is known
                node.check_due = True
                node.kick.set()
                node.wake.set()
                continue
            if node is not None:
                self._retire(node)  # another address: another node
            node = _NodePusher(self, target)
            self._nodes[name] = node
            self.push_durations.setdefault(name, DurationHistogram())
            if self._started:
                node.start()
        self._notify()

    def _retire(self, node: _NodePusher) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # never started, so never connected: nothing to close
            return
        task = loop.create_task(node.stop())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def publish(self, config: Config, changed_groups: set[str] | None = None,
                configuration: int | None = None) -> None:
        """``configuration``: the configuration version (the one an operator activates) the
        snapshot was built from; reported as what a node runs once it applied it."""
        self._seq += 1
        changed = frozenset(changed_groups) if changed_groups is not None else None
        self._desired = Published(self._seq, config, changed, configuration)
        self._history.append((self._seq, changed))
        self._batches.clear()
        for node in self._nodes.values():
            node.wake.set()
        self._notify()

    def _changed_since(self, seq: int, until: int) -> frozenset[str] | None:
        """Groups changed by the publishes after ``seq`` up to ``until``; None: unknown."""
        if seq >= until:
            return frozenset()
        if not self._history or self._history[0][0] > seq + 1:
            return None  # forgotten: too far behind
        changed: set[str] = set()
        for item_seq, groups in self._history:
            if seq < item_seq <= until:
                if groups is None:
                    return None
                changed |= groups
        return frozenset(changed)

    def _batch_of(self, known: Published, applied: int, desired: Published
                  ) -> tuple[Batch, bytes] | None:
        """``plan`` from ``known`` to the desired state, and its body; once per node state."""
        key = (known.seq, applied)  # (the cache is emptied by every publish)
        if key not in self._batches:
            changed = self._changed_since(known.seq, desired.seq)
            batch = None if changed is None else plan(known.config, applied, desired.config,
                                                      changed)
            self._batches[key] = None if batch is None else (batch, dumps(batch.body()))
        return self._batches[key]

    def _body_of(self, config: Config) -> bytes:
        """The PUT body, serialised once for every node: straight to JSON, without the
        whole snapshot as dicts first (at 10,000 groups x 10 members that tree was some
        100 MB made for a moment, and the admin's RSS kept its peak)."""
        if self._body is None or self._body[0] is not config:
            self._body = (config, config.model_dump_json().encode())
        return self._body[1]

    def _drop_body(self) -> None:
        """Drop the PUT body once no node needs it (all have the desired version, or another
        snapshot is desired): 11 MB at 10,000 groups; a later full push serialises again."""
        desired = self._desired
        if self._body is not None and (
                desired is None or self._body[0] is not desired.config
                or all(node.reached(desired.config.version) for node in self._nodes.values())):
            self._body = None

    def _notify(self) -> None:
        self._drop_body()  # (called after every push, every publish and every change of nodes)
        self.generation += 1  # what status() shows may have changed (Publisher.nodes_json)
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def status(self) -> list[dict[str, Any]]:
        return [node.status() for node in self._nodes.values()]

    def status_json(self) -> list[bytes]:
        return [node.status_json() for node in self._nodes.values()]

    def take_over(self, name: str) -> dict[str, Any] | None:
        """The next full snapshot to node ``name`` replaces whatever it runs; what it ran
        (None: nothing known). KeyError for an unknown node."""
        node = self._nodes[name]
        node.take_over = True
        node.check_due = True
        node.kick.set()
        node.wake.set()
        return node.holder()

    def targets(self) -> list[NodeTarget]:
        return [node.target for node in self._nodes.values()]

    def applied_version(self, name: str) -> int | None:
        return self._nodes[name].applied_version

    def deliveries(self, version: int) -> list[dict[str, Any]]:
        return [node.delivery(version) for node in self._nodes.values()]

    async def wait_in_sync(self, version: int, timeout: float) -> bool:
        """True once every node applied ``version`` or later; False after ``timeout``."""
        waiting = list(self._nodes.values())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    # only the current nodes not there yet asked again (a flip's 50 pushes
                    # wake this: 50 x 50 checks), all of them once those are (nodes added)
                    waiting = [n for n in waiting if self._nodes.get(n.target.name) is n
                               and not n.reached(version)] or [
                        n for n in self._nodes.values() if not n.reached(version)]
                    if not waiting:
                        return True
                    await changed.wait()
        return False
