"""The admin's web UI in headless Chromium, against a real admin, a real proxy node and backends.

The admin runs in-process (uvicorn on 127.0.0.1, tmp SQLite store, tokens ``vera`` viewer,
``otto`` operator, ``ada`` admin) and pushes to an admin-managed node; backends ``a`` and ``b``
answer with their own name, so what an operator does in the browser is checked on the traffic
the node forwards. One Chromium serves the whole module; each test logs in afresh.

Screenshots of the overview and of a group page are saved to ``artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.admin import (
    TOKENS,
    SiteFactory,
    admin_factory,
    applied_version,
    node_factory,
    served_by,
    site_factory,
    wait_until,
)
from tests.support.browser import Browser, browser
from tests.support.browser_site import BrowserSite

# the fixtures this module uses
__all__ = ["admin_factory", "browser", "node_factory", "site_factory"]

@dataclass
class Site(BrowserSite):
    """Group ``web`` (backends a, b) on ``/`` and group ``api`` (b) on ``/api/``, node n1."""

    async def submit_version_change(self, reason_field: str, reason: str, button: str,
                                    confirmation: str) -> None:
        """Give the reason, press ``button``, see ``confirmation`` and wait until the node
        applied the new version."""
        async with self.node_applies():
            await self.browser.fill(reason_field, reason)
            await self.browser.click(button)
            await self.browser.wait_text(".flash-ok", confirmation)

    async def audit(self, **params: Any) -> list[dict[str, Any]]:
        reply = await self.viewer.get("/api/v1/audit", params=params)
        return list(reply.json()["items"])


@pytest.fixture
async def site(site_factory: SiteFactory, browser: Browser) -> Site:
    site: Site = await site_factory({"web": ["a", "b"], "api": ["b"]},
                                    {"/": "web", "/api/": "api"},
                                    make=partial(Site, browser=browser))
    return site


def row(address: str) -> str:
    """CSS for a member's row on the group page."""
    return f'tr[data-row="{address}"]'


def live_requests(address: str) -> Callable[[WebDriver], int | None]:
    """The member's ``Requests`` cell as a number, once the page has filled it in."""
    def read(driver: WebDriver) -> int | None:
        text = driver.find_element(By.CSS_SELECTOR,
                                   f'{row(address)} [data-live="requests"]').text
        return int(text) if text.isdigit() else None
    return read


# -- logging in -------------------------------------------------------------------------------


