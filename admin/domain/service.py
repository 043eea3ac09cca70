"""The admin's operations: every one the REST API and the web UI offer, and their rules.

The edges (``admin.web``) parse a request, check who may do it and render the answer; what a
request means is decided here, once: which fields an object has and what it may refer to, that
every change says why, what a weight edit changes, whether drafts are pending, which group
serves a URL, how a group's health rolls up. A rule checked here holds for both edges.

Flows (DESIGN.md):

- **Operator change** (virtual servers, routes, groups, weights): edits go to the draft;
  ``activate`` validates the whole configuration with the data plane's own schema, stores it as
  the next version and pushes full snapshots. ``rollback(n)`` re-activates version n's content
  as a new version.
- **Member flags** (pull-in/out, up/down, server up/down) and **health** (Consul, the admin's own
  checks) change at once, without activation: the groups they touch are re-published, and the
  pusher sends pool deltas.
- Changes arriving together are coalesced (``publisher``) into one publish per group.
- Member sources (``admin.sources``: Consul, the admin's HTTP checks) report to this service
  as a ``MemberSink``: ``on_members``, ``on_source_error``, ``has_members``.

Clusters and nodes are infrastructure, not configuration: they take effect at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from admin.domain import certificates, objects
from admin.domain.delivery import Delivery, Ticket, confirm, ticket
from admin.domain.errors import Conflict, Invalid, NotFound, bounded_reason, require_reason
from admin.domain.health import HealthHistory
from admin.domain.members import (
    Discovered,
    MemberView,
    effective_members,
    rollup,
    static_members,
)
from admin.domain.operations import MemberOperations, bounded_list
from admin.domain.publisher import Publisher
from admin.domain.snapshots import Content, content_hash, diff, stored_form, validate_content
from admin.domain.store import Row, Store
from admin.domain.urls import RouteAnswer, resolve_everywhere
from admin.push.drain import wait_drained
from admin.push.pusher import Pusher

log = logging.getLogger("admin")

VERSIONED = ("cluster", "virtual_server", "route", "group", "certificate")
STATES = ("up", "drain", "down")
HEALTHS = ("all up", "some down", "none up", "no members")
FLAGS_BY_NAME = 500  # up to this many groups, their flag rows are read by name


def shown(row: Row) -> dict[str, Any]:
    """A stored object as every answer shows it: secrets are write-only, for every role; a
    node says only whether it has a token."""
    body = row.to_json()
    if row.kind == "node":
        body["token_set"] = body.pop("token", None) is not None
    return body


class AdminService(MemberOperations):
    def __init__(self, store: Store, pusher_factory: Callable[[], Pusher] | None = None) -> None:
        self.store = store
        self.publisher = Publisher(store, self.members_for, pusher_factory or Pusher)
        # health learned at run time: group -> address -> Discovered (the admin's checks)
        self.checked: dict[str, dict[str, Discovered]] = {}
        self.discovered: dict[str, list[Discovered]] = {  # Consul's member sets
            group: [Discovered.from_json(m) for m in members]
            for group, members in store.discovered().items()}
        self.health_history = HealthHistory(store)  # health changes: logged, audited, dated
        for group, members in self.discovered.items():
            self.health_history.seed(group, members)
        self.stale: dict[str, str] = {}  # group -> why its Consul data is not current
        self.last_contact: dict[str, float] = {}  # group -> last answer from its source
        # called after an activation or rollback, so sources follow the active groups
        self.on_content_change: Callable[[], None] = lambda: None
        # who leads (admin.ha.leader_view); the admin sets it to its election's view
        self.leader_status: Callable[[], dict[str, Any]] = lambda: {
            "leader": store.leader(), "leading": True, "this_admin": None,
            "election": "none"}
        self.canary: Any = None  # the canary activation in progress or last (domain.canary)
        # (active version, group name -> its group): ``_active_groups``
        self._group_index: tuple[int, dict[str, dict[str, Any]]] | None = None

    async def start(self, term: int | None = None) -> None:
        """Start publishing (this admin leads, under ``term``: ``admin.ha``)."""
        await self.publisher.start(term)

    async def close(self) -> None:
        task = getattr(self.canary, "task", None)
        if task is not None:
            task.cancel()  # a canary still watching is left undecided: its nodes are resynced
        await self.publisher.close()

    # -- draft objects -----------------------------------------------------------------------

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [shown(r) for r in self.store.objects(kind)]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return shown(self.store.get(kind, name))

    def nodes_of(self, cluster: str) -> list[dict[str, Any]]:
        self.store.get("cluster", cluster)  # NotFound for an unknown cluster
        return [shown(r) for r in self.store.objects("node") if r.body["cluster"] == cluster]

    def create(self, kind: str, body: Any, who: str, reason: str) -> dict[str, Any]:
        reason = bounded_reason(reason)
        obj = self._validate(kind, body)
        self._check_references(kind, obj.model_dump())
        name = obj.name  # type: ignore[attr-defined]
        row = self.store.create(kind, name, obj.model_dump(mode="json"), who, reason)
        self._after_infrastructure_change(kind)
        return shown(row)

    def update(self, kind: str, name: str, body: Any, row_version: int | None, who: str,
               reason: str) -> dict[str, Any]:
        reason = bounded_reason(reason)
        if row_version is None:
            raise Invalid("row_version is required to update", [
                "row_version: required (the version your edit was made from)"])
        if isinstance(body, dict) and body.get("name", name) != name:
            raise Invalid("renaming is not supported", ["name: must stay " + repr(name)])
        if kind == "node" and isinstance(body, dict) and "token" not in body:
            # write-only: an edit that leaves the token out keeps it ("token": null clears it)
            body = {**body, "token": self.store.get(kind, name).body.get("token")}
        obj = self._validate(kind, {**body, "name": name} if isinstance(body, dict) else body)
        self._check_references(kind, obj.model_dump())
        row = self.store.update(kind, name, obj.model_dump(mode="json"), row_version, who,
                                reason)
        self._after_infrastructure_change(kind)
        return shown(row)

    def delete(self, kind: str, name: str, row_version: int | None, who: str,
               reason: str) -> None:
        reason = bounded_reason(reason)
        users = self._users_of(kind, name)
        if users:
            raise Conflict(f"{kind.replace('_', ' ')} {name!r} is still used by "
                           + ", ".join(users))
        self.store.delete(kind, name, row_version, who, reason)
        self._after_infrastructure_change(kind)

    @staticmethod
    def _validate(kind: str, body: Any) -> objects.Strict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", ["body: expected an object"])
        return objects.validate(kind, {k: v for k, v in body.items()
                                       if k not in ("row_version", "updated_at", "updated_by")})

    def _check_references(self, kind: str, body: dict[str, Any]) -> None:
        errors = [f"{field}: no {target.replace('_', ' ')} named {name!r}"
                  for field, target, name in objects.references(kind, body)
                  if self.store.find(target, name) is None]
        if errors:
            raise Invalid(f"invalid {kind.replace('_', ' ')}", errors)

    def _users_of(self, kind: str, name: str) -> list[str]:
        users = []
        for other in objects.REFERENCES:
            users += [f"{other}/{r.name}" for r in self.store.objects(other)
                      if (kind, name) in {(t, n) for _, t, n in objects.references(other,
                                                                                  r.body)}]
        return users

    def _after_infrastructure_change(self, kind: str) -> None:
        if kind in ("cluster", "node"):
            self.publisher.sync_nodes()
            self.publisher.schedule(None)

    # -- versions ----------------------------------------------------------------------------

    def draft_content(self) -> dict[str, list[dict[str, Any]]]:
        draft = self.store.draft()
        return {kind: draft.get(kind, []) for kind in VERSIONED}

    def active_content(self) -> dict[str, list[dict[str, Any]]] | None:
        return self.publisher.active()[1]

    def served_content(self) -> tuple[Content, bool]:
        """The active content (what the nodes serve), or the draft if nothing is active; and
        whether it is the active one."""
        active = self.active_content()
        return (active, True) if active is not None else (self.draft_content(), False)

    def drafts_pending(self) -> bool:
        """Whether activating now would change anything: a draft differs from the active
        version, or there are clusters and nothing was ever activated."""
        active = self.store.active_version()
        if active is None:
            return bool(self.store.objects("cluster"))
        return self.store.version(active)["hash"] != content_hash(self.draft_content())

    def pending(self) -> dict[str, Any]:
        """Drafts pending: the flag and the changes from the active version to the draft."""
        active = self.store.active_version()
        changes = self.diff(active, "draft")["changes"] if active is not None else []
        return {"active": active, "pending": self.drafts_pending(), "changes": changes}

    def activate(self, who: str, reason: str) -> dict[str, Any]:
        reason = require_reason(reason)
        content = self.draft_content()
        errors = validate_content(content, self.members_for(content),
                                  certificates.material(self.store), self.publisher.builds)
        if errors:
            self.store.record(who, "activate", "version/new", reason, result="invalid: "
                              + "; ".join(errors)[:2000])
            raise Invalid("the configuration cannot be activated", errors)
        text, digest = stored_form(content)
        version = self.store.add_version(content, digest, who, reason, text=text)
        self._group_index = None  # it holds the old version's groups: let them go now
        log.info("version %d activated by %s: %s", version, who, reason)
        self.publisher.publish_now(None)
        self.on_content_change()
        return {"version": version, "hash": digest}

    def rollback(self, number: int, who: str, reason: str) -> dict[str, Any]:
        reason = require_reason(reason)
        old = self.store.version(number)["content"]
        errors = validate_content(old, self.members_for(old), certificates.material(self.store),
                                  self.publisher.builds)
        if errors:
            raise Invalid(f"version {number} is no longer valid", errors)
        # Nodes are infrastructure, not versioned: they stay, with the clusters they are in.
        nodes = self.store.draft().get("node", [])
        kept = {c["name"] for c in old.get("cluster", [])}
        clusters = old.get("cluster", []) + [
            self.store.get("cluster", name).body
            for name in sorted({n["cluster"] for n in nodes} - kept)]
        restored = {**old, "cluster": clusters}
        # Certificate material is not versioned either: every version may still need its own.
        keys = self.store.draft().get(certificates.MATERIAL_KIND, [])
        digest = content_hash(old)
        version = self.store.rollback(old, {**restored, "node": nodes,
                                            certificates.MATERIAL_KIND: keys},
                                      digest, number, who, reason)
        self._group_index = None
        log.info("version %d re-activates version %d (%s)", version, number, who)
        self.publisher.sync_nodes()
        self.publisher.publish_now(None)
        self.on_content_change()
        return {"version": version, "hash": digest, "source_version": number}

    def versions(self) -> dict[str, Any]:
        return {"active": self.store.active_version(), "versions": self.store.versions()}

    def version(self, number: int) -> dict[str, Any]:
        """One stored version (NotFound for an unknown number)."""
        return self.store.version(number)

    def diff(self, a: int | str, b: int | str) -> dict[str, Any]:
        """Changes from ``a`` to ``b``: version numbers or ``"draft"``."""
        for ref in (a, b):
            if ref != "draft" and not str(ref).isdigit():
                raise Invalid(f"{ref!r} is not a version number or 'draft'")
        return {"from": a, "to": b, **diff(self._content_of(a), self._content_of(b))}

    def _content_of(self, ref: int | str) -> dict[str, list[dict[str, Any]]]:
        if ref == "draft":
            return self.draft_content()
        return self.store.version(int(ref))["content"]

    # -- confirmed delivery (admin.domain.delivery) -------------------------------------------

    def ticket(self) -> Ticket:
        """Taken before a change, so ``confirm`` can tell which node applied it."""
        return ticket(self.store)

    async def confirm(self, taken: Ticket, groups: set[str] | None, wait: float) -> Delivery:
        """What every node serving ``groups`` (None: all) did, after up to ``wait`` s."""
        return await confirm(self.publisher, taken, groups, wait)

    async def wait_drained(self, members: dict[str, set[str]], timeout: float
                           ) -> tuple[bool, list[dict[str, Any]]]:
        """Until no node serving these groups has a request in flight or an idle connection
        to ``members`` (group -> addresses), or ``timeout``: ``admin.push.drain``."""
        pushers = self.publisher.pushers
        nodes = [target for cluster in sorted(self.publisher.clusters_serving(set(members)))
                 if cluster in pushers for target in pushers[cluster].targets()]
        return await wait_drained(nodes, members, timeout)

    # -- members -----------------------------------------------------------------------------

    def members_for(self, content: dict[str, list[dict[str, Any]]]
                     ) -> dict[str, list[MemberView]]:
        """Each group's members as served: its source's members with their flags applied."""
        groups = content.get("group", [])
        # a few groups (a group page, a member operation, a batch, a health flip): only their
        # flag rows are read, not the whole table (at 10,000 groups every read of one group
        # paid for all of them); many: the whole table in one scan
        flags = self.store.member_flags(
            groups[0]["name"] if len(groups) == 1
            else {g["name"] for g in groups} if len(groups) <= FLAGS_BY_NAME else None)
        by_group: dict[str, dict[str, Any]] = {}
        for (group, address), own in flags.items():
            by_group.setdefault(group, {})[address] = own
        servers = self.store.server_flags()
        views = {g["name"]: effective_members(g, self.sources(g), by_group.get(g["name"], {}),
                                              servers)
                 for g in groups}
        for group, members in views.items():
            if self.health_history.knows(group):  # (a group never checked has no dates)
                for view in members:  # the health flag's date: since its last change
                    view.health_at = self.health_history.since(group, view.address)
        return views

    def sources(self, group: dict[str, Any]) -> list[Discovered]:
        if group.get("consul"):
            return self.discovered.get(group["name"], [])
        return static_members(group, self.checked.get(group["name"], {}))

    def group_members(self, name: str) -> list[MemberView]:
        """Group ``name``'s members: as the active version has it, else as its draft."""
        return self.groups_members([name])[name]

    def groups_members(self, names: Iterable[str]) -> dict[str, list[MemberView]]:
        """Each named group's members (active, else draft; flags in one query) or NotFound."""
        if not (names := dict.fromkeys(names)):
            return {}  # (no store read at all: 0.4 ms a batch that names no other group)
        groups = []
        active = self._active_groups()  # once: a read per name was 16.6 of 58 ms per flip
        for name in names:
            group = active.get(name)
            if group is None:
                row = self.store.find("group", name)
                if row is None:
                    raise NotFound(f"no group named {name!r}")
                group = row.body
            groups.append(group)
        return self.members_for({"group": groups})

    def _active_groups(self) -> dict[str, dict[str, Any]]:
        """The active version's groups by name (empty when none is active), indexed once per
        active version (a scan of 10,000 groups per group read was most of its cost)."""
        version, content = self.publisher.active()
        if content is None:
            return {}
        if self._group_index is None or self._group_index[0] != version:
            self._group_index = (version, {g["name"]: g for g in content.get("group", [])})
        return self._group_index[1]

    def group_view(self, name: str) -> dict[str, Any]:
        row = self.store.get("group", name)
        members = self.group_members(name)
        return {
            **row.to_json(),
            "members": [m.to_json() for m in members],
            "health": rollup([m.state for m in members]),
            "stale": self.stale.get(name),
            "last_contact": self.last_contact.get(name),
        }

    def set_weight(self, group: str, addresses: list[str], weight: Any, row_version: Any,
                   who: str, reason: str) -> dict[str, Any]:
        """Set the weight of static members in the draft group, from the row version the edit
        was made from. It takes effect when a new version is activated."""
        reason = require_reason(reason)
        bounded_list("addresses", addresses)
        try:
            value = int(str(weight).strip())
        except ValueError:
            raise Invalid("invalid weight", ["weight: expected a whole number 0-10000"]) \
                from None
        if not str(row_version).isdigit():
            raise Invalid("the edit has no row_version", ["row_version: reload the page"])
        row = self.store.get("group", group)
        self.check_weight_editable(row.body)
        known = {m["address"] for m in row.body.get("members", [])}
        missing = [a for a in addresses if a not in known]
        if not addresses or missing:
            raise Invalid(f"group {group!r} has no member " + ", ".join(missing or ["given"]),
                          [f"{a}: not a member of {group}" for a in missing]
                          or ["addresses: name at least one member"])
        members = [{**m, "weight": value} if m["address"] in addresses else m
                   for m in row.body.get("members", [])]
        return self.update("group", group, {**row.body, "members": members}, int(row_version),
                           who, reason)

    @staticmethod
    def check_weight_editable(group: dict[str, Any]) -> None:
        if group.get("consul"):
            raise Invalid("weights of this group come from Consul",
                          ["weight: set the weight in Consul (service Weights)"])

    # -- views: what the pages and the API show ----------------------------------------------

    def group_rows(self) -> list[dict[str, Any]]:
        """Every group (served, plus draft-only ones) with its members and roll-up."""
        content, _ = self.served_content()
        served = {g["name"] for g in content.get("group", [])}
        groups = list(content.get("group", []))
        groups += [r.body for r in self.store.objects("group") if r.name not in served]
        members = self.members_for({"group": groups})
        used: dict[str, list[dict[str, Any]]] = {}
        for route in content.get("route", []):
            for name in objects.route_groups(route):
                used.setdefault(name, []).append(route)
        out = []
        for group in sorted(groups, key=lambda g: g["name"]):
            views = members.get(group["name"], [])
            states = [m.state for m in views]
            out.append({
                "name": group["name"], "body": group, "members": views,
                "active": group["name"] in served,
                "counts": {s: states.count(s) for s in STATES},
                "health": rollup(states),
                "stale": self.stale.get(group["name"]),
                "routes": used.get(group["name"], []),
            })
        return out

    def health(self) -> dict[str, Any]:
        """The roll-up: each group's health and member counts, and the totals."""
        rows = self.group_rows()
        return {
            "groups": [{"name": g["name"], "health": g["health"], "counts": g["counts"],
                        "stale": g["stale"], "active": g["active"]} for g in rows],
            "group_counts": {h: sum(1 for g in rows if g["health"] == h) for h in HEALTHS},
            "member_counts": {s: sum(g["counts"][s] for g in rows) for s in STATES},
        }

    def node_rows(self) -> list[dict[str, Any]]:
        """Every node in the store with its push status (versions, lag, last error)."""
        status = {(s["cluster"], s["name"]): s for s in self.publisher.nodes()}
        return [{"cluster": row.body["cluster"], "name": row.name,
                 "control_url": row.body["control_url"],
                 **status.get((row.body["cluster"], row.name), {})}
                for row in self.store.objects("node")]

    def take_over(self, cluster: str, node: str, who: str, reason: str) -> dict[str, Any]:
        """Make ``node`` apply this admin's full snapshot, whatever it runs now: another
        store's snapshot, or a version of this store above ours (``admin.push.report``). The
        version counter is raised above the node's first, so versions still only grow."""
        reason = require_reason(reason)
        row = self.store.get("node", node)
        pusher = self.publisher.pushers.get(cluster)
        if row.body["cluster"] != cluster or pusher is None:
            raise NotFound(f"cluster {cluster!r} has no node named {node!r}")
        self.store.raise_push_version(pusher.applied_version(node) or 0)
        was = pusher.take_over(node)
        self.store.record(who, "take over", f"node/{node}", reason, before=was,
                          after={"store": self.store.identity})
        log.warning("node %s of %s taken over by %s (it ran %s): %s", node, cluster, who, was,
                    reason)
        self.publisher.publish_now(None)
        return {"cluster": cluster, "node": node, "was": was}

    def resolve(self, url: str, headers: list[str] | None = None,
                cookies: list[str] | None = None, client_ip: str = ""
                ) -> tuple[list[RouteAnswer], list[str]]:
        """Which group serves ``url`` (with these request facts, for routes with conditions),
        per listener of every cluster; and notes (a cluster that does not compile, no
        listener on the URL's port)."""
        return resolve_everywhere(self.served_content()[0], url, headers, cookies, client_ip)

    def audit(self, target: str | None = None, who: str | None = None,
              since: float | None = None, until: float | None = None, limit: int = 200
              ) -> list[dict[str, Any]]:
        return self.store.audit(target, who, since, until, min(limit, 1000))

    # -- member sources (admin.sources.MemberSink) --------------------------------------------

    def on_members(self, source: str, group: str, members: list[Discovered]) -> None:
        """A source's answer for ``group`` (an answer, never an error).

        Consul reports the whole member set (kept across restarts); the admin's checker reports
        its verdicts on static members, merged into the group's static list."""
        self.health_history.observe(source, group, members)
        if source == "check":
            verdicts = {m.address: m for m in members}
            if self.checked.get(group) != verdicts:
                self.checked[group] = verdicts
                self.publisher.schedule({group})
            return
        self.last_contact[group] = time.time()
        self.stale.pop(group, None)
        old = self.discovered.get(group)
        if old is not None and [m.to_json() for m in old] == [m.to_json() for m in members]:
            return
        self.discovered[group] = members
        self.store.save_discovered(group, [m.to_json() for m in members])
        self.publisher.schedule({group})

    def on_source_error(self, source: str, group: str, error: str) -> None:
        """Consul unreachable or refusing: keep the last known members, show the group stale."""
        self.stale[group] = error

    def has_members(self, group: str) -> bool:
        """Last known members of ``group`` (kept across admin restarts)."""
        return bool(self.discovered.get(group))
