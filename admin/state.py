"""Effective member state and the snapshots the admin pushes.

A member takes traffic only when every flag allows it (Ctrip's ``up = member && server && pull
&& healthy``, plus Consul maintenance):

    ops          operator up/down of this member in this group      (default up)
    pull         release system pull-in/out                         (default in, or out for
                                                                     groups that make new
                                                                     members wait)
    server       operator up/down of the IP across all groups       (default up)
    health       Consul checks, or the admin's own HTTP check       (default passing)
    maintenance  Consul maintenance mode                            (default off)

Health never overrides an operator: a member pulled out stays out however its checks go, and a
pull-in never sends traffic to a member failing its checks. A member held by an operator flag is
pushed as ``drain`` (requests in flight finish), one held by health as ``down``.

``build_snapshot`` turns an activated version's content plus the members' state into one
cluster's ``slb.model.Config``, validated by the data plane's own schema.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from admin.store import Flag
from slb.model import Config, ConfigErrors, parse_config

OPERATOR_FLAGS = ("ops", "pull", "server")
DRAINING = (*OPERATOR_FLAGS, "weight")  # held out this way, requests in flight finish
FLAG_ORDER = ("ops", "pull", "server", "health", "maintenance")
SYSTEM = "system"


@dataclass(slots=True)
class Discovered:
    """A member as a source reports it (Consul, a static list, the admin's checker)."""

    address: str
    weight: int = 1
    health: str = "passing"  # passing | warning | critical
    health_detail: str = ""
    maintenance: bool = False
    maintenance_reason: str = ""
    source: str = "static"

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "weight": self.weight, "health": self.health,
                "health_detail": self.health_detail, "maintenance": self.maintenance,
                "maintenance_reason": self.maintenance_reason, "source": self.source}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Discovered:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})  # type: ignore[attr-defined]


@dataclass(slots=True)
class MemberView:
    address: str
    weight: int
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)
    held_by: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if not self.held_by:
            return "up"
        return "drain" if all(f in DRAINING for f in self.held_by) else "down"

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "weight": self.weight, "state": self.state,
                "held_by": self.held_by, "flags": self.flags}