async def test_wrong_token_is_shown_on_the_login_page_and_right_one_opens_overview(
        site: Site) -> None:
    browser = site.browser
    await browser.reset()
    await site.open("/")
    assert (await browser.url()).startswith(site.url("/ui/login"))
    await browser.fill("#token", "not-the-token-at-all")
    await browser.click("#login")
    await browser.wait_for(lambda d: d.find_elements(By.ID, "error"), what="the error")
    assert "not valid" in await browser.text("#error")
    assert await browser.exists("#token"), "the login form is shown again"
    assert await browser.cookie("slb_session") is None

    await browser.fill("#token", TOKENS["operator"])
    await browser.click("#login")
    await browser.wait_text("#whoami", "otto")
    assert "operator" in await browser.text("#whoami")
    assert await browser.text("h1") == "Overview"
    cookie = await browser.cookie("slb_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is True  # Chrome keeps Secure cookies on http://127.0.0.1
    # the node has applied the seed: its row says so
    node_row = 'tr[data-row="c1/n1"]'
    await browser.wait_text(f'{node_row} [data-live="sync"]', "in sync")
    applied = await browser.text(f'{node_row} [data-live="applied"]')
    assert applied == str(applied_version(site.node))
    assert "all up" in await browser.text(".cards")
    await browser.screenshot("ui-overview.png")

    await browser.click("#logout")
    await browser.wait_for(lambda d: d.find_elements(By.ID, "token"), what="the login page")
    await site.open("/ui/groups")
    assert (await browser.url()).startswith(site.url("/ui/login")), "logged out"


# -- pulling a member out ---------------------------------------------------------------------


async def test_operator_pulls_member_out_with_reason_traffic_stops_and_audit_shows_it(
        site: Site) -> None:
    browser, b = site.browser, site.b.address
    assert set(await served_by(site.node, 4)) == {"a", "b"}
    await site.login("operator")
    await site.open("/ui/groups/web")
    assert (await browser.text(f'{row(b)} [data-live="state"]')) == "up"
    served = await browser.wait_for(live_requests(b), what="live figures of b")
    assert served >= 2

    await browser.click(f'{row(b)} .actions a.btn.danger[href*="pull-out"]')
    await browser.wait_for(lambda d: d.find_elements(By.ID, "act-form"), what="the form")
    assert "Pull out" in await browser.text("h1")
    await browser.fill("#reason", "release 42 of web")
    await browser.click("#confirm")
    await browser.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash-ok"),
                           what="the confirmation")
    assert "Pull out" in await browser.text(".flash-ok")
    assert await browser.text(f'{row(b)} [data-live="state"]') == "drain"
    pull = f'{row(b)} td.flag[data-flag="pull"]'
    assert await browser.exists(f"{pull}.held"), "the flag holding b out is highlighted"
    pull_text = await browser.text(pull)
    assert "out" in pull_text and "otto" in pull_text and "release 42 of web" in pull_text
    assert await browser.text(f'{row(site.a.address)} [data-live="state"]') == "up"

    # the node stops sending b new requests
    async def only_a() -> bool:
        return set(await served_by(site.node, 4)) == {"a"}
    await wait_until(only_a, what="traffic to leave b")
    await browser.wait_for(live_requests(b), what="live figures after the change")
    await browser.screenshot("ui-group.png")

    await site.open("/ui/audit")
    entries = await browser.texts("#audit tbody tr")
    mine = [e for e in entries if f"member/web/{b}" in e]
    assert len(mine) == 1, entries
    assert "member pull-out" in mine[0] and "otto" in mine[0]
    assert "release 42 of web" in mine[0]


async def test_operator_pulls_a_selection_of_members_out_in_one_go(site: Site) -> None:
    browser, a, b = site.browser, site.a.address, site.b.address
    await site.login("operator")
    await site.open("/ui/groups/web")
    bar = '#selection-bar button[value="pull-out"]'
    assert not await browser.call(lambda: browser.driver.find_element(
        By.CSS_SELECTOR, bar).is_enabled()), "nothing selected yet"
    await browser.click("#select-all")
    assert await browser.call(lambda: browser.driver.find_element(
        By.CSS_SELECTOR, bar).is_enabled())
    await browser.click(bar)
    await browser.wait_for(lambda d: d.find_elements(By.ID, "act-form"), what="the form")
    assert "2 members of web" in await browser.text("h1")
    await browser.fill("#reason", "whole group to maintenance")
    await browser.click("#confirm")
    # the whole group: refused until the operator says so, naming the effect
    await browser.wait_for(lambda d: d.find_elements(By.ID, "error"), what="the refusal")
    assert "503" in await browser.text("#error")
    assert await site.audit(target="member/web/") == []
    await browser.click("#force")
    await browser.click("#confirm")
    await browser.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash-ok"),
                           what="the confirmation")
    # and what every node did: the change is applied before the page answers
    assert "Applied by every node: n1" in await browser.text("main")
    for address in (a, b):
        assert await browser.text(f'{row(address)} [data-live="state"]') == "drain"
        # beside the desired state, what the node applies (from its status, polled live)
        await browser.wait_for(lambda d, address=address: d.find_element(
            By.CSS_SELECTOR, f'{row(address)} [data-live="applied"]').text
            == "drain on all 1", what="the node's state")
    assert "none up" in await browser.text("h1")
    entries = await site.audit(target="member/web/")
    assert sorted(e["target"] for e in entries) == sorted([f"member/web/{a}", f"member/web/{b}"])
    assert all(e["reason"] == "whole group to maintenance" for e in entries)


