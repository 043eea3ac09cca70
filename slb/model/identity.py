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

``with_groups`` takes the replaced groups' digests out of the XOR but leaves the new groups'
digests for the first ``content_hash`` to put in (``MIX_PARTIAL``): a node applies a pool
delta to its traffic first and digests the new groups after, for its answer (a fifth of a
node's work on a 100-group flip, no longer between the push and the traffic); a worker process,
which never asks for the hash, never digests them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from pydantic import BaseModel, PrivateAttr, TypeAdapter

# The fields of a Config that a node owns and the content hash leaves out.
NODE_LOCAL = frozenset({"version", "control", "state_dir"})

GROUP_DIGEST = "digest"  # Group: sha256 of all its fields
GROUP_MIXIN = "mixin"  # Group: the same digest as an int, what GROUPS_MIX XORs
GROUP_JSON = "json"  # Group: its JSON (model_dump_json), where a caller keeps it (keep_json)
GROUP_SHELL = "shell"  # Group: its JSON before and after the members: kept by member edits
CONTENT_HASH = "hash"  # Config: the content hash
REST_HASH = "rest_hash"  # Config: sha256 of everything but the groups and NODE_LOCAL
GROUPS_MIX = "groups_mix"  # Config: XOR of the group digests
MIX_PARTIAL = "mix_partial"  # Config: (XOR of some, {position: group whose digest it lacks})
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
    GROUP_MIXIN: Depends(all_but=frozenset()),
    GROUP_JSON: Depends(all_but=frozenset()),
    GROUP_SHELL: Depends(all_but=frozenset({"members"})),
    CONTENT_HASH: Depends(all_but=NODE_LOCAL),
    REST_HASH: Depends(all_but=NODE_LOCAL | {"groups"}),
    GROUPS_MIX: Depends(on=frozenset({"groups"})),
    MIX_PARTIAL: Depends(on=frozenset({"groups"})),
    POSITIONS: Depends(on=frozenset({"groups"})),
}


# caches never pickled (a pickle goes to a worker, which never asks for the hash): a kept
# JSON; the groups' XOR, whole or partial (with it a worker's every pool delta would carry a
# partial XOR, its dict of undigested groups growing towards every group, never read)
_STAYS_HOME = frozenset({GROUP_JSON, GROUP_SHELL, GROUPS_MIX, MIX_PARTIAL})


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
        private = copied.__pydantic_private__
        assert private is not None
        # a new dict: a plain copy would share this one with the original
        cache = cache_of(self)
        private["_cache"] = {key: cache[key] for key in _surviving(frozenset(update or ()))
                             if key in cache}
        return copied

    def __getstate__(self) -> dict[Any, Any]:
        # a kept JSON (and its shell) stays home: pickled to a worker it would only cost
        # bytes and memory
        state = super().__getstate__()
        private = state.get("__pydantic_private__")
        if private and not _STAYS_HOME.isdisjoint(private.get("_cache", ())):
            cache = {k: v for k, v in private["_cache"].items() if k not in _STAYS_HOME}
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

# changed fields -> the caches a copy keeps: worked out once per set of fields (the code
# copies with a handful of them), not per copy (a flip copies 100 groups; 1.4 -> 0.9 us each)
_SURVIVORS: dict[frozenset[str], tuple[str, ...]] = {}


def _surviving(changed: frozenset[str]) -> tuple[str, ...]:
    found = _SURVIVORS.get(changed)
    if found is None:
        found = _SURVIVORS[changed] = tuple(
            key for key, depends in DEPENDS.items() if not depends.touched_by(changed))
    return found


def group_json(group: Cached) -> bytes:
    """The group's JSON: the one kept by ``keep_json``, or made now (and not kept)."""
    kept: bytes | None = cache_of(group).get(GROUP_JSON)
    return kept if kept is not None else _made_json(group)


def keep_json(group: Cached) -> bytes:
    """The group's JSON, kept with it: made once for its digest and the node's state file
    (``slb.node.files.SnapshotEncoder``). Only a node keeps it (its state file holds every
    group's JSON anyway); an admin's 10,000 groups would hold a second copy of their
    content."""
    cache = cache_of(group)
    found: bytes | None = cache.get(GROUP_JSON)
    if found is None:
        found = cache[GROUP_JSON] = _made_json(group)
    return found


