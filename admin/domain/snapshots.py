"""The snapshots the admin pushes, and what activation checks of a whole configuration.

A version's *content* is every draft object by kind (``{"group": [...], "route": [...]}``).
``build_snapshot`` turns content plus the members' effective state into one cluster's
``slb.model.Config``, validated by the data plane's own schema, so the admin refuses at
activation exactly what a node would refuse. ``content_hash`` names a content (a version's
identity, and how "drafts pending" is decided); ``diff`` shows two contents side by side.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from typing import Any

from pydantic import ValidationError

from admin.domain.certificates import Material, server_tls
from admin.domain.members import MemberView
from admin.domain.objects import REFERENCES, references, route_groups
from admin.domain.rows import dumps
from slb.model import (
    ROUTE_TRAFFIC_FIELDS,
    Config,
    ConfigErrors,
    Group,
    parse_config,
    pydantic_problems,
)

Content = dict[str, list[dict[str, Any]]]


def cluster_content(content: Content, cluster: str
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The virtual servers of ``cluster``, their routes, and the groups those routes use."""
    servers = [v for v in content.get("virtual_server", []) if v["cluster"] == cluster]
    names = {v["name"] for v in servers}
    routes = [r for r in content.get("route", []) if r["virtual_server"] in names]
    used = {name for r in routes for name in route_groups(r)}
    groups = [g for g in content.get("group", []) if g["name"] in used]
    return servers, routes, groups


PROXY_GROUP_FIELDS = ("name", "algorithm", "hash_key", "timeouts", "keepalive", "retry",
                      "passive_health")


Built = dict[str, tuple[bytes, Group]]  # group name -> (digest of its form, the group built)
SETTINGS_PARTS = ("timeouts", "keepalive", "retry", "passive_health")  # a group's sub-models


class GroupReuse:
    """The data-plane groups of one build, reusing those of the cluster's last snapshot.

    A group is built (validated into ``slb.model.Group``) from its proxy form
    (``proxy_group``); one whose form has the digest it had in the last snapshot (``known``)
    is that snapshot's group, not a new one. At 10,000 groups x 10 members a snapshot is about
    100 MB of models: an activation that changed one group now builds one group, and the old
    snapshot, the one activation validates and the new one share the rest (they are frozen).
    Groups built anew with equal settings share the settings' models too (a group's own copy
    of four default sub-models was three quarters of an empty group's size).

    The rest of the snapshot (virtual servers, routes, TLS, node settings: 10,000 routes
    here) is reused the same way: when its form and the group names are those of the last
    snapshot, it is not validated again (``config``).

    ``built`` and ``rest`` are what this build used, for the next one (``GroupReuse(this)``)
    to reuse."""

    def __init__(self, last: GroupReuse | None = None) -> None:
        self.known: Built = last.built if last is not None else {}
        self._last_rest = last.rest if last is not None else None
        self.built: Built = {}
        self.rest: tuple[bytes, Config] | None = None  # (digest of its form, the snapshot)
        self._settings: dict[str, Group] = {}  # settings' JSON -> a group built with them

    def group(self, form: dict[str, Any], index: int) -> Group:
        """Group ``form`` (``groups[index]`` of the snapshot; ConfigErrors there)."""
        key = _form_digest(form)
        found = self.known.get(form["name"])
        if found is None or found[0] != key:
            settings = dumps({k: form[k] for k in SETTINGS_PARTS if k in form})
            twin = self._settings.get(settings)
            if twin is not None:  # equal input, so an equal model: share it
                form = {**form, **{k: getattr(twin, k) for k in SETTINGS_PARTS if k in form}}
            if found is not None:  # (a flip changes one member of ten: 9 need no new check)
                form = {**form, "members": _kept_members(found[1], form["members"])}
            try:
                built = Group.model_validate(form)
            except ValidationError as exc:
                raise ConfigErrors([(("groups", index, *where), problem)
                                    for where, problem in pydantic_problems(exc)]) from None
            self._settings.setdefault(settings, built)
            found = (key, built)
        self.built[form["name"]] = found
        return found[1]

    def config(self, document: dict[str, Any], groups: list[Group]) -> Config:
        """``document`` (a snapshot without its groups) with ``groups`` (built above)."""
        names = [g.name for g in groups]
        rest = {k: v for k, v in document.items() if k not in ("version", "store")}
        key = _digest({**rest, "groups": names})
        update = {"version": document["version"], "store": document["store"], "groups": groups}
        # (with TLS it is checked again: a certificate valid then may have expired since)
        tls = any("tls" in server for server in document["virtual_servers"])
        if self._last_rest is not None and self._last_rest[0] == key and not tls:
            config = self._last_rest[1].model_copy(update=update)
        else:
            # checked with each group by name alone (what the rest checks: routes name
            # groups), then the groups built take their places
            config = parse_config({**document, "groups": [{"name": n} for n in names]})
            config = config.model_copy(update=update)
        self.rest = (key, config)
        return config

    def kept(self, config: Config) -> None:
        """``config`` is the last snapshot with only the groups built here changed (a pool
        delta: ``rebuild_groups``): what the next build reuses."""
        self.built = {**self.known, **self.built}
        if self._last_rest is not None:
            self.rest = (self._last_rest[0], config)