def member_ip(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def effective_members(group: dict[str, Any], discovered: list[Discovered],
                      flags: dict[str, dict[str, Flag]], server_flags: dict[str, Flag]
                      ) -> list[MemberView]:
    """Every member of ``group`` with each flag (value, who, when, why) and its state.

    ``flags`` maps an address to its member flags; ``server_flags`` maps an IP.
    """
    healthy = ("passing", "warning") if group.get("health_policy") == "passing_or_warning" \
        else ("passing",)
    waits = group.get("new_members") == "wait_for_pull_in"
    views = []
    for member in discovered:
        own = flags.get(member.address, {})
        ops = own.get("ops")
        pull = own.get("pull")
        server = server_flags.get(member_ip(member.address))
        view = MemberView(member.address, member.weight)
        view.flags["ops"] = ops.to_json() if ops else _default(True)
        view.flags["pull"] = pull.to_json() if pull else _default(
            not waits, "" if not waits else "new members wait to be pulled in")
        view.flags["server"] = server.to_json() if server else _default(True)
        view.flags["health"] = {"value": member.health in healthy, "status": member.health,
                                "who": member.source, "at": None, "why": member.health_detail}
        view.flags["maintenance"] = {"value": member.maintenance, "who": member.source,
                                     "at": None, "why": member.maintenance_reason}
        for name in FLAG_ORDER:
            allowed = view.flags[name]["value"]
            if name == "maintenance":
                allowed = not allowed
            if not allowed:
                view.held_by.append(name)
        if member.weight == 0 and not view.held_by:
            view.held_by.append("weight")  # Consul Weights 0: drain
        views.append(view)
    return views


def _default(value: bool, why: str = "") -> dict[str, Any]:
    return {"value": value, "who": SYSTEM, "at": None, "why": why}


def static_members(group: dict[str, Any], health: dict[str, Discovered]) -> list[Discovered]:
    """A static group's members, with the admin's own check results where it has them."""
    out = []
    for member in group.get("members", []):
        known = health.get(member["address"])
        out.append(Discovered(
            member["address"], member.get("weight", 1),
            known.health if known else "passing",
            known.health_detail if known else "", source="check" if known else "static"))
    return out


def cluster_content(content: dict[str, list[dict[str, Any]]], cluster: str
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The virtual servers of ``cluster``, their routes, and the groups those routes use."""
    servers = [v for v in content.get("virtual_server", []) if v["cluster"] == cluster]
    names = {v["name"] for v in servers}
    routes = [r for r in content.get("route", []) if r["virtual_server"] in names]
    used = {r["group"] for r in routes}
    groups = [g for g in content.get("group", []) if g["name"] in used]
    return servers, routes, groups


PROXY_GROUP_FIELDS = ("name", "algorithm", "timeouts", "keepalive", "retry", "passive_health")


def build_snapshot(content: dict[str, list[dict[str, Any]]], cluster: str, version: int,
                   members: dict[str, list[MemberView]]) -> Config:
    """One cluster's snapshot; raises ConfigErrors (with locations) if it is not valid."""
    servers, routes, groups = cluster_content(content, cluster)
    document = {
        "version": version,
        "virtual_servers": [
            {"name": v["name"], "listen": v["listen"], "domains": v.get("domains", []),
             "default": v.get("default", False),
             "routes": [{"match": r.get("match", "prefix"), "path": r["path"],
                         "priority": r.get("priority", 0), "group": r["group"]}
                        for r in routes if r["virtual_server"] == v["name"]]}
            for v in servers],
        "groups": [
            {**{k: g[k] for k in PROXY_GROUP_FIELDS if k in g},
             "members": [{"address": m.address, "weight": m.weight, "state": m.state}
                         for m in members.get(g["name"], [])]}
            for g in groups],
    }
    return parse_config(document)


def check_references(content: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What the per-object validation cannot see: names that refer to missing objects."""
    names = {kind: {o["name"] for o in objects} for kind, objects in content.items()}
    errors = []
    for kind, field_name, target in (("node", "cluster", "cluster"),
                                     ("virtual_server", "cluster", "cluster"),
                                     ("route", "virtual_server", "virtual_server"),
                                     ("route", "group", "group")):
        for obj in content.get(kind, []):
            if obj[field_name] not in names.get(target, set()):
                errors.append(f"{kind}/{obj['name']}.{field_name}: no {target.replace('_', ' ')}"
                              f" named {obj[field_name]!r}")
    return errors


def validate_content(content: dict[str, list[dict[str, Any]]],
                     members: dict[str, list[MemberView]]) -> list[str]:
    """Every error of a whole configuration, as activation sees it."""
    errors = check_references(content)
    if errors:
        return errors
    for cluster in content.get("cluster", []):
        try:
            build_snapshot(content, cluster["name"], 1, members)
        except ConfigErrors as exc:
            errors += [f"cluster/{cluster['name']}: {line}" for line in exc.lines()]
    return errors


def content_hash(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def diff(old: dict[str, list[dict[str, Any]]], new: dict[str, list[dict[str, Any]]]
         ) -> dict[str, Any]:
    """Objects added, removed and changed between two contents, with a unified text diff."""
    changes: list[dict[str, Any]] = []
    for kind in sorted(set(old) | set(new)):
        before = {o["name"]: o for o in old.get(kind, [])}
        after = {o["name"]: o for o in new.get(kind, [])}
        for name in sorted(set(before) | set(after)):
            a, b = before.get(name), after.get(name)
            if a == b:
                continue
            change = "added" if a is None else "removed" if b is None else "changed"
            text = difflib.unified_diff(_lines(a), _lines(b), f"{kind}/{name}",
                                        f"{kind}/{name}", lineterm="")
            changes.append({"kind": kind, "name": name, "change": change,
                            "diff": "\n".join(text)})
    return {"changes": changes}


def _lines(obj: dict[str, Any] | None) -> list[str]:
    return [] if obj is None else json.dumps(obj, indent=2, sort_keys=True).splitlines()
