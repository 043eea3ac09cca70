"""``slb.model.conditions``: what a route's ``when`` means, on a request described by hand."""

from __future__ import annotations

from slb.model import When
from slb.model.conditions import FactsView, compile_when, first_query_value, parse_cookies


def holds(when: When, view: FactsView) -> bool:
    conditions = compile_when(when)
    assert conditions is not None
    return conditions.holds(view)


def test_every_condition_must_hold_and_a_star_means_present() -> None:
    when = When(headers={"X-Canary": "*"}, cookies={"tier": "gold"}, client_ips=["10.0.0.0/8"])
    good = FactsView({"x-canary": "anything"}, {"tier": "gold"}, "", "10.2.3.4")
    assert holds(when, good)
    assert not holds(when, FactsView({}, {"tier": "gold"}, "", "10.2.3.4"))
    assert not holds(when, FactsView({"x-canary": "1"}, {"tier": "silver"}, "", "10.2.3.4"))
    assert not holds(when, FactsView({"x-canary": "1"}, {"tier": "gold"}, "", "11.0.0.1"))
    assert not holds(when, FactsView({"x-canary": "1"}, {"tier": "gold"}, "", "not an ip"))


def test_header_values_compare_exactly_and_ipv6_networks_work() -> None:
    assert not holds(When(headers={"x-canary": "1"}), FactsView({"x-canary": "1 "}, {}))
    assert holds(When(client_ips=["2001:db8::/32"]), FactsView({}, {}, "", "2001:db8::5"))


def test_a_query_parameter_is_its_first_occurrence_decoded() -> None:
    assert first_query_value("a=1&beta=x%20y&beta=2", "beta") == "x y"
    assert first_query_value("flag&b=1", "flag") == ""
    assert first_query_value("a=1", "beta") is None
    assert holds(When(query={"beta": "1"}), FactsView({}, {}, "x=0&beta=1"))


def test_cookies_parse_as_browsers_send_them_the_first_of_a_name_winning() -> None:
    assert parse_cookies('a=1; b="two"; a=3;  c=') == {"a": "1", "b": "two", "c": ""}
    view = FactsView({"Cookie": "tier=gold"}, {})
    assert view.cookie("tier") == "gold"


def test_failed_names_the_first_condition_that_does_not_hold() -> None:
    conditions = compile_when(When(headers={"x-a": "1"}, query={"q": "*"}))
    assert conditions is not None
    assert conditions.failed(FactsView({"x-a": "1"}, {})) == "query parameter q is not present"
    assert conditions.failed(FactsView({"x-a": "1"}, {}, "q=")) is None
