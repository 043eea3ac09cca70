"""Load-time TLS checks: each bad certificate or setting is one clear error with its field path,
and nothing of the configuration is accepted; a certificate near its end is a warning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from slb.cli import check
from slb.model import ConfigErrors, parse_config, tls_problems
from slb.model.schema import KEY_WITHHELD
from tests.support.tls import Pair, TestPki


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path)


def config(*servers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"virtual_servers": list(servers),
            "groups": [{"name": "g", "members": [{"address": "127.0.0.1:9"}]}], **extra}


def server(tls: dict[str, str] | None, domains: list[str] | None = None,
           listen: str = "127.0.0.1:8443", name: str = "shop") -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "listen": listen,
                             "domains": domains or ["shop.example.com"],
                             "routes": [{"path": "/", "group": "g"}]}
    if tls is not None:
        entry["tls"] = tls
    return entry


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        parse_config(data)
    return caught.value.lines()


def test_a_matching_pair_loads_from_files_and_inline(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com", "*.shop.example.com")
    domains = ["shop.example.com", "*.shop.example.com", "a.shop.example.com"]
    parse_config(config(server(pair.tls(), domains)))
    parse_config(config(server(pair.inline(), domains)))


def test_an_unreadable_file_names_its_field(pki: TestPki, tmp_path: Path) -> None:
    pair = pki.issue("shop.example.com")
    missing = str(tmp_path / "nope.pem")
    assert errors_of(config(server({"certificate": missing, "key": pair.key}))) == [
        f"virtual_servers[0].tls.certificate: cannot read {missing}: No such file or directory"]


def test_a_key_of_another_certificate_is_refused(pki: TestPki) -> None:
    one, other = pki.issue("shop.example.com"), pki.issue("shop.example.com")
    assert errors_of(config(server({"certificate": one.certificate, "key": other.key}))) == [
        "virtual_servers[0].tls.key: the key does not match the certificate"]


def test_an_expired_certificate_is_refused(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com", expired=True)
    [line] = errors_of(config(server(pair.tls())))
    assert line.startswith("virtual_servers[0].tls.certificate: certificate ")
    assert "expired on" in line


def test_a_certificate_expiring_within_14_days_is_a_warning(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com", days=5)
    loaded = parse_config(config(server(pair.tls())))
    errors, warnings = tls_problems(loaded)
    assert errors == []
    [(where, message)] = warnings
    assert where == ("virtual_servers", 0, "tls", "certificate") and "expires on" in message


def test_a_domain_its_certificate_does_not_cover_is_refused(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com", "*.shop.example.com")
    lines = errors_of(config(server(pair.tls(), [
        "shop.example.com", "blog.example.com", "a.b.shop.example.com", "*.example.com"])))
    assert [line.split(":")[0] for line in lines] == [
        "virtual_servers[0].domains[1]", "virtual_servers[0].domains[2]",
        "virtual_servers[0].domains[3]"]
    assert "blog.example.com is not covered by the certificate of 'shop'" in lines[0]


def test_one_address_cannot_be_both_tls_and_plain(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com", "b.test")
    assert errors_of(config(server(pair.tls()), server(None, ["b.test"], name="plain"))) == [
        "virtual_servers[1].tls: 127.0.0.1:8443 is served with TLS by 'shop': one address "
        "cannot be both"]


def test_a_chain_out_of_order_is_refused(pki: TestPki) -> None:
    pair = pki.issue("shop.example.com")
    reversed_chain = Path(pair.certificate).parent / "reversed.pem"
    reversed_chain.write_bytes(pki.ca.cert_pem.bytes() + Path(pair.certificate).read_bytes())
    [line] = errors_of(config(server({"certificate": str(reversed_chain), "key": pair.key})))
    assert line.startswith("virtual_servers[0].tls.certificate: the chain is out of order")


@pytest.mark.parametrize(("tls", "message"), [
    ({"certificate": "a.pem"}, "virtual_servers[0].tls: certificate and key (or certificate_pem "
                               "and key_pem) are required"),
    ({"certificate": "a.pem", "key": "k.pem", "key_pem": "x"},
     "virtual_servers[0].tls: give either certificate and key (files) or certificate_pem and "
     "key_pem (inline), not both"),
    ({"certificate_pem": "not pem", "key_pem": "not pem"},
     "virtual_servers[0].tls.certificate_pem: not a PEM certificate chain"),
])
def test_malformed_tls_entries(tls: dict[str, str], message: str) -> None:
    assert errors_of(config(server(tls))) == [message]


@pytest.mark.parametrize(("settings", "message"), [
    ({"min_version": "1.0"}, "tls.min_version: Input should be '1.2' or '1.3'"),
    ({"ciphers": "NOPE"}, "tls.ciphers: no cipher matches the OpenSSL cipher string 'NOPE'"),
    ({"handshake_timeout": 0}, "tls.handshake_timeout: Input should be greater than 0"),
])
def test_bad_node_tls_settings(settings: dict[str, Any], message: str) -> None:
    assert errors_of(config(tls=settings)) == [message]


def test_an_unreadable_upstream_ca_names_its_field(tmp_path: Path) -> None:
    data = config()
    data["groups"][0]["upstream_tls"] = {"enabled": True, "ca": str(tmp_path / "ca.pem")}
    [line] = errors_of(data)
    assert line.startswith("groups[0].upstream_tls.ca: cannot read ")


def test_the_public_view_withholds_the_private_key(pki: TestPki) -> None:
    pair: Pair = pki.issue("shop.example.com")
    loaded = parse_config(config(server(pair.inline())))
    shown = loaded.public_json()["virtual_servers"][0]["tls"]
    assert shown["key_pem"] == KEY_WITHHELD
    assert "PRIVATE KEY" not in repr(loaded)
    assert "PRIVATE KEY" in loaded.to_json()["virtual_servers"][0]["tls"]["key_pem"]  # pushed


def test_slb_check_prints_the_error_and_the_warning(pki: TestPki, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import json

    soon = pki.issue("shop.example.com", days=3)
    path = tmp_path / "slb.json"
    path.write_text(json.dumps(config(server(soon.tls()))))
    assert check(str(path)) == 0
    assert "warning: virtual_servers[0].tls.certificate: certificate" in capsys.readouterr().err
    path.write_text(json.dumps(config(server({"certificate": soon.certificate,
                                              "key": pki.issue("x.test").key}))))
    assert check(str(path)) == 1
    err = capsys.readouterr().err
    assert "virtual_servers[0].tls.key: the key does not match the certificate" in err
    assert "Traceback" not in err