def _made_json(group: Cached) -> bytes:
    """The group's JSON, byte for byte pydantic's, from its shell and its members' JSON when a
    copy kept the shell (a health flip edits members only: 4.5 -> 2.5 us a group, the members
    alone). Otherwise the whole dump, and the shell cut from it for the copies to come: where
    the members' own JSON sits in it, checked, so a shell is never wrong, only absent."""
    cache = cache_of(group)
    members = _members_serializer(type(group)).to_json(group.members)  # type: ignore[attr-defined]
    shell: tuple[bytes, bytes] | None = cache.get(GROUP_SHELL)
    if shell is not None:
        return b"".join((shell[0], members, shell[1]))
    text: bytes = group.__pydantic_serializer__.to_json(group)
    start = text.find(b'"members":') + len(b'"members":')  # (a quote in a value is escaped)
    end = start + len(members)
    if start >= len(b'"members":') and text[start:end] == members:
        cache[GROUP_SHELL] = (text[:start], _shared_tail(text[end:]))
    return text


# member list type -> its serializer (the same one the group's own serializer uses inside)
_MEMBER_SERIALIZERS: dict[type, Any] = {}


def _members_serializer(cls: type) -> Any:
    found = _MEMBER_SERIALIZERS.get(cls)
    if found is None:
        annotation = cls.model_fields["members"].annotation  # type: ignore[attr-defined]
        found = _MEMBER_SERIALIZERS[cls] = TypeAdapter(annotation).serializer
    return found


# Most groups end alike (default timeouts, keep-alive, retry, ...): their shells' tails are
# held once (an admin holds 10,000 shells). Bounded: past it a tail is simply not shared.
_TAILS: dict[bytes, bytes] = {}
_TAILS_MAX = 1024


def _shared_tail(tail: bytes) -> bytes:
    found = _TAILS.get(tail)
    if found is not None:
        return found
    if len(_TAILS) < _TAILS_MAX:
        _TAILS[tail] = tail
    return tail


def group_digest(group: Cached) -> str:
    found: str = _digest(group, GROUP_DIGEST)
    return found


def _group_mixin(group: Cached) -> int:
    """The group's digest as an int, made with the digest (no hex parse per XOR)."""
    found: int = _digest(group, GROUP_MIXIN)
    return found


def _digest(group: Cached, key: str) -> Any:
    """The group's digest in the form ``key`` names; both forms are made and kept at once."""
    cache = cache_of(group)
    found = cache.get(key)
    if found is None:
        sha = hashlib.sha256(group_json(group))
        cache[GROUP_DIGEST] = sha.hexdigest()
        cache[GROUP_MIXIN] = int.from_bytes(sha.digest())
        found = cache[key]
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
            partial = cache.pop(MIX_PARTIAL, None)
            lacking: Iterable[Any] = groups
            mix = 0
            if partial is not None:  # (with_groups: the XOR of the others is known)
                mix, lacking = partial[0], partial[1].values()
            for group in lacking:
                mix ^= _group_mixin(group)
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

    The copy keeps the digest of the rest (``model_copy``) and the position map (same names,
    same order). The groups' XOR loses the replaced groups' digests (known already: the XOR
    holds them) and lacks the new ones' until ``content_hash`` asks (``MIX_PARTIAL``); a
    group replaced again before that leaves without ever being digested.
    """
    groups = list(_groups(config))
    mine = cache_of(config)
    mix, lacking = 0, None  # (no XOR known: content_hash makes it whole)
    if GROUPS_MIX in mine:
        mix, lacking = mine[GROUPS_MIX], {}
    elif MIX_PARTIAL in mine:
        mix, lacking = mine[MIX_PARTIAL][0], dict(mine[MIX_PARTIAL][1])
    for position, group in replaced.items():
        if lacking is not None:
            if position not in lacking:  # (a lacking one was never in the XOR)
                mix ^= _group_mixin(groups[position])
            lacking[position] = group
        groups[position] = group
    copied = config.model_copy(update={"groups": groups, "version": version})
    cache = cache_of(copied)
    if lacking is not None:
        cache[MIX_PARTIAL] = (mix, lacking)
    if POSITIONS in mine:
        cache[POSITIONS] = mine[POSITIONS]
    return copied


def _groups(config: Cached) -> Sequence[Any]:
    groups: Sequence[Any] = config.groups  # type: ignore[attr-defined]
    return groups
