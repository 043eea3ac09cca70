"""The versions' content parsed with equal parts shared (``admin.domain.memory.SharedJson``):
the same values as ``json.loads``, the same JSON back, and equal number-only objects held once."""

from __future__ import annotations

import json

from admin.domain.memory import SharedJson


def group(name: str, connect: float = 5.0) -> str:
    return json.dumps({"name": name, "algorithm": "wrr", "consul": None,
                       "timeouts": {"connect": connect, "read": 60.0},
                       "retry": {"tries": 3, "non_idempotent": False},
                       "members": [{"address": f"10.0.0.{i}:80", "weight": 1} for i in (1, 2)]})


def test_parsed_values_and_their_json_are_those_of_json_loads() -> None:
    texts = [group("a"), group("b", connect=2.5),
             json.dumps({"x": {"v": 1}, "y": {"v": 1.0}, "z": {"v": True}, "n": {"v": -0.0},
                         "p": {"v": 0.0}, "e": {}, "l": [{"v": 1}, {"v": True}, "s", ["s"]]})]
    parsed = SharedJson()
    for text in texts:
        value = parsed.loads(text)
        assert value == json.loads(text)
        assert json.dumps(value) == text  # 1, 1.0, true, -0.0 and 0.0 each kept as written


def test_equal_number_only_objects_and_equal_strings_are_held_once() -> None:
    parsed = SharedJson()
    a, b, c = (parsed.loads(group(name, connect)) for name, connect in
               (("a", 5.0), ("b", 5.0), ("c", 2.5)))
    assert a["timeouts"] is b["timeouts"] and a["retry"] is b["retry"] is c["retry"]
    assert c["timeouts"] is not a["timeouts"]  # different values: not shared
    assert a["algorithm"] is b["algorithm"]
    # objects holding text are each their own (a member is one group's)
    assert a["members"][0] is not b["members"][0]
    assert a["members"][0]["address"] is b["members"][0]["address"]


def test_another_batch_shares_nothing_with_the_last() -> None:
    # the memo lives as long as its batch: nothing accumulates over the admin's life
    first, second = SharedJson().loads(group("a")), SharedJson().loads(group("a"))
    assert first == second and first["timeouts"] is not second["timeouts"]
