"""Certificates managed by the admin, seen by a real TLS client (Python ``ssl``).

An operator uploads a chain and key through the REST API, binds it to a virtual server,
activates, and the node answers TLS with that very certificate; a renewal is a draft until
activated, then the node presents the new one. The private key is never shown: every answer,
the audit log and the admin's log lines are searched for its PEM body.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_admin_says_what_happened import ui_login
from tests.support.admin import (
    HOST,
    LISTEN,
    TOKENS,
    AdminFactory,
    NodeFactory,
    admin_factory,
    applied_version,
    converge,
    node_factory,
    site_seed,
)
from tests.support.backends import Backend
from tests.support.tls import Pair, TestPki, tls_connection

__all__ = ["admin_factory", "node_factory"]  # the fixtures this module uses


def upload_body(name: str, pair: Pair, reason: str) -> dict[str, Any]:
    return {"name": name, **pair.inline(), "reason": reason}


def key_body(pair: Pair) -> str:
    """The base64 body of the pair's private key, what must never be shown."""
    lines = Path(pair.key).read_text().strip().splitlines()
    return "".join(line for line in lines if not line.startswith("-----"))


def never_shows(text: str, pair: Pair) -> None:
    body = key_body(pair)
    assert body not in text.replace("\\n", "").replace("\n", "")
    # any one line of the key would already be a leak
    for line in Path(pair.key).read_text().splitlines()[1:-1]:
        assert line not in text


async def presented(port: int, pki: TestPki) -> tuple[str, int]:
    """The sha256 fingerprint of the certificate the node presents for HOST, and the status
    of a request over that connection."""
    async with tls_connection(port, pki.client_context(), HOST) as conn:
        der = conn.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        reply = await conn.request(host=HOST)
        return hashlib.sha256(der).hexdigest(), reply.status


