"""Identity of configuration objects: group digests, the content hash, and every model cache.

Snapshot objects are immutable, so facts computed from them can be cached on them: a group's
digest (and, when a caller asks to keep it, the JSON the digest is taken of: ``keep_json``), a
config's content hash (and the two halves it combines), a config's map from group name to
position. Those caches are the only mutable state of the model, and they are all declared
here, in ``DEPENDS``, with the fields each one is computed from.

Objects are changed only by copying (``model_copy``; pydantic's frozen models allow nothing
else). ``Cached.model_copy`` gives every copy its own cache holding exactly the entries whose
fields the copy did not touch (and does pydantic's shallow copy itself: a health flip copies
100 groups, and pydantic's generic copy was a third of that cost): a pool delta on a node
with 10,000 groups keeps the other groups' digests and the digest of the rest, and
``with_groups`` updates the groups' combination for the changed groups only.
A new cache is one more entry in ``DEPENDS``; nothing else can forget to reset it.

The content hash leaves out the version and the node-local parts (``control``, ``state_dir``),
so the admin and a node compute the same hash for the same snapshot. It combines a digest of the
rest with the XOR of one digest per group (group names are unique and their order means
nothing): XOR lets one group be swapped in and out of the combination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, PrivateAttr

# The fields of a Config that a node owns and the content hash leaves out.
NODE_LOCAL = frozenset({"version", "control", "state_dir"})

GROUP_DIGEST = "digest"  # Group: sha256 of all its fields
GROUP_JSON = "json"  # Group: its JSON (model_dump_json), where a caller keeps it (keep_json)
CONTENT_HASH = "hash"  # Config: the content hash
REST_HASH = "rest_hash"  # Config: sha256 of everything but the groups and NODE_LOCAL
GROUPS_MIX = "groups_mix"  # Config: XOR of the group digests
POSITIONS = "positions"  # Config: group name -> index in ``groups``


@dataclass(frozen=True, slots=True)
class Depends:
    """The fields a cache is computed from: ``on`` these, or every field but ``all_but``."""

    on: frozenset[str] = frozenset()
    all_but: frozenset[str] | None = None

    def touched_by(self, fields: Set[str]) -> bool:
        if self.all_but is not None:
            return bool(fields - self.all_but)
        return bool(fields & self.on)


# Every cache of the model, and what it depends on.
DEPENDS: dict[str, Depends] = {
    GROUP_DIGEST: Depends(all_but=frozenset()),
    GROUP_JSON: Depends(all_but=frozenset()),
    CONTENT_HASH: Depends(all_but=NODE_LOCAL),
    REST_HASH: Depends(all_but=NODE_LOCAL | {"groups"}),
    GROUPS_MIX: Depends(on=frozenset({"groups"})),
    POSITIONS: Depends(on=frozenset({"groups"})),
}


def cache_of(model: BaseModel) -> dict[str, Any]:
    # the private dict directly: pydantic's __getattr__ costs microseconds per read, and a
    # snapshot's hash reads 10,000 of these
    private = model.__pydantic_private__
    assert private is not None
    cache: dict[str, Any] = private["_cache"]
    return cache


class Cached(BaseModel):
    """A snapshot object with caches: copies keep only what they did not change."""

    _cache: dict[str, Any] = PrivateAttr(default_factory=dict)

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Self:
        if deep:
            copied = super().model_copy(update=update, deep=True)
        else:
            # pydantic's shallow copy (BaseModel.__copy__ and the update), without its generic
            # copy.copy calls: the copy's fields, the fields set, extra and private attributes
            cls = type(self)
            copied = cls.__new__(cls)
            fields = dict(self.__dict__)
            fields_set = set(self.__pydantic_fields_set__)
            if update:
                fields.update(update)
                fields_set.update(update)
            extra = self.__pydantic_extra__
            object.__setattr__(copied, "__dict__", fields)
            object.__setattr__(copied, "__pydantic_extra__", None if extra is None
                               else dict(extra))
            object.__setattr__(copied, "__pydantic_fields_set__", fields_set)
            object.__setattr__(copied, "__pydantic_private__",
                               dict(self.__pydantic_private__ or {}))
        changed = set(update or ())
        private = copied.__pydantic_private__
        assert private is not None
        # a new dict: a plain copy would share this one with the original
        private["_cache"] = {key: value for key, value in cache_of(self).items()
                             if not DEPENDS[key].touched_by(changed)}
        return copied

    def __getstate__(self) -> dict[Any, Any]:
        # a kept JSON stays home: pickled to a worker it would only cost bytes and memory
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private and GROUP_JSON in private.get("_cache", ()):
            cache = {k: v for k, v in private["_cache"].items() if k != GROUP_JSON}
            state["__pydantic_private__"] = {**private, "_cache": cache}
        return state

    def __eq__(self, other: object) -> bool:
        # fields only: pydantic would also compare the caches, and an object whose hash was
        # computed would differ from its equal twin
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = BaseModel.__hash__


C = TypeVar("C", bound=Cached)


def group_json(group: Cached) -> bytes:
    """The group's JSON: the one kept by ``keep_json``, or made now (and not kept)."""
    kept: bytes | None = cache_of(group).get(GROUP_JSON)
    return kept if kept is not None else group.model_dump_json().encode()


