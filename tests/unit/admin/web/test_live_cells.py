"""What the UI's live cells say about the nodes: the state each node applies beside the desired
one, and the configuration version a node runs (``admin.web.ui.groups``, ``overview``)."""

from __future__ import annotations

from admin.web.ui.groups import applied_cell
from admin.web.ui.overview import node_live


def test_nodes_that_agree_with_the_desired_state_say_so_in_one_word() -> None:
    assert applied_cell("drain", {"n1": "drain", "n2": "drain"}, 2) == {
        "applied": "drain on all 2", "applied_class": "good"}


def test_a_node_that_differs_is_named_and_marked() -> None:
    cell = applied_cell("drain", {"n1": "drain", "n2": "up"}, 2)
    assert cell == {"applied": "n1: drain, n2: up (desired: drain)", "applied_class": "bad"}
    assert applied_cell("up", {}, 2)["applied"] == "no node answered"


def test_the_overview_names_the_configuration_a_node_runs_and_a_take_over() -> None:
    live = node_live({"configuration_version": 4, "desired_configuration_version": 4,
                      "in_sync": True, "applied_version": 17, "desired_version": 17, "lag": 0})
    assert (live["configuration"], live["configuration_class"], live["sync"]) == (
        4, "good", "in sync")
    held = node_live({"needs_take_over": {"kind": "other_store", "store": "x", "version": 9},
                      "last_error": "node runs version 9 of another admin store"})
    assert (held["sync"], held["sync_class"]) == ("needs take-over (another admin store)",
                                                  "bad")