def _kept_members(last: Group, forms: list[dict[str, Any]]) -> list[Any]:
    """``forms`` (members' proxy forms), each one equal to a member of ``last`` replaced by
    that member: valid already, frozen, and an instance pydantic takes as it is, unchecked
    (the members' checks were half of rebuilding 100 groups in a flip: 4.8 -> 2.5 ms).
    The group's own checks (duplicate addresses) still run on the whole list."""
    kept = {member.address: member for member in last.members}
    out: list[Any] = []
    for form in forms:
        member = kept.get(form["address"])
        # (a form is what ``proxy_group`` makes: address, weight and state, nothing else)
        same = member is not None and member.weight == form["weight"] \
            and member.state == form["state"]
        out.append(member if same else form)
    return out


def build_snapshot(content: Content, cluster: str, version: int,
                   members: dict[str, list[MemberView]], store: str | None = None,
                   certificates: Material | None = None, reuse: GroupReuse | None = None
                   ) -> Config:
    """One cluster's snapshot, naming the ``store`` that made it; raises ConfigErrors (with
    locations) if it is not valid. A virtual server bound to a certificate carries its chain
    and key inline, read through ``certificates`` (without it, no TLS: URL resolution).
    ``reuse``: the groups of the cluster's last snapshot (``GroupReuse``)."""
    servers, routes, groups = cluster_content(content, cluster)
    forms = [proxy_group(g, members.get(g["name"], [])) for g in groups]
    document = {
        "version": version,
        "store": store,
        **cluster_settings(content, cluster),
        "virtual_servers": [
            {"name": v["name"], "listen": v["listen"], "domains": v.get("domains", []),
             "default": v.get("default", False),
             "routes": [proxy_route(r) for r in routes if r["virtual_server"] == v["name"]],
             **with_tls(server_tls(content, v, certificates))}
            for v in servers],
    }
    reuse = reuse or GroupReuse()
    try:
        built = [reuse.group(form, i) for i, form in enumerate(forms)]
    except ConfigErrors:
        return parse_config({**document, "groups": forms})  # every error, located, at once
    return reuse.config(document, built)


def proxy_group(group: dict[str, Any], members: list[MemberView]) -> dict[str, Any]:
    """A group draft with its members' effective state, as the data plane's group."""
    return {**{k: group[k] for k in PROXY_GROUP_FIELDS if k in group},
            "members": [{"address": m.address, "weight": m.weight, "state": m.state}
                        for m in members]}


def rebuild_groups(config: Config, version: int, groups: list[dict[str, Any]],
                   members: dict[str, list[MemberView]], reuse: GroupReuse | None = None
                   ) -> Config | None:
    """``config`` (a cluster's last snapshot) as ``version``, with ``groups`` rebuilt from
    ``members`` and every other group reused as it was built: a member change costs the
    groups it touched, not the whole configuration (nothing else can differ while the
    active version is the same). None if a group is not in ``config`` (build it whole);
    ConfigErrors if a rebuilt group is not valid. ``reuse``: as ``build_snapshot``'s."""
    reuse = reuse or GroupReuse()
    replaced: dict[int, Group] = {}
    for group in groups:
        index = config.group_position(group["name"])
        if index is None:
            return None
        replaced[index] = reuse.group(proxy_group(group, members.get(group["name"], [])), index)
    return config.with_groups(replaced, version)  # (one copy for all the groups)