def keep_json(group: Cached) -> bytes:
    """The group's JSON, kept with it: made once for its digest and the node's state file
    (``slb.node.files.SnapshotEncoder``). Only a node keeps it (its state file holds every
    group's JSON anyway); an admin's 10,000 groups would hold a second copy of their
    content."""
    cache = cache_of(group)
    found: bytes | None = cache.get(GROUP_JSON)
    if found is None:
        found = cache[GROUP_JSON] = group.model_dump_json().encode()
    return found


def group_digest(group: Cached) -> str:
    cache = cache_of(group)
    found: str | None = cache.get(GROUP_DIGEST)
    if found is None:
        found = cache[GROUP_DIGEST] = hashlib.sha256(group_json(group)).hexdigest()
    return found


def content_hash(config: Cached) -> str:
    cache = cache_of(config)
    found: str | None = cache.get(CONTENT_HASH)
    if found is None:
        rest = cache.get(REST_HASH)
        if rest is None:
            text = config.model_dump_json(exclude=set(NODE_LOCAL | {"groups"}))
            rest = cache[REST_HASH] = hashlib.sha256(text.encode()).hexdigest()
        groups = _groups(config)
        mix = cache.get(GROUPS_MIX)
        if mix is None:
            mix = 0
            for group in groups:
                mix ^= int(group_digest(group), 16)
            cache[GROUPS_MIX] = mix
        combined = f"{rest}:{mix:064x}:{len(groups)}"
        found = cache[CONTENT_HASH] = hashlib.sha256(combined.encode()).hexdigest()
    return found


def group_position(config: Cached, name: str) -> int | None:
    """Index of group ``name``, from a map built once per groups list."""
    cache = cache_of(config)
    positions: dict[str, int] | None = cache.get(POSITIONS)
    if positions is None:
        positions = cache[POSITIONS] = {g.name: i for i, g in enumerate(_groups(config))}
    return positions.get(name)


def with_groups(config: C, replaced: Mapping[int, Cached], version: int) -> C:
    """``config`` with ``groups[i]`` replaced by ``replaced[i]`` (same names): a pool delta of
    any number of groups, in ONE copy (a copy per group was most of a 100-group delta's cost:
    100 copies of the config and of its list of groups).

    The copy keeps the digest of the rest (``model_copy``); the groups' XOR is updated for the
    ones that changed, and the position map still holds (same names, same order).
    """
    groups = list(_groups(config))
    mine = cache_of(config)
    mix = mine.get(GROUPS_MIX)
    for position, group in replaced.items():
        if mix is not None:
            mix ^= int(group_digest(groups[position]), 16) ^ int(group_digest(group), 16)
        groups[position] = group
    copied = config.model_copy(update={"groups": groups, "version": version})
    cache = cache_of(copied)
    if mix is not None:
        cache[GROUPS_MIX] = mix
    if POSITIONS in mine:
        cache[POSITIONS] = mine[POSITIONS]
    return copied


def _groups(config: Cached) -> Sequence[Any]:
    groups: Sequence[Any] = config.groups  # type: ignore[attr-defined]
    return groups
