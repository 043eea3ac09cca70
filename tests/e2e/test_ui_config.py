"""Configuration edited in the browser (headless Chromium): drafts, errors by their field.

A real admin pushes to an admin-managed node; group ``web`` (backend ``a``) serves ``/`` of the
virtual server ``site`` and group ``api`` (backend ``b``) serves nothing yet. What the browser
does is checked on the traffic the node forwards.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By

from tests.support.admin import (
    HOST,
    LISTEN,
    SiteFactory,
    admin_factory,
    node_factory,
    served_by,
    site_factory,
)
from tests.support.browser import Browser, browser
from tests.support.browser_site import BrowserSite
from tests.support.tls import TestPki, tls_connection

# the fixtures this module uses
__all__ = ["admin_factory", "browser", "node_factory", "site_factory"]

Site = BrowserSite


@pytest.fixture
async def site(site_factory: SiteFactory, browser: Browser) -> Site:
    site: Site = await site_factory({"web": ["a"], "api": ["b"]}, {"/": "web"},
                                    make=partial(Site, browser=browser))
    return site


async def test_a_route_is_created_with_inline_validation_and_activated(site: Site) -> None:
    browser = site.browser
    await site.login("admin")
    await site.open("/ui/virtual-servers/site")
    await browser.click("#new-route")
    await browser.fill("#name", "to-api")
    await site.select("#virtual_server", "site")
    await browser.fill("#path", "api")  # not a path: refused next to the field
    await site.select("#group", "api")
    await browser.fill("#priority", "10")
    await browser.fill("#reason", "api gets its own group")
    await browser.click("#save")
    await browser.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-field="path"]'),
                           what="the error next to the path")
    assert "must start with '/'" in await browser.text('[data-field="path"]')
    assert await browser.attribute("#path", "value") == "api"  # what was typed is kept

    await browser.fill("#path", "/api/")
    await browser.click("#save")
    await browser.wait_text(".flash-ok", "to-api is in the draft")
    assert await served_by(site.node, count=1, path="/api/x") == ["a"]  # a draft only

    assert "to-api" in await browser.text("#draft")  # the versions page shows the diff
    async with site.node_applies():
        await browser.fill("#activate-reason", "route /api/ to api")
        await browser.click("#activate")
        await browser.wait_text(".flash-ok", "is active")
    assert await served_by(site.node, count=2, path="/api/x") == ["b", "b"]
    assert await served_by(site.node, count=1, path="/") == ["a"]


async def test_deleting_a_group_a_route_uses_is_refused_naming_the_route(site: Site) -> None:
    browser = site.browser
    await site.login("admin")
    await site.open("/ui/groups/web")
    await browser.click("#edit-group")
    await browser.fill("#delete-reason", "no longer needed")
    await browser.click("#delete")
    await browser.wait_for(lambda d: d.find_elements(By.ID, "error"), what="the refusal")
    assert "still used by route/r0" in await browser.text("#error")



async def test_a_certificate_is_bound_to_a_virtual_server_in_its_form_and_served(
        site: Site, tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    pair = pki.issue(HOST)
    reply = await site.ada.post("/api/v1/certificates", json={
        "name": "site-cert", **pair.inline(), "reason": "the site's certificate"})
    assert reply.status_code == 201, reply.text
    browser = site.browser
    await site.login("admin")
    await site.open("/ui/virtual-servers/site")
    await browser.click("#edit-virtual-server")
    await site.select("#certificate", "site-cert")
    await browser.fill("#reason", "serve TLS")
    await browser.click("#save")
    await browser.wait_text(".flash-ok", "site is changed in the draft")
    assert (await site.ada.get("/api/v1/virtual-servers/site")).json()["certificate"] == \
        "site-cert"
    async with site.node_applies():
        await site.open("/ui/versions")
        await browser.fill("#activate-reason", "serve TLS")
        await browser.click("#activate")
        await browser.wait_text(".flash-ok", "is active")

    async with tls_connection(site.node.port_of(LISTEN), pki.client_context(), HOST) as conn:
        reply = await conn.request(host=HOST)
        assert reply.status == 200
        assert conn.writer.get_extra_info("ssl_object").getpeercert()["subjectAltName"] == \
            (("DNS", HOST),)
