"""The editor's forms turned into REST bodies: what an operator types is what the API gets."""

from __future__ import annotations

from admin.web.ui.edit import FIELDS, body_of, field_errors


def test_a_group_form_with_algorithm_hash_carries_its_key_and_other_algorithms_none() -> None:
    stored = {"name": "web", "row_version": 3, "members": [], "consul": None}
    body = body_of("group", {"algorithm": "hash", "hash_key": " cookie:session ",
                             "members": "10.0.0.1:80 2"}, stored)
    assert body["algorithm"] == "hash" and body["hash_key"] == "cookie:session"
    assert body["members"] == [{"address": "10.0.0.1:80", "weight": 2}]
    assert "row_version" not in body
    assert body_of("group", {"algorithm": "wrr", "hash_key": ""}, stored)["hash_key"] is None


def test_a_virtual_server_form_binds_a_certificate_or_none() -> None:
    form = {"cluster": "c1", "listen": "0.0.0.0:443", "domains": "a.test, b.test",
            "certificate": "site-cert"}
    body = body_of("virtual_server", form, None)
    assert body["certificate"] == "site-cert" and body["domains"] == ["a.test", "b.test"]
    assert body_of("virtual_server", {**form, "certificate": ""}, None)["certificate"] is None


def test_an_error_on_the_hash_key_or_certificate_is_shown_next_to_its_field() -> None:
    by_field, rest = field_errors(
        ["hash_key: invalid", "certificate: no certificate named 'x'", "other: oops"],
        FIELDS["group"] + FIELDS["virtual_server"])
    assert by_field == {"hash_key": ["invalid"], "certificate": ["no certificate named 'x'"]}
    assert rest == ["other: oops"]
