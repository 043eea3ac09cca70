"""Live traffic charts in headless Chromium: drawn by uPlot, served by the admin, updating.

A real admin (sampling every second) and an admin-managed node with backends ``a`` and ``b`` in
group ``web``. The charts must draw from the admin's own assets (no network beyond it), show
each member as its own line, and grow as the sampler adds points, without a reload.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.support.admin import (
    SiteFactory,
    admin_factory,
    node_factory,
    served_by,
    site_factory,
)
from tests.support.browser import Browser, browser
from tests.support.browser_site import BrowserSite

# the fixtures this module uses
__all__ = ["admin_factory", "browser", "node_factory", "site_factory"]

Site = BrowserSite


@pytest.fixture
async def site(site_factory: SiteFactory, browser: Browser) -> Site:
    site: Site = await site_factory({"web": ["a", "b"]}, make=partial(Site, browser=browser),
                                    stats={"interval": 1, "window": 120})
    return site


def points(chart: str) -> Callable[[WebDriver], int]:
    """How many points the chart drew last (0 until it has drawn)."""
    def read(driver: WebDriver) -> int:
        slot = driver.find_element(By.CSS_SELECTOR, f'[data-chart="{chart}"]')
        drawn = slot.get_attribute("data-points")
        return int(drawn) if drawn and slot.find_elements(By.CSS_SELECTOR, "canvas") else 0
    return read


async def test_group_charts_draw_each_member_and_update_without_reloading(site: Site) -> None:
    browser = site.browser
    await served_by(site.node, 4)
    await site.login("viewer")
    await site.open("/ui/groups/web")
    await browser.wait_for(lambda d: points("rates")(d) >= 1, timeout=15.0,
                           what="the rates chart to draw")
    await browser.script("window.notReloaded = true;")
    first = await browser.call(points("rates"), browser.driver)

    for _ in range(40):  # keep traffic flowing while the sampler ticks
        await served_by(site.node, 4)
        if await browser.call(lambda d: points("rates")(d) > first + 1, browser.driver):
            break
    await browser.wait_for(lambda d: points("rates")(d) > first + 1, timeout=10.0,
                           what="the charts to gain points")
    assert await browser.script("return window.notReloaded === true;")

    await browser.wait_for(lambda d: points("members")(d) >= 1, what="the members chart")
    legend = await browser.texts('[data-chart="members"] .u-legend .u-label')
    assert {site.a.address, site.b.address} <= set(legend)
    assert await browser.exists('[data-chart="latency"] canvas')
    served = await browser.script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => n.includes('uPlot'));")
    assert served and all(n.startswith(site.admin.url) for n in served)  # no CDN
    await browser.screenshot("group-traffic.png")


async def test_overview_draws_the_site_and_each_cluster(site: Site) -> None:
    browser = site.browser
    await served_by(site.node, 4)
    await site.login("viewer")
    await site.open("/ui/")
    for scope in ("site", "cluster-c1"):
        await browser.wait_for(
            lambda d, s=scope: d.find_elements(By.CSS_SELECTOR, f"#traffic-{s} canvas"),
            timeout=10.0, what=f"the {scope} chart")
    await browser.screenshot("overview-traffic.png")
