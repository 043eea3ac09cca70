"""Changing an applied configuration: full snapshots and pool deltas, with their rules.

A full snapshot (``PUT /v1/config``) must carry a version newer than the applied one. A pool
delta (``PATCH /v1/groups/{name}``) names the version it was made from (``base_version``) and
its own new ``version``; if the base is not the applied version the sender's view is out of
date, and it answers with a full snapshot instead (409 ``base_mismatch``). A snapshot names the
admin store that made it (``Config.store``); a node holding another store's snapshot refuses it
(409 ``other_store``) unless the push says ``take_over``, which the admin sends only when an
operator (or ``take_over: automatic``) asks.

``apply_delta`` returns a new ``Config`` sharing every unchanged part with the old one: a delta
on a node with 10,000 groups touches one group. ``SnapshotRejected`` is what the control API
answers with when it refuses a change: its ``reason`` picks the status.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slb.errors import error_body
from slb.gcpause import gc_paused
from slb.model.parse import ConfigErrors, format_problem, parse_config, pydantic_problems
from slb.model.schema import Address, Config, Group, Member

Reason = Literal["stale", "invalid", "base_mismatch", "not_found", "file_managed",
                 "other_store"]


class SnapshotRejected(Exception):
    """A change that was refused; nothing was applied."""

    STATUS = {"stale": 409, "base_mismatch": 409, "file_managed": 409, "invalid": 400,
              "not_found": 404, "other_store": 409}

    def __init__(self, reason: Reason, message: str, errors: list[str] | None = None,
                 **details: Any) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.errors = errors or []
        self.details = details

    @property
    def status(self) -> int:
        return self.STATUS[self.reason]

    def to_json(self) -> dict[str, Any]:
        return error_body(self.reason, self.message, self.errors, **self.details)


class PoolDelta(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_version: int = Field(ge=0)
    version: int = Field(ge=1)
    upsert: list[Member] = Field(default_factory=list)
    remove: list[Address] = Field(default_factory=list)


def parse_delta(data: Any) -> PoolDelta:
    if not isinstance(data, dict):
        raise SnapshotRejected("invalid", "a pool delta must be a JSON object")
    try:
        delta = PoolDelta.model_validate(data)
    except ValidationError as exc:
        lines = [format_problem(problem) for problem in pydantic_problems(exc)]
        raise SnapshotRejected("invalid", "invalid pool delta", lines) from None
    addresses = [m.address for m in delta.upsert]
    doubled = {a for a in addresses if addresses.count(a) > 1} | (set(addresses)
                                                                  & set(delta.remove))
    if doubled:
        raise SnapshotRejected("invalid", "a member appears twice in the delta",
                               [f"{a}: listed twice" for a in sorted(doubled)])
    return delta


def parse_snapshot(data: Any, applied: Config | None, take_over: bool = False) -> Config:
    """A full snapshot, validated and checked to be newer than ``applied``; and, unless
    ``take_over``, from the same store as ``applied`` (when both name one). Versions of two
    stores are unrelated numbers: a take-over by another store replaces whatever version the
    node ran, while within one store an older version is refused even then."""
    try:
        with gc_paused():
            config = parse_config(data)
    except ConfigErrors as exc:
        raise SnapshotRejected("invalid", "invalid snapshot", exc.lines()) from None
    if applied is not None and applied.store is not None and config.store is not None \
            and config.store != applied.store:
        if take_over:
            return config  # another store's versions are unrelated: no comparison
        raise SnapshotRejected("other_store", f"this node runs version {applied.version} of "
                               f"another admin store ({applied.store}): take it over to "
                               "replace it", applied_version=applied.version,
                               applied_store=applied.store)
    if applied is not None and config.version <= applied.version:
        raise SnapshotRejected("stale", f"version {config.version} is not newer than the "
                               f"applied version {applied.version}",
                               applied_version=applied.version)
    return config


def apply_delta(config: Config, group_name: str, delta: PoolDelta) -> tuple[Config, Group]:
    """The configuration with ``delta`` applied to one group, and that group."""
    if delta.base_version != config.version:
        raise SnapshotRejected("base_mismatch", f"base_version {delta.base_version} is not the "
                               f"applied version {config.version}: send a full snapshot",
                               applied_version=config.version)
    if delta.version <= config.version:
        raise SnapshotRejected("stale", f"version {delta.version} is not newer than the "
                               f"applied version {config.version}",
                               applied_version=config.version)
    index = config.group_position(group_name)
    if index is None:
        raise SnapshotRejected("not_found", f"no group named {group_name!r}")
    group = config.groups[index]
    members = {m.address: m for m in group.members}
    missing = [a for a in delta.remove if a not in members]
    if missing:
        raise SnapshotRejected("invalid", "removing members the group does not have",
                               [f"remove: {a} is not a member" for a in missing])
    for address in delta.remove:
        del members[address]
    for member in delta.upsert:
        members[member.address] = member
    # (the copy's digest is reset by the copy itself: slb.model.identity)
    new_group = group.model_copy(update={"members": list(members.values())})
    return config.with_group(index, new_group, delta.version), new_group


def copy_config(config: Config, **update: Any) -> Config:
    """``config`` with fields replaced, without re-validating the unchanged rest.

    The caches the replaced fields invalidate are dropped by ``model_copy``
    (``slb.model.identity``); the others are kept.
    """
    return config.model_copy(update=update)