async def test_group_list_searches_by_name_and_member_address(site: Site) -> None:
    browser = site.browser
    await site.login("viewer")
    await site.open("/ui/groups")
    names = "#groups tbody tr td:first-child a"
    assert await browser.texts(names) == ["api", "web"]
    await browser.fill("#q", "ap")  # filters as you type
    visible = await browser.call(lambda: [
        e.text for e in browser.driver.find_elements(By.CSS_SELECTOR, names)
        if e.is_displayed()])
    assert visible == ["api"]
    await site.open("/ui/groups?" + urlencode({"q": site.a.address}))  # a is only in web
    assert await browser.texts(names) == ["web"]
    assert "all up" in await browser.text("#groups")


async def test_group_page_updates_live_figures_without_reloading(site: Site) -> None:
    browser, a, b = site.browser, site.a.address, site.b.address

    def total(driver: WebDriver) -> int | None:
        counts = [live_requests(a)(driver), live_requests(b)(driver)]
        return None if None in counts else sum(c or 0 for c in counts)

    await site.login("viewer")
    await site.open("/ui/groups/web")
    await browser.wait_for(lambda d: total(d) is not None, what="live figures")
    before = await browser.call(total, browser.driver)
    assert before is not None
    await browser.script("window.notReloaded = true;")
    await served_by(site.node, 6)
    await browser.wait_for(lambda d: (total(d) or 0) >= before + 6,
                           what="the request counts to grow")
    assert await browser.script("return window.notReloaded === true;")
    assert "1 of 1 node" in await browser.text("#live-note")


# -- roles and CSRF ---------------------------------------------------------------------------


async def test_viewer_sees_no_action_buttons(site: Site) -> None:
    browser = site.browser
    await site.login("viewer")

    async def post_forms() -> list[str | None]:
        forms = await browser.find_all('form[method="post"]')
        return [await browser.call(f.get_attribute, "action") for f in forms]

    await site.open("/ui/groups/web")
    assert (await browser.text("h1")).split() == ["Group", "web", "all", "up"]
    assert await browser.exists(row(site.a.address))
    for css in ("#selection-bar", 'input[name="address"]', ".actions", "a.btn", "button.danger"):
        assert not await browser.exists(css), css
    assert await post_forms() == [site.url("/ui/logout")]

    await site.open("/ui/versions")
    assert await browser.exists("#versions")
    assert not await browser.exists("#activate-form")
    assert not await browser.exists('a[href*="/rollback"]')
    assert await post_forms() == [site.url("/ui/logout")]

    # going to an action's address directly is refused on the page
    await site.open("/ui/groups/web/act?" + urlencode({"op": "pull-out",
                                                       "address": site.a.address}))
    assert await browser.text("h1") == "Not allowed"
    assert not await browser.exists("#act-form")

    # and so is a post with the viewer's own valid CSRF token: the role is checked on the server
    token = await browser.attribute('input[name="csrf"]', "value")
    cookie = await browser.cookie("slb_session")
    assert token and cookie
    async with httpx.AsyncClient(base_url=site.admin.url,
                                 cookies={"slb_session": cookie["value"]}) as client:
        reply = await client.post("/ui/groups/web/act", data={
            "csrf": token, "op": "pull-out", "address": site.a.address, "reason": "try"})
        assert reply.status_code == 403
        assert "viewer" in reply.text
        reply = await client.post("/ui/versions/activate", data={"csrf": token,
                                                                  "reason": "try"})
        assert reply.status_code == 403
    assert (await site.member("web", site.a.address))["state"] == "up"
    assert [v["version"] for v in (await site.admin.client("viewer").get(
        "/api/v1/versions")).json()["versions"]] == [1]