def with_tls(tls: dict[str, str] | None) -> dict[str, Any]:
    return {} if tls is None else {"tls": tls}


CLUSTER_NODE_FIELDS = ("access_log",)  # what a cluster sets on each of its nodes


def cluster_settings(content: Content, cluster: str) -> dict[str, Any]:
    """The node-wide settings ``cluster`` carries into its snapshot (absent: the defaults)."""
    for obj in content.get("cluster", []):
        if obj["name"] == cluster:
            return {k: obj[k] for k in CLUSTER_NODE_FIELDS if k in obj}
    return {}


def proxy_route(route: dict[str, Any]) -> dict[str, Any]:
    """A route draft as the data plane's route: its name and virtual server left out, the
    traffic keys (slb.model.ROUTE_TRAFFIC_FIELDS) carried when set."""
    out = {"match": route.get("match", "prefix"), "path": route["path"],
           "priority": route.get("priority", 0)}
    if route.get("group") is not None:
        out["group"] = route["group"]
    out.update({k: route[k] for k in ROUTE_TRAFFIC_FIELDS if route.get(k) is not None})
    return out


def check_references(content: Content) -> list[str]:
    """What the per-object validation cannot see: names that refer to missing objects."""
    names = {kind: {o["name"] for o in objects} for kind, objects in content.items()}
    errors = []
    for kind, refs in REFERENCES.items():
        for _, wanted in refs:  # (all of one target kind together, in REFERENCES' order)
            for obj in content.get(kind, []):
                for field_name, target, name in references(kind, obj):
                    if target == wanted and name not in names.get(target, set()):
                        errors.append(f"{kind}/{obj['name']}.{field_name}: no "
                                      f"{target.replace('_', ' ')} named {name!r}")
    return errors


def validate_content(content: Content, members: dict[str, list[MemberView]],
                     certificates: Material | None = None,
                     builds: dict[str, GroupReuse] | None = None) -> list[str]:
    """Every error of a whole configuration, as activation sees it (its TLS too, given
    ``certificates``). ``builds``: each cluster's last build, reused (``GroupReuse``: what
    was built before is valid); when the content is valid it then holds the builds made here,
    so the publish that follows reuses them instead of building everything a second time."""
    errors = check_references(content)
    if errors:
        return errors
    made = {}
    for cluster in content.get("cluster", []):
        reuse = GroupReuse((builds or {}).get(cluster["name"]))
        try:
            build_snapshot(content, cluster["name"], 1, members, certificates=certificates,
                           reuse=reuse)
        except ConfigErrors as exc:
            errors += [f"cluster/{cluster['name']}: {line}" for line in exc.lines()]
        made[cluster["name"]] = reuse
    if builds is not None and not errors:
        builds.update(made)
    return errors


def content_hash(content: dict[str, Any]) -> str:
    return stored_form(content)[1]


def stored_form(content: dict[str, Any]) -> tuple[str, str]:
    """``content`` as the store keeps it (``rows.dumps``) and its hash: one serialisation of
    a content that is megabytes at 10,000 groups, for both."""
    text = dumps(content)
    return text, hashlib.sha256(text.encode()).hexdigest()


def _digest(value: Any) -> bytes:
    return hashlib.blake2b(dumps(value).encode(), digest_size=16).digest()


def _form_digest(form: dict[str, Any]) -> bytes:
    """A group form's digest for ``GroupReuse``, from its ``repr``: two JSON-like values with
    the same repr are equal, so an equal digest still means an equal form; forms are made by
    ``proxy_group`` in one key order, so an unchanged group keeps its digest (another order
    would only cost a rebuild). Half the time of sorted JSON: 20 -> 11 us per 10-member
    group, 100 of them per flip."""
    return hashlib.blake2b(repr(form).encode(), digest_size=16).digest()


def diff(old: Content, new: Content
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
