"""admin.domain.certificates: uploads checked, the key kept out of every record, renewal,
binding, expiry, and the snapshot carrying the pair inline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from admin.domain import certificates
from admin.domain.errors import Conflict, Invalid, NotFound
from admin.domain.snapshots import build_snapshot, validate_content
from admin.domain.store import Store
from tests.support.tls import Pair, TestPki

DAY = 86400


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "admin.db")


def body(name: str, pair: Pair) -> dict[str, str]:
    return {"name": name, **pair.inline()}


def key_lines(pair: Pair) -> list[str]:
    return Path(pair.key).read_text().splitlines()[1:-1]


def test_upload_shows_the_leaf_and_records_no_key(store: Store, pki: TestPki) -> None:
    pair = pki.issue("shop.test", "www.shop.test")
    shown = certificates.upload(store, body("shop", pair), "ada", "new shop")
    assert shown["names"] == ["shop.test", "www.shop.test"]
    assert shown["issuer"] and shown["virtual_servers"] == []
    assert set(store.get("certificate", "shop").body) == {
        "name", "fingerprint", "subject", "not_after"}
    audit = repr(store.audit())
    for line in key_lines(pair):
        assert line not in audit and line not in repr(shown)
    # the material is kept under the store's write-only field, named by fingerprint
    assert certificates.material(store)(shown["fingerprint"]) == (
        pair.inline()["certificate_pem"], pair.inline()["key_pem"])


@pytest.mark.parametrize(("change", "error"), [
    ("other key", "key_pem: the key does not match the certificate"),
    ("expired", "certificate_pem: "),
    ("garbage", "certificate_pem: not a PEM certificate chain"),
    ("bad key", "key_pem: unreadable private key"),
    ("missing key", "key_pem: required"),
    ("bad name", "name: "),
])
def test_invalid_uploads_name_the_field(store: Store, pki: TestPki, change: str,
                                        error: str) -> None:
    good, other = pki.issue("shop.test"), pki.issue("other.test")
    sent: dict[str, str] = body("shop", good)
    if change == "other key":
        sent["key_pem"] = other.inline()["key_pem"]
    elif change == "expired":
        sent = body("shop", pki.issue("shop.test", expired=True))
    elif change == "garbage":
        sent["certificate_pem"] = "-----BEGIN CERTIFICATE-----\nnope\n"
    elif change == "bad key":
        sent["key_pem"] = "not a key"
    elif change == "missing key":
        del sent["key_pem"]
    else:
        sent["name"] = "no spaces"
    with pytest.raises(Invalid) as caught:
        certificates.upload(store, sent, "ada", "try")
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors
    assert store.objects("certificate") == [] and store.objects("certificate_key") == []


def test_chain_out_of_order_is_refused(store: Store, pki: TestPki) -> None:
    pair = pki.issue("shop.test")
    ca_first = pki.ca.cert_pem.bytes().decode() + pair.inline()["certificate_pem"]
    with pytest.raises(Invalid) as caught:
        certificates.upload(store, {**body("shop", pair), "certificate_pem": ca_first},
                            "ada", "x")
    assert caught.value.errors[0].startswith("certificate_pem: the chain is out of order")


def test_duplicate_upload_is_a_conflict(store: Store, pki: TestPki) -> None:
    certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "one")
    with pytest.raises(Conflict):
        certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "two")


def test_renewal_is_one_audited_update_with_a_reason(store: Store, pki: TestPki) -> None:
    old = certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "one")
    new_pair = pki.issue("shop.test")
    with pytest.raises(Invalid):
        certificates.renew(store, "shop", new_pair.inline(), 1, "ada", "")  # no reason
    with pytest.raises(NotFound):
        certificates.renew(store, "nope", new_pair.inline(), 1, "ada", "renew")
    new = certificates.renew(store, "shop", new_pair.inline(), 1, "ada", "renew")
    assert new["fingerprint"] != old["fingerprint"] and new["row_version"] == 2
    rows = store.audit(target="certificate/shop")
    assert [r["action"] for r in rows].count("update certificate") == 1
    # the old material stays: the active version may still name it
    assert certificates.material(store)(old["fingerprint"]) is not None


def test_expiring_lists_the_soonest_first(store: Store, pki: TestPki) -> None:
    certificates.upload(store, body("late", pki.issue("a.test", days=90)), "ada", "x")
    certificates.upload(store, body("soon", pki.issue("b.test", days=20)), "ada", "x")
    certificates.upload(store, body("sooner", pki.issue("c.test", days=5)), "ada", "x")
    assert [c["name"] for c in certificates.expiring(store)] == ["sooner", "soon"]
    later = time.time() + 80 * DAY
    assert [c["name"] for c in certificates.expiring(store, now=later)] == [
        "sooner", "soon", "late"]


def content_with(store: Store, domains: list[str]) -> dict[str, list[dict]]:
    draft = store.draft()
    return {
        "cluster": [{"name": "c1"}],
        "virtual_server": [{"name": "vs", "cluster": "c1", "listen": "127.0.0.1:8443",
                            "domains": domains, "certificate": "shop"}],
        "route": [],
        "group": [],
        "certificate": draft["certificate"],
    }


def test_snapshot_carries_the_bound_pair_inline(store: Store, pki: TestPki) -> None:
    pair = pki.issue("shop.test")
    certificates.upload(store, body("shop", pair), "ada", "x")
    content = content_with(store, ["shop.test"])
    config = build_snapshot(content, "c1", 1, {}, None, certificates.material(store))
    tls = config.virtual_servers[0].tls
    assert tls is not None
    assert (tls.certificate_pem, tls.key_pem) == (pair.inline()["certificate_pem"],
                                                  pair.inline()["key_pem"])
    assert validate_content(content, {}, certificates.material(store)) == []


def test_activation_refuses_a_certificate_that_does_not_cover_a_domain(
        store: Store, pki: TestPki) -> None:
    certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "x")
    errors = validate_content(content_with(store, ["blog.test"]), {},
                              certificates.material(store))
    assert len(errors) == 1 and "blog.test is not covered" in errors[0]


def test_a_binding_to_missing_material_is_refused_not_served_plain(
        store: Store, pki: TestPki) -> None:
    certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "x")
    errors = validate_content(content_with(store, ["shop.test"]), {}, lambda fp: None)
    assert errors and "tls" in errors[0]


def test_renewal_must_cover_the_domains_of_the_virtual_servers_binding_it(
        store: Store, pki: TestPki) -> None:
    certificates.upload(store, body("shop", pki.issue("shop.test")), "ada", "x")
    store.create("cluster", "c1", {"name": "c1"}, "ada", "x")
    store.create("virtual_server", "vs", {"name": "vs", "cluster": "c1",
                                          "listen": "127.0.0.1:8443", "domains": ["shop.test"],
                                          "certificate": "shop"}, "ada", "x")
    with pytest.raises(Invalid) as caught:
        certificates.renew(store, "shop", pki.issue("blog.test").inline(), 1, "ada", "renew")
    assert caught.value.errors == [
        "virtual_server/vs.domains: shop.test is not covered by the new certificate "
        "(it names blog.test)"]
    assert store.get("certificate", "shop").row_version == 1
    assert certificates.users(store, "shop") == ["vs"]