async def curl_result(port: int, pki: TestPki) -> str:
    """curl's view, with ``--resolve``: status, HTTP version and verification (0: verified
    against the test CA for HOST)."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--cacert", pki.ca_file, "--resolve", f"{HOST}:{port}:127.0.0.1",
        "-o", "/dev/null", "-w", "%{http_code} %{http_version} %{ssl_verify_result}",
        f"https://{HOST}:{port}/", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 0, err
    return out.decode()


async def activate(admin_client: httpx.AsyncClient, node: Any, admin: Any, reason: str) -> None:
    before = applied_version(node)
    reply = await admin_client.post("/api/v1/activate", json={"reason": reason})
    assert reply.status_code == 200, reply.text
    await converge(admin, node, after=before)


async def test_upload_bind_activate_renew_and_the_key_is_never_shown(
        backend_factory: Callable[..., Awaitable[Backend]], node_factory: NodeFactory,
        admin_factory: AdminFactory, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pki = TestPki(tmp_path)
    first, second = pki.issue(HOST), pki.issue(HOST)
    backend = await backend_factory(name="a")
    node = await node_factory("n1")
    admin = await admin_factory(seed=site_seed({"n1": node}, {"web": [backend.address]}))
    await converge(admin, node, after=0)
    ada, vera = admin.client("admin"), admin.client("viewer")
    answers: list[str] = []

    reply = await ada.post("/api/v1/certificates",
                           json=upload_body("site-cert", first, "first certificate"))
    assert reply.status_code == 201, reply.text
    answers.append(reply.text)
    shown = reply.json()
    assert shown["subject"] and shown["names"] == [HOST]
    assert "key_pem" not in shown and "certificate_pem" not in shown
    assert shown["virtual_servers"] == []

    site = (await ada.get("/api/v1/virtual-servers/site")).json()
    reply = await ada.put("/api/v1/virtual-servers/site", json={
        "cluster": "c1", "listen": LISTEN, "domains": [HOST], "default": True,
        "certificate": "site-cert", "row_version": site["row_version"], "reason": "serve TLS"})
    assert reply.status_code == 200, reply.text
    await activate(ada, node, admin, "serve TLS")

    port = node.port_of(LISTEN)
    assert await presented(port, pki) == (shown["fingerprint"], 200)
    if shutil.which("curl") is not None:  # installed by make system-deps
        assert await curl_result(port, pki) == "200 1.1 0"
    listed = (await vera.get("/api/v1/certificates")).json()["items"]
    assert [(c["name"], c["virtual_servers"]) for c in listed] == [("site-cert", ["site"])]

    # a bound certificate cannot be deleted: the answer names who binds it
    reply = await ada.delete("/api/v1/certificates/site-cert",
                             params={"row_version": 1, "reason": "tidy"})
    assert reply.status_code == 409
    assert "virtual_server/site" in reply.text

    # renewal: a draft, so the node keeps the old certificate until activation
    reply = await ada.put("/api/v1/certificates/site-cert", json={
        **second.inline(), "row_version": 1, "reason": "renewal before expiry"})
    assert reply.status_code == 200, reply.text
    renewed = reply.json()
    answers.append(reply.text)
    assert renewed["fingerprint"] != shown["fingerprint"]
    assert await presented(port, pki) == (shown["fingerprint"], 200)
    draft = await vera.get("/api/v1/draft")
    answers.append(draft.text)
    await activate(ada, node, admin, "renewal before expiry")
    assert await presented(port, pki) == (renewed["fingerprint"], 200)

    # the renewal is one audited row naming both fingerprints and the reason
    rows = (await vera.get("/api/v1/audit",
                           params={"target": "certificate/site-cert"})).json()["items"]
    renewal = [r for r in rows if r["action"] == "update certificate"]
    assert len(renewal) == 1 and renewal[0]["reason"] == "renewal before expiry"
    assert shown["fingerprint"] in str(renewal[0]["before"])
    assert renewed["fingerprint"] in str(renewal[0]["after"])

    # the expiry metric follows the renewed certificate
    metrics = await vera.get("/metrics")
    answers.append(metrics.text)
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    expiry = families["slb_admin_certificate_expiry_timestamp_seconds"]
    assert [(s.labels, s.value) for s in expiry.samples] == [
        ({"certificate": "site-cert", "subject": renewed["subject"]}, renewed["not_after"])]

    # a rollback to the version before the renewal serves the old certificate again: the
    # material of every fingerprint survives it
    before = applied_version(node)
    reply = await ada.post("/api/v1/versions/2/rollback", json={"reason": "renewal broke it"})
    assert reply.status_code == 200, reply.text
    await converge(admin, node, after=before)
    assert await presented(port, pki) == (shown["fingerprint"], 200)

    for path in ("/api/v1/certificates", "/api/v1/certificates/site-cert", "/api/v1/audit",
                 "/api/v1/versions", "/api/v1/versions/1/diff/3",
                 "/api/v1/versions/2/diff/3", "/api/v1/virtual-servers/site"):
        reply = await vera.get(path)
        assert reply.status_code == 200, path
        answers.append(reply.text)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for pair in (first, second):
        for text in (*answers, logged):
            never_shows(text, pair)


async def test_invalid_uploads_are_refused_with_the_field_at_fault(
        node_factory: NodeFactory, admin_factory: AdminFactory, tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    good, other = pki.issue(HOST), pki.issue("other.test")
    expired = pki.issue(HOST, expired=True)
    admin = await admin_factory(seed={"clusters": [{"name": "c1"}]})
    ada = admin.client("admin")
    cases = {
        "the key does not match": ({**good.inline(), "key_pem": other.inline()["key_pem"]},
                                   "key_pem: the key does not match the certificate"),
        "expired": (expired.inline(), "certificate_pem: "),
        "not PEM": ({**good.inline(), "certificate_pem": "hello"},
                    "certificate_pem: not a PEM certificate chain"),
        "no key": ({"certificate_pem": good.inline()["certificate_pem"]}, "key_pem: required"),
    }
    for case, (body, error) in cases.items():
        reply = await ada.post("/api/v1/certificates",
                               json={"name": "c", **body, "reason": case})
        assert reply.status_code == 400, case
        assert any(e.startswith(error) for e in reply.json()["details"]), (case, reply.text)
        never_shows(reply.text, good)
        never_shows(reply.text, other)
    assert (await ada.get("/api/v1/certificates")).json()["items"] == []


async def test_the_pages_upload_renew_and_warn_of_expiry_without_showing_the_key(
        node_factory: NodeFactory, admin_factory: AdminFactory, tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    soon, later, renewal = pki.issue("soon.test", days=20), pki.issue("later.test"), \
        pki.issue("soon.test", days=90)
    admin = await admin_factory(seed={"clusters": [{"name": "c1"}]})
    pages: list[str] = []
    async with httpx.AsyncClient(base_url=admin.url) as browser:
        cookie = {"Cookie": await ui_login(browser, TOKENS["admin"])}

        async def page(path: str) -> str:
            reply = await browser.get(path, headers=cookie)
            assert reply.status_code == 200, path
            pages.append(reply.text)
            return reply.text

        async def post(path: str, data: dict[str, str]) -> httpx.Response:
            # what a browser sends: the form's hidden fields (csrf, row_version), then ours
            hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                                     pages[-1]))
            assert "csrf" in hidden
            reply = await browser.post(path, headers=cookie, data={**hidden, **data})
            pages.append(reply.text)
            return reply

        await page("/ui/certificates")
        for name, pair in (("soon", soon), ("later", later)):
            done = await post("/ui/certificates", {"name": name, **pair.inline(),
                                                   "reason": "upload"})
            assert done.status_code == 303
            await page("/ui/certificates")
        assert "soon.test" in pages[-1] and "later.test" in pages[-1]

        # a key of another certificate: the form again, with the problem, without the key
        refused = await post("/ui/certificates", {
            "name": "bad", "certificate_pem": soon.inline()["certificate_pem"],
            "key_pem": later.inline()["key_pem"], "reason": "oops"})
        assert refused.status_code == 400
        assert "the key does not match the certificate" in refused.text

        overview = await page("/ui/")
        expiring = overview.split("Certificates expiring within 30 days", 1)[1]
        assert ">soon</a>" in expiring and ">later</a>" not in expiring

        await page("/ui/certificates/soon/renew")
        done = await post("/ui/certificates/soon/renew", {**renewal.inline(),
                                                          "reason": "renewal"})
        assert done.status_code == 303
        overview = await page("/ui/")
        assert ">soon</a>" not in overview.split("Certificates expiring within 30 days", 1)[1]
        await page("/ui/audit")
    for pair in (soon, later, renewal):
        for text in pages:
            never_shows(text, pair)