async def test_post_without_csrf_token_is_refused_and_changes_nothing(site: Site) -> None:
    browser, b = site.browser, site.b.address
    await site.login("operator")
    await site.open("/ui/groups/web/act?" + urlencode({"op": "pull-out", "address": b}))
    token = await browser.attribute('#act-form input[name="csrf"]', "value")
    cookie = await browser.cookie("slb_session")
    assert token and cookie
    form = {"op": "pull-out", "address": b, "reason": "forged"}
    async with httpx.AsyncClient(base_url=site.admin.url,
                                 cookies={"slb_session": cookie["value"]}) as client:
        for sent in (form, {**form, "csrf": "not-the-token"}):
            reply = await client.post("/ui/groups/web/act", data=sent)
            assert reply.status_code == 403, reply.text
            assert reply.headers["content-type"].startswith("text/html")
            assert "CSRF" in reply.text
        assert (await site.member("web", b))["state"] == "up"
        assert not await site.audit(target=f"member/web/{b}")
        assert set(await served_by(site.node, 4)) == {"a", "b"}
        # the same post with the page's token is accepted: the refusal was the token
        reply = await client.post("/ui/groups/web/act", data={**form, "csrf": token})
        assert reply.status_code == 303
    assert (await site.member("web", b))["state"] == "drain"


async def test_errors_are_shown_on_the_page_not_as_json(site: Site) -> None:
    browser = site.browser
    await site.login("operator")
    await site.open("/ui/groups/web/act?" + urlencode({"op": "down",
                                                       "address": site.a.address}))
    await browser.script("document.getElementById('reason').removeAttribute('required');")
    await browser.click("#confirm")
    await browser.wait_for(lambda d: d.find_elements(By.ID, "error"), what="the error")
    assert "a reason is required" in await browser.text("#error")
    assert await browser.exists("#act-form"), "the form is shown again to fix it"
    assert (await site.member("web", site.a.address))["state"] == "up"

    await site.open("/ui/groups/no-such-group")
    assert "no group named 'no-such-group'" in await browser.text("#error")
    assert await browser.exists("#whoami"), "an HTML page with the navigation, not JSON"
    for path, title in (("/ui/no-such-page", "Not found"),
                        ("/ui/versions/first/rollback", "Bad request")):
        await site.open(path)
        assert await browser.text("h1") == title, path
        assert await browser.exists("#error"), path


# -- versions ---------------------------------------------------------------------------------


async def test_admin_edits_weight_activates_and_rolls_back(site: Site) -> None:
    browser, a = site.browser, site.a.address
    node = site.node
    await site.login("admin")
    await site.open("/ui/groups/web")
    await browser.click(f'{row(a)} .actions a[href*="op=weight"]')
    await browser.fill("#weight", "7")
    await browser.fill("#reason", "a has twice the cores")
    await browser.click("#confirm")
    await browser.wait_for(lambda d: d.find_elements(By.CSS_SELECTOR, ".flash-ok"),
                           what="the confirmation")
    assert "activated" in await browser.text(".flash-ok")
    assert await browser.exists("#draft-banner")
    assert "→ 7 in draft" in await browser.text(row(a))
    assert node.member("web", a).weight == 1, "a draft edit changes nothing yet"

    await site.open("/ui/versions")
    pending = await browser.text("#draft")
    assert "1 change" in pending and "web" in pending
    assert any('"weight": 7' in t for t in await browser.texts("#draft pre.diff .add"))
    await site.submit_version_change("#activate-reason", "more weight for a", "#activate",
                                     "Version 2 is active")
    assert node.member("web", a).weight == 7
    assert not await browser.exists("#draft-banner")
    assert "active" in await browser.text('tr[data-version="2"]')

    await browser.click('tr[data-version="1"] a[href$="/versions/1/rollback"]')
    await browser.wait_for(lambda d: d.find_elements(By.ID, "rollback-form"), what="the form")
    assert any('"weight": 1' in t for t in await browser.texts("pre.diff .add"))
    await site.submit_version_change("#reason", "weight 7 overloads a", "#rollback",
                                     "Version 3 is active")
    assert node.member("web", a).weight == 1
    version3 = await browser.text('tr[data-version="3"]')
    assert "rollback to 1" in version3 and "weight 7 overloads a" in version3


