"""The site every web UI test drives: an admin, node ``n1``, backends, and a logged-in browser.

One place for what the UI tests share (open a page, log in as a role, pick an option), so each
test module adds only what its pages need.
"""

from __future__ import annotations

from dataclasses import dataclass

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.support.admin import TOKENS, NodeSite
from tests.support.browser import Browser


@dataclass
class BrowserSite(NodeSite):
    browser: Browser

    def url(self, path: str) -> str:
        return f"{self.admin.url}{path}"

    async def open(self, path: str) -> None:
        await self.browser.open(self.url(path))

    async def login(self, role: str) -> None:
        """A fresh browser session (cookies forgotten) logged in with ``role``'s token."""
        await self.browser.reset()
        await self.open("/ui/login")
        await self.browser.fill("#token", TOKENS[role])
        await self.browser.click("#login")
        await self.browser.wait_for(lambda d: d.find_elements(By.ID, "whoami"),
                                    what="the logged-in header")

    async def select(self, css: str, value: str) -> None:
        await self.browser.call(
            lambda: Select(self.browser.driver.find_element(By.CSS_SELECTOR, css))
            .select_by_value(value))
