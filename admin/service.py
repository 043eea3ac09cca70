"""The admin's operations, behind the REST API and the web UI.

Flows (DESIGN.md):

- **Operator change** (virtual servers, routes, groups, weights): edits go to the draft;
  ``activate`` validates the whole configuration with the data plane's own schema, stores it as
  the next version and pushes full snapshots. ``rollback(n)`` re-activates version n's content
  as a new version.
- **Member flags** (pull-in/out, up/down, server up/down) and **health** (Consul, the admin's own
  checks) change at once, without activation: the groups they touch are re-published, and the
  pusher sends pool deltas.
- Changes arriving together are coalesced for ``COALESCE`` seconds into one publish per group.

Clusters and nodes are infrastructure, not configuration: they take effect at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from admin import model
from admin.push import NodeTarget, Pusher
from admin.state import (
    Discovered,
    MemberView,
    build_snapshot,
    cluster_content,
    content_hash,
    diff,
    effective_members,
    member_ip,
    static_members,
    validate_content,
)
from admin.store import Conflict, NotFound, Store, StoreError
from slb.model import ConfigErrors

log = logging.getLogger("admin")

COALESCE = 0.02  # seconds: a burst of health changes becomes one push per group
VERSIONED = ("cluster", "virtual_server", "route", "group")
MEMBER_OPS: dict[str, tuple[str, bool]] = {
    "pull-in": ("pull", True), "pull-out": ("pull", False),
    "up": ("ops", True), "down": ("ops", False),
}


class Invalid(StoreError):
    """A request that breaks validation; ``errors`` lists every problem with its path."""

    status = 422

    def __init__(self, message: str, errors: list[str]) -> None:
        super().__init__(message)
        self.errors = errors


def validation_errors(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        out.append(".".join(str(p) for p in error["loc"]) + f": {message}")
    return out


class AdminService:
    def __init__(self, store: Store, pusher_factory: Callable[[], Pusher] | None = None) -> None:
        self.store = store
        self._pusher_factory = pusher_factory or Pusher
        self.pushers: dict[str, Pusher] = {}
        # health learned at run time: group -> address -> Discovered
        self.checked: dict[str, dict[str, Discovered]] = {}
        self.discovered: dict[str, list[Discovered]] = {
            group: [Discovered.from_json(m) for m in members]
            for group, members in store.discovered().items()}
        self.stale: dict[str, str] = {}  # group -> why its Consul data is not current
        self.last_contact: dict[str, float] = {}  # group -> last answer from its source
        self._pending: set[str] | None = None
        self._pending_full = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._running = False
        # called after an activation or rollback, so sources follow the active groups
        self.on_content_change: Callable[[], None] = lambda: None

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        self._sync_pushers()
        for pusher in self.pushers.values():
            await pusher.start()
        if self.active_content() is not None:
            self._publish_now(None)

    async def close(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for pusher in self.pushers.values():
            await pusher.close()

    def _sync_pushers(self) -> None:
        nodes: dict[str, list[NodeTarget]] = {c.name: [] for c in self.store.objects("cluster")}
        for row in self.store.objects("node"):
            nodes.setdefault(row.body["cluster"], []).append(
                NodeTarget(row.name, row.body["control_url"], row.body.get("token")))
        for cluster, targets in nodes.items():
            pusher = self.pushers.get(cluster)
            if pusher is None:
                pusher = self.pushers[cluster] = self._pusher_factory()
                if self._running:
                    asyncio.get_running_loop().create_task(pusher.start())
            pusher.set_nodes(targets)

    # -- draft objects -----------------------------------------------------------------------

    def create(self, kind: str, body: Any, who: str, reason: str) -> dict[str, Any]:
        obj = self._validate(kind, body)
        self._check_references(kind, obj.model_dump())
        name = obj.name  # type: ignore[attr-defined]
        row = self.store.create(kind, name, obj.model_dump(mode="json"), who, reason)
        self._after_infrastructure_change(kind)
        return row.to_json()

    def update(self, kind: str, name: str, body: Any, row_version: int | None, who: str,
               reason: str) -> dict[str, Any]:
        if row_version is None:
            raise Invalid("row_version is required to update", [
                "row_version: required (the version your edit was made from)"])
        if isinstance(body, dict) and body.get("name", name) != name:
            raise Invalid("renaming is not supported", ["name: must stay " + repr(name)])
        obj = self._validate(kind, {**body, "name": name} if isinstance(body, dict) else body)
        self._check_references(kind, obj.model_dump())
        row = self.store.update(kind, name, obj.model_dump(mode="json"), row_version, who,
                                reason)
        self._after_infrastructure_change(kind)
        return row.to_json()

    def delete(self, kind: str, name: str, row_version: int | None, who: str,
               reason: str) -> None:
        users = self._users_of(kind, name)
        if users:
            raise Conflict(f"{kind.replace('_', ' ')} {name!r} is still used by "
                           + ", ".join(users))
        self.store.delete(kind, name, row_version, who, reason)
        self._after_infrastructure_change(kind)

    def _validate(self, kind: str, body: Any) -> model._Strict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", ["body: expected an object"])
        body = {k: v for k, v in body.items()
                if k not in ("row_version", "updated_at", "updated_by")}
        try:
            return model.validate(kind, body)
        except ValidationError as exc:
            raise Invalid(f"invalid {kind.replace('_', ' ')}", validation_errors(exc)) from None

    def _check_references(self, kind: str, body: dict[str, Any]) -> None:
        errors = [f"{field}: no {target.replace('_', ' ')} named {body[field]!r}"
                  for field, target in model.REFERENCES.get(kind, ())
                  if self.store.find(target, body[field]) is None]
        if errors:
            raise Invalid(f"invalid {kind.replace('_', ' ')}", errors)

    def _users_of(self, kind: str, name: str) -> list[str]:
        users = []
        for other, refs in model.REFERENCES.items():
            for field, target in refs:
                if target == kind:
                    users += [f"{other}/{r.name}" for r in self.store.objects(other)
                              if r.body[field] == name]
        return users

    def _after_infrastructure_change(self, kind: str) -> None:
        if kind in ("cluster", "node"):
            self._sync_pushers()
            self.schedule_publish(None)

    # -- versions ----------------------------------------------------------------------------

    def draft_content(self) -> dict[str, list[dict[str, Any]]]:
        draft = self.store.draft()
        return {kind: draft.get(kind, []) for kind in VERSIONED}

    def active_content(self) -> dict[str, list[dict[str, Any]]] | None:
        version = self.store.active_version()
        return None if version is None else self.store.version(version)["content"]

    def activate(self, who: str, reason: str) -> dict[str, Any]:
        content = self.draft_content()
        errors = validate_content(content, self.members_for(content))
        if errors:
            self.store.record(who, "activate", "version/new", reason, result="invalid: "
                              + "; ".join(errors)[:2000])
            raise Invalid("the configuration cannot be activated", errors)
        version = self.store.add_version(content, content_hash(content), who, reason)
        log.info("version %d activated by %s: %s", version, who, reason)
        self._publish_now(None)
        self.on_content_change()
        return {"version": version, "hash": content_hash(content)}

    def rollback(self, number: int, who: str, reason: str) -> dict[str, Any]:
        old = self.store.version(number)["content"]
        errors = validate_content(old, self.members_for(old))
        if errors:
            raise Invalid(f"version {number} is no longer valid", errors)
        # Nodes are infrastructure, not versioned: they stay, with the clusters they are in.
        nodes = self.store.draft().get("node", [])
        kept = {c["name"] for c in old.get("cluster", [])}
        clusters = old.get("cluster", []) + [
            self.store.get("cluster", name).body
            for name in sorted({n["cluster"] for n in nodes} - kept)]
        restored = {**old, "cluster": clusters}
        version = self.store.rollback(old, {**restored, "node": nodes}, content_hash(old),
                                      number, who, reason)
        log.info("version %d re-activates version %d (%s)", version, number, who)
        self._sync_pushers()
        self._publish_now(None)
        self.on_content_change()
        return {"version": version, "hash": content_hash(old), "source_version": number}

    def versions(self) -> dict[str, Any]:
        return {"active": self.store.active_version(), "versions": self.store.versions()}

    def diff(self, a: int | str, b: int | str) -> dict[str, Any]:
        return {"from": a, "to": b, **diff(self._content_of(a), self._content_of(b))}

    def _content_of(self, ref: int | str) -> dict[str, list[dict[str, Any]]]:
        if ref == "draft":
            return self.draft_content()
        return self.store.version(int(ref))["content"]

    # -- members -----------------------------------------------------------------------------

    def members_for(self, content: dict[str, list[dict[str, Any]]]
                     ) -> dict[str, list[MemberView]]:
        flags = self.store.member_flags()
        by_group: dict[str, dict[str, Any]] = {}
        for (group, address), own in flags.items():
            by_group.setdefault(group, {})[address] = own
        servers = self.store.server_flags()
        return {g["name"]: effective_members(g, self.sources(g), by_group.get(g["name"], {}),
                                             servers)
                for g in content.get("group", [])}

    def sources(self, group: dict[str, Any]) -> list[Discovered]:
        if group.get("consul"):
            return self.discovered.get(group["name"], [])
        return static_members(group, self.checked.get(group["name"], {}))

    def member_op(self, group: str, addresses: list[str], op: str, who: str,
                  reason: str) -> dict[str, Any]:
        if op not in MEMBER_OPS:
            raise NotFound(f"no member operation {op!r}: expected one of {sorted(MEMBER_OPS)}")
        self._require_reason(reason)
        known = {m.address for m in self.group_members(group)}
        missing = [a for a in addresses if a not in known]
        if missing:
            raise NotFound(f"group {group!r} has no member " + ", ".join(missing))
        flag, value = MEMBER_OPS[op]
        done = self.store.set_member_flags([(group, a, flag, value) for a in addresses], who,
                                           reason, f"member {op}")
        self.schedule_publish({group})
        return {"changed": done}

    def server_op(self, ip: str, up: bool, who: str, reason: str) -> dict[str, Any]:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise Invalid(f"{ip!r} is not an IP address", ["ip: expected an IPv4 or IPv6 "
                                                            "address"]) from None
        self._require_reason(reason)
        self.store.set_server_flag(ip, up, who, reason)
        content = self.active_content() or self.draft_content()
        touched = {g["name"] for g in content.get("group", [])
                   if any(member_ip(m.address) == ip for m in self.sources(g))}
        self.schedule_publish(touched)
        return {"ip": ip, "up": up, "groups": sorted(touched)}

    def batch(self, operations: list[dict[str, Any]], who: str, reason: str) -> dict[str, Any]:
        """Several member/server operations; each is validated before any is applied."""
        self._require_reason(reason)
        plan: list[tuple[str, Any]] = []
        errors = []
        for i, op in enumerate(operations):
            if not isinstance(op, dict):
                errors.append(f"operations[{i}]: expected an object")
            elif "server" in op:
                if op.get("op") not in ("up", "down"):
                    errors.append(f"operations[{i}].op: expected up or down")
                plan.append(("server", op))
            elif op.get("op") not in MEMBER_OPS:
                errors.append(f"operations[{i}].op: expected one of {sorted(MEMBER_OPS)}")
            else:
                try:
                    known = {m.address for m in self.group_members(str(op.get("group")))}
                except NotFound as exc:
                    errors.append(f"operations[{i}].group: {exc}")
                    continue
                for address in op.get("addresses") or [op.get("address")]:
                    if address not in known:
                        errors.append(f"operations[{i}].address: {address!r} is not a member")
                plan.append(("member", op))
        if errors:
            raise Invalid("the batch was not applied", errors)
        results = []
        for kind, op in plan:
            if kind == "server":
                results.append(self.server_op(op["server"], op["op"] == "up", who, reason))
            else:
                results.append(self.member_op(op["group"], op.get("addresses")
                                              or [op["address"]], op["op"], who, reason))
        return {"results": results}

    @staticmethod
    def _require_reason(reason: str) -> None:
        if not reason or not reason.strip():
            raise Invalid("a reason is required", ["reason: must not be empty"])

    def group_members(self, name: str) -> list[MemberView]:
        content = self.active_content() or self.draft_content()
        group = next((g for g in content.get("group", []) if g["name"] == name), None)
        if group is None:
            row = self.store.find("group", name)
            if row is None:
                raise NotFound(f"no group named {name!r}")
            group = row.body
        return self.members_for({"group": [group]})[name]

    def group_view(self, name: str) -> dict[str, Any]:
        row = self.store.get("group", name)
        members = self.group_members(name)
        states = [m.state for m in members]
        return {
            **row.to_json(),
            "members": [m.to_json() for m in members],
            "health": ("none up" if "up" not in states else
                       "all up" if all(s == "up" for s in states) else "some down"),
            "stale": self.stale.get(name),
            "last_contact": self.last_contact.get(name),
        }

    # -- health from sources -----------------------------------------------------------------

    def on_discovered(self, group: str, members: list[Discovered]) -> None:
        """A source's answer: the whole member set of ``group`` (an answer, never an error)."""
        self.last_contact[group] = time.time()
        self.stale.pop(group, None)
        old = self.discovered.get(group)
        if old is not None and [m.to_json() for m in old] == [m.to_json() for m in members]:
            return
        self.discovered[group] = members
        self.store.save_discovered(group, [m.to_json() for m in members])
        self.schedule_publish({group})

    def on_source_error(self, group: str, error: str) -> None:
        """Consul unreachable or refusing: keep the last known members, show the group stale."""
        self.stale[group] = error

    def on_checked(self, group: str, address: str, health: str, detail: str) -> None:
        checked = self.checked.setdefault(group, {})
        old = checked.get(address)
        if old is not None and old.health == health:
            return
        checked[address] = Discovered(address, health=health, health_detail=detail,
                                      source="check")
        self.schedule_publish({group})

    # -- publishing --------------------------------------------------------------------------

    def schedule_publish(self, groups: set[str] | None) -> None:
        """Publish soon; changes within COALESCE seconds go out together."""
        if groups is None:
            self._pending_full = True
        else:
            self._pending = (self._pending or set()) | groups
        if not _loop_running():
            self._flush()
            return
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(COALESCE, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        groups = None if self._pending_full else self._pending
        self._pending, self._pending_full = None, False
        self._publish_now(groups)

    def _publish_now(self, groups: set[str] | None) -> None:
        content = self.active_content()
        if content is None:
            return
        members = self.members_for(content)
        for cluster in content.get("cluster", []):
            name = cluster["name"]
            _, _, cluster_groups = cluster_content(content, name)
            names = {g["name"] for g in cluster_groups}
            changed = None if groups is None else groups & names
            if changed is not None and not changed:
                continue
            version = self.store.next_push_version(len(changed) if changed else 1)
            try:
                snapshot = build_snapshot(content, name, version, members)
            except ConfigErrors as exc:
                log.error("cluster %s: snapshot %d is invalid, not pushed: %s", name, version,
                          "; ".join(exc.lines()))
                continue
            pusher = self.pushers.get(name)
            if pusher is not None:
                pusher.publish(snapshot, changed)

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for cluster, pusher in sorted(self.pushers.items()):
            for status in pusher.status():
                out.append({"cluster": cluster, **status})
        return out


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