# -- which group serves a URL -----------------------------------------------------------------


async def test_url_tool_names_the_virtual_server_route_and_group(site: Site) -> None:
    browser = site.browser
    await site.login("viewer")
    await site.open("/ui/route")
    cases = [("http://site.test/api/cart?id=1", "api", "/api/"),
             ("site.test/index.html", "web", "/"),
             ("http://elsewhere.test/api/x", "api", "/api/")]
    backends = {"api": {"b"}, "web": {"a", "b"}}
    for url, group, path in cases:
        await browser.fill("#url", url)
        await browser.click("#find")
        # the previous answer is on the page until the new one loads: wait for this URL's
        asked = urlencode({"url": url})
        await browser.wait_for(lambda d, asked=asked: asked in d.current_url
                               and d.find_elements(By.CSS_SELECTOR, ".answer"),
                               what="the answer")
        assert await browser.text(".answer-vs") == "site", url
        assert await browser.text(".answer-group") == group, url
        assert path in await browser.text(".answer-route"), url
        # the proxy itself agrees
        host = url.split("://")[-1].split("/")[0]
        assert set(await served_by(site.node, 4, path=path + "x", host=host)) \
            == backends[group], url
    assert "default virtual server" in await browser.text(".answer")


# -- audit log --------------------------------------------------------------------------------


async def test_audit_log_filters_by_user_target_and_time(site: Site) -> None:
    browser, a, b = site.browser, site.a.address, site.b.address
    operator, ada = site.admin.client("operator"), site.admin.client("admin")
    start = time.time()
    assert (await operator.post(f"/api/v1/groups/web/members/{b}/pull-out",
                                json={"reason": "release 7"})).status_code == 200
    assert (await ada.post(f"/api/v1/groups/api/members/{b}/down",  # api's only member
                           json={"reason": "disk full", "force": True})).status_code == 200
    assert (await ada.post(f"/api/v1/groups/web/members/{a}/down",  # web's last one up
                           json={"reason": "kernel update", "force": True})).status_code == 200
    await site.login("viewer")
    await site.open("/ui/audit")
    everything = await browser.texts("#audit tbody tr")
    assert any("release 7" in t for t in everything) and any("disk full" in t for t in everything)

    await browser.call(lambda: browser.driver.find_element(
        By.CSS_SELECTOR, '#filter-who option[value="ada"]').click())
    await browser.click("#filter")
    await browser.wait_for(lambda d: "who=ada" in d.current_url, what="the filter")
    rows = await browser.texts("#audit tbody tr")
    for reason in ("disk full", "kernel update"):
        assert any(reason in t for t in rows), reason
    assert not any("release 7" in t for t in rows)
    assert all(" ada " in f" {t} " for t in rows)

    await browser.fill("#filter-target", "member/web/")
    await browser.click("#filter")
    await browser.wait_for(lambda d: "target=member" in d.current_url, what="the filter")
    rows = await browser.texts("#audit tbody tr")
    assert len(rows) == 1 and "kernel update" in rows[0], rows

    since = time.strftime("%Y-%m-%dT%H:%M", time.localtime(start + 120))
    await site.open("/ui/audit?" + urlencode({"since": since}))
    assert not await browser.exists("#audit")
    assert "No entries" in await browser.text("main")
    until = time.strftime("%Y-%m-%dT%H:%M", time.localtime(start - 120))
    await site.open("/ui/audit?" + urlencode({"until": until}))
    assert not await browser.exists("#audit")
