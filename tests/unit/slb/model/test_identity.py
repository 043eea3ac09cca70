"""``slb.model.identity``: hashes follow content, and no copy keeps a stale cache."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

from slb.model import Config, Control, Member, copy_config, parse_config
from slb.model.identity import (
    DEPENDS,
    GROUP_DIGEST,
    GROUP_JSON,
    GROUP_SHELL,
    MIX_PARTIAL,
    cache_of,
    group_json,
    keep_json,
)


def document(weights: tuple[int, ...] = (1, 2), groups: int = 3) -> dict[str, Any]:
    return {"version": 1, "groups": [
        {"name": f"g{i}", "members": [{"address": f"10.0.{i}.{n}:80", "weight": w}
                                      for n, w in enumerate(weights)]}
        for i in range(groups)]}


def fresh_hash(config: Config) -> str:
    return parse_config(config.to_json()).content_hash()


def test_a_copy_that_changes_content_gets_a_new_hash() -> None:
    config = parse_config(document())
    config.content_hash()  # fill every cache
    heavier = copy_config(config, http=config.http.model_copy(update={"max_headers": 50}))
    assert heavier.content_hash() == fresh_hash(heavier) != config.content_hash()


def test_node_local_fields_and_the_version_leave_the_hash_alone() -> None:
    config = parse_config(document())
    local = copy_config(config, version=9, control=Control(listen="127.0.0.1:1"),
                        state_dir="/tmp/x")
    assert local.content_hash() == config.content_hash() == fresh_hash(local)


def test_with_group_updates_the_hash_as_a_full_recompute_would() -> None:
    config = parse_config(document())
    config.content_hash()
    position = config.group_position("g1")
    assert position == 1
    group = config.groups[1].model_copy(update={"members": config.groups[1].members[:1]})
    changed = config.with_groups({position: group}, version=2)
    assert changed.version == 2
    assert changed.content_hash() == fresh_hash(changed) != config.content_hash()
    assert changed.groups[1].digest() != config.groups[1].digest()
    assert changed.group_position("g2") == 2


def fewer(config: Config, name: str, version: int) -> Config:
    """``config`` with group ``name`` one member shorter, as a pool delta makes it."""
    position = config.group_position(name)
    assert position is not None
    group = config.groups[position]
    return config.with_groups({position: group.model_copy(
        update={"members": group.members[:-1]})}, version)


def test_deltas_chained_before_any_hash_hash_as_a_full_recompute_would() -> None:
    config = parse_config(document(weights=(1, 2, 3)))
    config.content_hash()
    # g1 replaced twice and g2 once before anyone asks; then g0 after the hash was asked
    chained = fewer(fewer(fewer(config, "g1", 2), "g2", 3), "g1", 4)
    assert chained.content_hash() == fresh_hash(chained)
    assert fewer(chained, "g0", 5).content_hash() == fresh_hash(fewer(chained, "g0", 5))
    # a config never hashed before its delta is hashed whole, rightly
    unhashed = parse_config(document(weights=(1, 2, 3)))
    assert fewer(unhashed, "g1", 2).content_hash() == fresh_hash(fewer(unhashed, "g1", 2))


def test_a_delta_digests_its_new_groups_only_when_the_hash_is_asked() -> None:
    config = parse_config(document(weights=(1, 2, 3)))
    config.content_hash()
    once = fewer(config, "g1", 2)
    twice = fewer(once, "g1", 3)
    assert GROUP_DIGEST not in cache_of(once.groups[1])
    twice.content_hash()
    assert GROUP_DIGEST in cache_of(twice.groups[1])
    # the group replaced before the hash was asked was never digested
    assert GROUP_DIGEST not in cache_of(once.groups[1])
    assert MIX_PARTIAL not in cache_of(twice)


def test_a_config_awaiting_its_digests_ships_without_them() -> None:
    config = parse_config(document())
    config.content_hash()
    changed = fewer(config, "g2", 2)
    shipped = pickle.loads(pickle.dumps(changed))  # as a worker gets a snapshot
    assert MIX_PARTIAL in cache_of(changed) and MIX_PARTIAL not in cache_of(shipped)
    assert shipped.content_hash() == changed.content_hash() == fresh_hash(changed)


def test_a_copy_never_shares_its_cache_with_the_original() -> None:
    config = parse_config(document())
    copied = copy_config(config, version=5)
    copied.content_hash()
    assert cache_of(copied) is not cache_of(config)
    assert cache_of(config) == {}


def test_equal_content_compares_equal_whatever_was_cached() -> None:
    one, two = parse_config(document()), parse_config(document())
    one.content_hash()
    assert one == two
    assert one.groups[0] == two.groups[0]


def test_every_cache_the_model_fills_is_declared() -> None:
    config = parse_config(document())
    config.content_hash()
    config.group_position("g0")
    assert set(cache_of(config)) | set(cache_of(config.groups[0])) <= set(DEPENDS)


def test_a_copy_has_the_originals_fields_but_the_updated_ones() -> None:
    group = parse_config(document()).groups[0]
    copied = group.model_copy(update={"members": group.members[:1]})
    assert [m.address for m in copied.members] == ["10.0.0.0:80"]
    assert [m.address for m in group.members] == ["10.0.0.0:80", "10.0.0.1:80"]
    assert copied.model_fields_set == group.model_fields_set | {"members"}
    whole = group.model_dump()
    assert copied.model_dump() == {**whole, "members": whole["members"][:1]}
    assert copied.model_copy(update={"members": group.members}) == group


def test_a_kept_json_is_the_groups_json_and_stays_home_when_pickled() -> None:
    group = parse_config(document()).groups[1]
    copied = group.model_copy(update={"members": group.members[1:]})
    keep_json(copied)
    text = copied.model_dump_json().encode()
    assert group_json(copied) == text
    assert copied.digest() == hashlib.sha256(text).hexdigest()
    shipped = pickle.loads(pickle.dumps(copied))  # as a delta goes to the workers
    assert GROUP_JSON in cache_of(copied) and GROUP_JSON not in cache_of(shipped)
    assert shipped == copied and shipped.digest() == copied.digest()


def test_a_group_edited_member_by_member_has_pydantics_json_byte_for_byte() -> None:
    # the JSON of a group whose members were edited is spliced from its kept shell: it must be
    # what pydantic writes for the whole group, whatever the group's other settings
    config = parse_config({"version": 1, "groups": [
        {"name": 'odd "members":[] name', "members": [{"address": "10.0.0.1:80"}]},
        {"name": "hashed", "algorithm": "hash", "hash_key": "header:x-user",
         "timeouts": {"read": 7}, "members": [{"address": "[::1]:8080", "weight": 3}]},
        {"name": "empty", "members": []},
    ]})
    for group in config.groups:
        group.digest()  # the first JSON: a whole dump, and the shell cut from it
        assert GROUP_SHELL in cache_of(group)
        for members in ([], [Member(address="10.9.9.9:81", weight=0, state="down")],
                        [*group.members, Member(address="10.8.8.8:82")]):
            edited = group.model_copy(update={"members": members})
            assert GROUP_SHELL in cache_of(edited)  # kept: the members alone changed
            assert group_json(edited) == edited.model_dump_json().encode()
            assert edited.digest() == hashlib.sha256(edited.model_dump_json().encode()
                                                     ).hexdigest()
        renamed = group.model_copy(update={"name": "renamed"})
        assert GROUP_SHELL not in cache_of(renamed)  # the name is in the shell: made afresh
        assert group_json(renamed) == renamed.model_dump_json().encode()


def test_the_shell_stays_home_when_pickled() -> None:
    group = parse_config(document()).groups[0]
    group.digest()
    shipped = pickle.loads(pickle.dumps(group))
    assert GROUP_SHELL in cache_of(group) and GROUP_SHELL not in cache_of(shipped)
    assert shipped.digest() == group.digest()
