"""``admin.domain.canary``: the canary request's checks and the figures a verdict reads."""

from __future__ import annotations

import pytest

from admin.domain.canary import Figures, parse_spec
from admin.domain.errors import Invalid


def test_a_canary_names_nodes_or_a_percentage_with_defaults() -> None:
    assert parse_spec({"nodes": ["n1"]}) == (["n1"], None, 120.0, 0.02)
    assert parse_spec({"percent": 20, "watch_seconds": 5, "max_error_ratio": 0}) == (
        None, 20, 5.0, 0.0)


@pytest.mark.parametrize(("spec", "errors"), [
    ({}, ["canary: expected exactly one of nodes, percent"]),
    ({"nodes": [], "x": 1}, ["canary.x: unknown field", "canary.nodes: expected a list of "
                                                        "node names"]),
    ({"percent": 100}, ["canary.percent: expected a number above 0 and below 100"]),
    ({"percent": 5, "max_error_ratio": 2, "watch_seconds": True},
     ["canary.watch_seconds: expected seconds, above 0",
      "canary.max_error_ratio: expected a ratio from 0 to 1"]),
    ("n1", ['canary: expected {"nodes": [...]} or {"percent": n}']),
])
def test_every_mistake_of_a_canary_request_is_named(spec: object, errors: list[str]) -> None:
    with pytest.raises(Invalid) as info:
        parse_spec(spec)
    assert info.value.errors == errors


def test_an_error_ratio_of_no_requests_is_zero() -> None:
    assert Figures().ratio == 0.0
    assert Figures(40, 10).to_json() == {"requests": 40, "errors": 10, "error_ratio": 0.25}
