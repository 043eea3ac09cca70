"""From a change to a push: coalesce, build each cluster's snapshot, hand it to its pusher.

A change names the groups it touched (a member flag, a health verdict) or ``None`` (an
activation, a rollback, a node added: anything may have changed). A change goes out at once
(on the loop's next turn: changes made in the same turn go together) unless a publish went out
less than ``COALESCE`` seconds before; then it waits for the rest of that interval and goes out
with whatever else came meanwhile. So a burst of health changes becomes one publish per
cluster per ``COALESCE``, which the pusher turns into pool deltas for the groups named, and an
isolated change (an operator's pull-out before a deploy, one verdict) waits for nothing: a
flat 20 ms wait for company was a ninth of a 100-group flip's trip to 50 nodes
(``docs/scaling.md``). Outside an event loop (a test, a seed) a change is published at once.

Each publish takes fresh snapshot versions from the store's persistent counter (as many as
groups changed, so the pusher has a version per delta) and builds the snapshot from the active
content and the members' effective state: whole for an activation, else by rebuilding only the
changed groups in the cluster's last snapshot (``publish_now``). There is one ``Pusher`` per
cluster, kept in step with the store's nodes by ``sync_nodes``.

Only the leader publishes (``admin.ha``): between ``start(term)`` and ``close()`` the publisher
runs and every pusher carries the term; before, after, and on a follower, a change is only
stored (the leader publishes it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from admin.domain.certificates import material
from admin.domain.members import MemberView
from admin.domain.memory import release_freed
from admin.domain.snapshots import (
    Content,
    GroupReuse,
    build_snapshot,
    cluster_content,
    rebuild_groups,
)
from admin.domain.store import Store
from admin.push.pusher import NodeTarget, Pusher
from admin.push.wire import dumps
from slb.gcpause import freeze
from slb.model import Config, ConfigErrors

log = logging.getLogger("admin")

COALESCE = 0.02  # seconds: at most one publish per this much in a burst of changes


class Publisher:
    def __init__(self, store: Store,
                 members_for: Callable[[Content], dict[str, list[MemberView]]],
                 pusher_factory: Callable[[], Pusher] = Pusher) -> None:
        self.store = store
        self._members_for = members_for
        self._pusher_factory = pusher_factory
        self.pushers: dict[str, Pusher] = {}  # cluster -> its pusher
        self._pending: set[str] | None = None
        self._pending_full = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flushed_at = float("-inf")  # loop time of the last scheduled publish
        self._running = False
        self.term: int | None = None
        # nodes a canary activation drives itself (admin.domain.canary): no pusher for them
        self.held: set[str] = set()
        # cluster -> (active version, its last snapshot): what a publish of a few groups
        # rebuilds those groups in (one per cluster: bounded by the clusters)
        self._built: dict[str, tuple[int | None, Config]] = {}
        # cluster -> its last build: the next build (or activation's validation) reuses the
        # groups and the rest it made unchanged (``GroupReuse``)
        self.builds: dict[str, GroupReuse] = {}
        # (the content it was worked out from, cluster -> its groups' names): _served_groups
        self._served: tuple[Content, dict[str, set[str]]] | None = None
        self._nodes_json: tuple[tuple[Any, ...], bytes] | None = None  # (key, nodes_json())

    async def start(self, term: int | None = None) -> None:
        self._running, self.term = True, term
        self.sync_nodes()
        for pusher in self.pushers.values():
            await pusher.start()
        self.publish_now(None)

    async def close(self) -> None:
        """Stop pushing (the admin stops leading); ``start`` may run again later."""
        self._running = False
        self._built.clear()  # while another leads, anything may change: start builds anew
        self.builds.clear()
        self._served = None
        self._drop_pending()  # start() publishes everything: nothing waiting is owed
        pushers, self.pushers = self.pushers, {}
        for pusher in pushers.values():
            await pusher.close()

    def sync_nodes(self) -> None:
        """One pusher per cluster, pushing to exactly the cluster's nodes in the store."""
        nodes: dict[str, list[NodeTarget]] = {c.name: [] for c in self.store.objects("cluster")}
        for row in self.store.objects("node"):
            if row.name in self.held:
                continue
            nodes.setdefault(row.body["cluster"], []).append(
                NodeTarget(row.name, row.body["control_url"], row.body.get("token")))
        for cluster, targets in nodes.items():
            pusher = self.pushers.get(cluster)
            if pusher is None:
                pusher = self.pushers[cluster] = self._pusher_factory()
                pusher.on_ahead = self.publish_above
                if self._running:
                    asyncio.get_running_loop().create_task(pusher.start())
            pusher.term = self.term  # made before start(term) perhaps (a seed adds nodes)
            pusher.set_nodes(targets)

    def schedule(self, groups: set[str] | None) -> None:
        """Publish on the loop's next turn, or ``COALESCE`` s after the last scheduled
        publish if that is later; what comes meanwhile goes out with it."""
        if groups is None:
            self._pending_full = True
        else:
            self._pending = (self._pending or set()) | groups
        if not _loop_running():
            self._flush()
            return
        if self._flush_handle is None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, self._flushed_at + COALESCE - loop.time())
            self._flush_handle = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if _loop_running():
            self._flushed_at = asyncio.get_running_loop().time()
        groups = None if self._pending_full else self._pending
        self._pending, self._pending_full = None, False
        self.publish_now(groups)

    def _drop_pending(self) -> None:
        """Forget the changes waiting for their publish (one of everything covers them)."""
        self._pending, self._pending_full = None, False
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None

    def publish_now(self, groups: set[str] | None) -> None:
        """Build and hand over the snapshot of every cluster serving one of ``groups``
        (every cluster when None).

        A cluster's last snapshot is kept (one per cluster) with the active version it was
        built from; a publish of some groups under the same active version rebuilds only
        those groups' pools in it and reads only their members (``rebuild_groups``): a flip
        of 100 groups out of 1,000 costs 100 groups. Anything else builds it whole."""
        if groups is None:
            # everything stored so far goes out now: a change waiting would only rebuild
            # its groups again (and one waiting for everything, all of them)
            self._drop_pending()
        if not self._running:
            return  # not leading: the leader publishes what this admin stored
        active, content = self.active()
        if content is None:
            return
        touched = [] if groups is None else [g for g in content.get("group", [])
                                             if g["name"] in groups]
        some = None if groups is None else self._members_for({"group": touched})
        everyone: dict[str, list[MemberView]] | None = None
        served = self._served_groups(content)
        for cluster in content.get("cluster", []):
            name = cluster["name"]
            names = served[name]
            changed = None if groups is None else groups & names
            if changed is not None and not changed:
                continue
            version = self.store.next_push_version(len(changed) if changed else 1)
            try:
                snapshot = None
                last = self._built.get(name)
                if some is not None and last is not None and last[0] == active:
                    reuse = GroupReuse(self.builds.get(name))
                    snapshot = rebuild_groups(last[1], version, [
                        g for g in touched if g["name"] in names], some, reuse)
                    if snapshot is not None:
                        reuse.kept(snapshot)
                if snapshot is None:
                    if everyone is None:
                        everyone = self._members_for(content)
                    reuse = GroupReuse(self.builds.get(name))
                    snapshot = build_snapshot(content, name, version, everyone,
                                              self.store.identity, material(self.store), reuse)
            except ConfigErrors as exc:
                self._built.pop(name, None)
                self.builds.pop(name, None)
                log.error("cluster %s: snapshot %d is invalid, not pushed: %s", name, version,
                          "; ".join(exc.lines()))
                continue
            self._built[name] = (active, snapshot)
            self.builds[name] = reuse
            pusher = self.pushers.get(name)
            if pusher is not None:
                pusher.publish(snapshot, changed, active)
        if groups is None:
            release_freed()  # what a whole build made and dropped (``admin.domain.memory``)
            # A whole snapshot (an activation: rare) and the admin's state around it are
            # long-lived: out of the collector's sight, a full collection walks only what came
            # since. Without this one walked the whole heap (100-350 ms at 1,000 groups x 10
            # members) every few dozen flips, in the middle of one (slb.gcpause). A whole
            # publish leaves no cyclic garbage to hide: after 12 activations in
            # bench/admin_memory.py, gc.unfreeze() then gc.collect() found 0 objects.
            freeze()

    def publish_above(self, version: int) -> None:
        """Publish everything again with versions above ``version`` (a node taken over runs
        a version of this store above ours: within one store it refuses older ones)."""
        self.store.raise_push_version(version)
        self.publish_now(None)

    def clusters_serving(self, groups: set[str] | None) -> set[str]:
        """The clusters a publish of ``groups`` (None: every group) goes to."""
        content = self.active()[1]
        if content is None:
            return set()
        return {cluster for cluster, names in self._served_groups(content).items()
                if groups is None or groups & names}

    def active(self) -> tuple[int | None, Content | None]:
        """The active version and its content, from one read of the store's pointer (a
        publish read it twice: 0.4 ms each on SQLite, and the two could straddle an
        activation)."""
        version = self.store.active_version()
        return version, None if version is None else self.store.version(version)["content"]

    def _served_groups(self, content: Content) -> dict[str, set[str]]:
        """Cluster -> the names of the groups its routes use in ``content``, worked out once
        per content (a version's content never changes): a walk of every route and group
        (1.4 ms at 1,000 routes) per publish and again per confirmed change."""
        if self._served is None or self._served[0] is not content:
            self._served = (content, {
                c["name"]: {g["name"] for g in cluster_content(content, c["name"])[2]}
                for c in content.get("cluster", [])})
        return self._served[1]

    def nodes_json(self) -> bytes:
        """``{"items": nodes()}`` as JSON, made again only once a pusher's state changed
        (``Pusher.generation``): a flip's view of 50 nodes is polled far more often than it
        changes (a monitor, the fan-out bench every 50 ms: 1.6 ms of the loop per read)."""
        key = tuple((cluster, id(pusher), pusher.generation)
                    for cluster, pusher in sorted(self.pushers.items()))
        if self._nodes_json is None or self._nodes_json[0] != key:
            # each row as its node's pusher last made it (NodeReport.status_json)
            rows = [b'{"cluster":%s,%s' % (dumps(cluster), row[1:])
                    for cluster, pusher in sorted(self.pushers.items())
                    for row in pusher.status_json()]
            self._nodes_json = (key, b'{"items":[%s]}' % b",".join(rows))
        return self._nodes_json[1]

    def nodes(self) -> list[dict[str, Any]]:
        """Every node's push status, with its cluster."""
        return [{"cluster": cluster, **status}
                for cluster, pusher in sorted(self.pushers.items())
                for status in pusher.status()]


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
