"""Changing an applied configuration: full snapshots and pool deltas, with their rules.

A full snapshot (``PUT /v1/config``) must carry a version newer than the applied one. A pool
delta names the version it was made from (``base_version``) and its own new ``version``; if the
base is not the applied version the sender's view is out of date, and it answers with a full
snapshot instead (409 ``base_mismatch``). A snapshot names the admin store that made it
(``Config.store``); a node holding another store's snapshot refuses it (409 ``other_store``)
unless the push says ``take_over``, which the admin sends only when an operator (or
``take_over: automatic``) asks.

Two shapes of pool delta, one rule set and one code path (``apply_batch``):

* ``PATCH /v1/groups/{name}`` (``PoolDelta``): one group's ``upsert`` and ``remove``;
* ``PATCH /v1/groups`` (``PoolBatch``): ``{"base_version", "version", "groups": [{"name",
  "upsert", "remove"}, ...]}``, any number of groups moved by ONE version step. A health flip
  of 100 groups is then one request per node instead of 100, and needs no run of spare
  versions. A batch is all or nothing: every entry is checked before anything is built, and
  a refusal lists every bad entry by its index and group name; an empty ``groups`` list only
  moves the version.

``apply_batch`` returns a new ``Config`` sharing every unchanged part with the old one: a delta
on a node with 10,000 groups touches only its groups, and of those only the ones it changes
(an upsert equal to the member there, the usual case when an admin resends, changes nothing;
a group left as it was keeps its object and its pool). It digests nothing: the changed
groups' digests wait for the first ``content_hash`` (``identity.with_groups``), so a node
puts a delta in front of its traffic first (``slb.node.node``).

A node validates a batch straight from the request's bytes (``parse_batch(body)``): one call
into pydantic-core parses and validates, without the dicts and lists of ``json.loads`` in
between (a third of the parse of a 100-group flip). ``NotJson`` says the bytes are not JSON.
``SnapshotRejected`` is what the control API answers with when it refuses a change: its
``reason`` picks the status.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slb.errors import error_body
from slb.gcpause import gc_paused
from slb.model.parse import ConfigErrors, format_problem, parse_config, pydantic_problems
from slb.model.schema import Address, Config, Group, Member

M = TypeVar("M", bound=BaseModel)
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


class NotJson(ValueError):
    """A body that is not JSON at all (pydantic-core's message says where)."""


def _doubled(upsert: list[Member], remove: list[str]) -> list[str]:
    """Addresses a delta lists twice (in upsert, or in upsert and remove): sorted."""
    if len(upsert) + len(remove) < 2:
        return []  # a health flip's entry: one member
    seen: set[str] = set()
    twice = {m.address for m in upsert if m.address in seen or seen.add(m.address)}
    return sorted(twice | (seen & set(remove)))


class PoolDelta(BaseModel):
    """``PATCH /v1/groups/{name}``: one group's members."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_version: int = Field(ge=0)
    version: int = Field(ge=1)
    upsert: list[Member] = Field(default_factory=list)
    remove: list[Address] = Field(default_factory=list)


class GroupDelta(BaseModel):
    """One entry of a ``PoolBatch``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    upsert: list[Member] = Field(default_factory=list)
    remove: list[Address] = Field(default_factory=list)


class PoolBatch(BaseModel):
    """``PATCH /v1/groups``: several groups' members, one version step, all or nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_version: int = Field(ge=0)
    version: int = Field(ge=1)
    groups: list[GroupDelta]

    @classmethod
    def of(cls, name: str, delta: PoolDelta) -> PoolBatch:
        """The one-group delta as a batch of one: both endpoints share ``apply_batch``."""
        return cls(base_version=delta.base_version, version=delta.version,
                   groups=[GroupDelta(name=name, upsert=delta.upsert, remove=delta.remove)])


def _validated(model: type[M], data: Any, what: str) -> M:
    """``data`` validated as ``model``: parsed JSON, or the raw bytes of a request body."""
    raw = isinstance(data, bytes)
    if not raw and not isinstance(data, dict):
        raise SnapshotRejected("invalid", f"a {what} must be a JSON object")
    try:
        return model.model_validate_json(data) if raw else model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if raw and errors[0]["type"] == "json_invalid":
            raise NotJson(errors[0]["msg"].removeprefix("Invalid JSON: ")) from None
        if raw and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise SnapshotRejected("invalid", f"a {what} must be a JSON object") from None
        lines = [format_problem(problem) for problem in pydantic_problems(exc)]
        raise SnapshotRejected("invalid", f"invalid {what}", lines) from None


def parse_delta(data: Any) -> PoolDelta:
    """A ``PATCH /v1/groups/{name}`` body: parsed JSON or its bytes."""
    delta = _validated(PoolDelta, data, "pool delta")
    doubled = _doubled(delta.upsert, delta.remove)
    if doubled:
        raise SnapshotRejected("invalid", "a member appears twice in the delta",
                               [f"{a}: listed twice" for a in doubled])
    return delta


def parse_batch(data: Any) -> PoolBatch:
    """A ``PATCH /v1/groups`` body (parsed JSON or its bytes); every problem of every entry is
    listed, by index."""
    batch = _validated(PoolBatch, data, "pool delta batch")
    errors: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(batch.groups):
        if entry.name in seen:
            errors.append(f"groups[{i}] ({entry.name}): the group is listed twice")
        seen.add(entry.name)
        errors += [f"groups[{i}] ({entry.name}): {a}: listed twice"
                   for a in _doubled(entry.upsert, entry.remove)]
    if errors:
        raise SnapshotRejected("invalid", "invalid pool delta batch", errors)
    return batch


def parse_snapshot(data: Any, applied: Config | None, take_over: bool = False) -> Config:
    """A full snapshot (parsed JSON or a body's bytes), validated and checked to be newer
    than ``applied``; and, unless ``take_over``, from the same store as ``applied`` (when both
    name one). Versions of two stores are unrelated numbers: a take-over by another store
    replaces whatever version the node ran, while within one store an older version is
    refused even then.

    A snapshot that names an old version of the applied store is refused before it is
    validated: an admin that timed out on a big snapshot may send it again while the node is
    still applying the first one, and validating 10,000 groups only to refuse them would slow
    a busy node down further."""
    if isinstance(data, bytes):  # a request's body
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise NotJson(str(exc)) from None
    version, store = (data.get("version"), data.get("store")) if isinstance(data, dict) \
        else (None, None)
    if applied is not None and type(version) is int and version <= applied.version \
            and (store is None or applied.store is None or store == applied.store):
        raise SnapshotRejected("stale", f"version {version} is not newer than the applied "
                               f"version {applied.version}", applied_version=applied.version)
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


def apply_batch(config: Config, batch: PoolBatch) -> tuple[Config, list[Group]]:
    """The configuration with every entry of ``batch`` applied, and the groups that changed, in
    the batch's order; or ``SnapshotRejected`` and nothing applied.

    Order of the checks: the versions first (a sender whose view is out of date learns that
    before anything else), then every entry; the first reason found among the entries picks
    the status (an unknown group 404, a member that is not there 400) and every bad entry is
    listed.
    """
    if batch.base_version != config.version:
        raise SnapshotRejected("base_mismatch", f"base_version {batch.base_version} is not the "
                               f"applied version {config.version}: send a full snapshot",
                               applied_version=config.version)
    if batch.version <= config.version:
        raise SnapshotRejected("stale", f"version {batch.version} is not newer than the "
                               f"applied version {config.version}",
                               applied_version=config.version)
    unknown: list[str] = []
    invalid: list[str] = []
    built: list[tuple[int, Group]] = []
    for i, entry in enumerate(batch.groups):
        where = f"groups[{i}] ({entry.name})"
        index = config.group_position(entry.name)
        if index is None:
            unknown.append(f"{where}: no group named {entry.name!r}")
            continue
        group = config.groups[index]
        edited = _edited(group.members, entry.upsert, entry.remove)
        if isinstance(edited, tuple):
            invalid += [f"{where}: remove: {a} is not a member" for a in edited]
        elif edited is not None:
            # (the copy's digest is reset by the copy itself: slb.model.identity)
            built.append((index, group.model_copy(update={"members": edited})))
    if unknown:
        raise SnapshotRejected("not_found", f"{len(unknown)} group(s) not found; nothing "
                               "was applied", unknown + invalid)
    if invalid:
        raise SnapshotRejected("invalid", "removing members a group does not have; nothing "
                               "was applied", invalid)
    # one copy of the config for the whole batch, not one per group
    new = config.with_groups(dict(built), batch.version) if built \
        else copy_config(config, version=batch.version)
    return new, [group for _, group in built]


def _edited(members: list[Member], upsert: list[Member], remove: list[str]
            ) -> list[Member] | tuple[str, ...] | None:
    """``members`` with ``remove`` taken out and ``upsert`` put in: an upserted member keeps
    its place, a new one goes last. None when that leaves the list as it is; the addresses of
    ``remove`` that are not members (a tuple) when it cannot be done."""
    where: dict[str, int] | None = None
    if remove or len(upsert) > 2:  # else (a flip: one member) a scan costs less than a map
        where = {m.address: i for i, m in enumerate(members)}
        missing = tuple(a for a in remove if a not in where)
        if missing:
            return missing
    edited: list[Member] | None = None
    for member in upsert:
        i = where.get(member.address) if where is not None \
            else _position(members, member.address)
        if i is not None and members[i] == member:
            continue  # the member as it is: nothing to change
        if edited is None:
            edited = list(members)
        if i is None:
            edited.append(member)
        else:
            edited[i] = member
    if remove:
        gone = set(remove)
        edited = [m for m in (edited or members) if m.address not in gone]
    return edited


def _position(members: list[Member], address: str) -> int | None:
    for i, member in enumerate(members):
        if member.address == address:
            return i
    return None


def copy_config(config: Config, **update: Any) -> Config:
    """``config`` with fields replaced, without re-validating the unchanged rest.

    The caches the replaced fields invalidate are dropped by ``model_copy``
    (``slb.model.identity``); the others are kept.
    """
    return config.model_copy(update=update)
