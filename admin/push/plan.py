"""The push planner: pool deltas that take a node from the snapshot it has to the desired one.

``plan(known, applied_version, desired, changed)`` is a pure function: no I/O, no state. It
returns the ``PATCH /v1/groups/{name}`` requests to send, or None when a full snapshot must go
instead. The caller (``pusher``) passes the snapshot the node is known to have applied, the
version the node reported, and the groups the publishes since then said they changed.

The hint is not trusted blindly. Groups are compared by digest (``slb.model.Group.digest``,
cached on each immutable group, so an unchanged group of 10,000 costs a string compare, not a
deep compare): a group outside the hint that differs means a full snapshot. Everything outside
the groups must be equal, every group setting of a changed group must be equal, and the member
order the node will end with (surviving members in their old order, new members appended) must
be the desired order. Any doubt: None, a full snapshot.

Versions of deltas. Each PATCH moves the node to a newer version, and after the last one the
node's version must be the desired one. With ``k`` groups to patch and a node at version ``A``,
the patches carry versions ``D-k+1 .. D`` (``D`` the desired version), each based on the
previous one; this needs ``k <= D - A``. When the versions are not there (``k`` groups changed
in one publish that advanced the version by one), one full snapshot is sent instead.
Intermediate versions may name mixed content that the admin never published under that number;
nothing relies on them: sync is decided on content hashes, and the last patch's answer must
carry the desired hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from slb.model import Config, Group, Member

MAX_DELTA_GROUPS = 64  # more groups to patch than this: one full snapshot is cheaper
_GROUP_SETTINGS = tuple(f for f in Group.model_fields if f not in ("name", "members"))


@dataclass(frozen=True, slots=True)
class Patch:
    group: str
    base_version: int
    version: int
    upsert: list[Member]
    remove: list[str]

    def body(self) -> dict[str, Any]:
        return {"base_version": self.base_version, "version": self.version,
                "upsert": [m.model_dump(mode="json") for m in self.upsert],
                "remove": self.remove}


def plan(known: Config, applied_version: int, desired: Config, changed: frozenset[str]
         ) -> list[Patch] | None:
    """The PATCHes taking a node from ``known`` (applied as ``applied_version``) to
    ``desired``, when only members of the ``changed`` groups differ; None: send it whole."""
    if known.virtual_servers != desired.virtual_servers or known.http != desired.http \
            or known.access_log != desired.access_log \
            or len(known.groups) != len(desired.groups):
        return None
    edits: list[tuple[str, list[Member], list[str]]] = []
    for before, after in zip(known.groups, desired.groups, strict=True):
        if before is after or before.digest() == after.digest():
            continue
        if before.name != after.name or after.name not in changed:
            return None  # a rename, or the hint left out a change: any doubt means a full PUT
        edit = member_delta(before, after)
        if edit is None:
            return None
        edits.append((after.name, *edit))
    gap = desired.version - applied_version
    if not edits:
        if gap <= 0 or not desired.groups:
            return None
        edits = [(desired.groups[0].name, [], [])]  # only the version moves: an empty delta
    if len(edits) > gap or len(edits) > MAX_DELTA_GROUPS:
        return None
    if any(quote(name, safe="") != name for name, _, _ in edits):
        return None  # the node matches the raw path: names needing escapes go by PUT
    patches, base = [], applied_version
    for i, (name, upsert, remove) in enumerate(edits):
        version = desired.version - len(edits) + 1 + i
        patches.append(Patch(name, base, version, upsert, remove))
        base = version
    return patches


def member_delta(before: Group, after: Group) -> tuple[list[Member], list[str]] | None:
    """(upsert, remove) turning ``before`` into ``after``, or None if a delta cannot do it."""
    if any(getattr(before, f) != getattr(after, f) for f in _GROUP_SETTINGS):
        return None  # a group setting changed: only members travel in a delta
    old = {m.address: m for m in before.members}
    new = {m.address: m for m in after.members}
    remove = [address for address in old if address not in new]
    upsert = [m for m in after.members if old.get(m.address) != m]
    # the node keeps the surviving members in their order and appends new ones
    order = [a for a in old if a in new] + [m.address for m in upsert if m.address not in old]
    if order != [m.address for m in after.members]:
        return None
    return upsert, remove
