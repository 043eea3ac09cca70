"""Headless Chromium driven by Selenium, for the web UI tests.

Debian's ``chromium`` and ``chromium-driver`` (``make system-deps``) with Selenium from PyPI,
offline (no Selenium Manager download). ``Browser`` wraps the blocking WebDriver calls in
``asyncio.to_thread``: the admin, the proxy nodes and the backends run on the test's event loop,
which must keep serving while the browser waits for a page.

Use the module-scoped ``browser`` fixture (one Chromium per test module; ``await
browser.reset()`` at the start of a test forgets cookies so tests stay independent).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-quic", "--window-size=1280,800")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

T = TypeVar("T")


def start_chromium(profile: str) -> WebDriver:
    os.environ.setdefault("SE_OFFLINE", "true")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


class Browser:
    """Async facade over a WebDriver: every call runs in a worker thread."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def reset(self) -> None:
        """Forget every cookie (sessions of earlier tests) and leave the current page."""
        await self.call(self.driver.get, "about:blank")
        await self.call(self.driver.delete_all_cookies)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def url(self) -> str:
        return await self.call(lambda: self.driver.current_url)

    async def find(self, css: str) -> WebElement:
        return await self.call(self.driver.find_element, By.CSS_SELECTOR, css)

    async def find_all(self, css: str) -> list[WebElement]:
        return await self.call(self.driver.find_elements, By.CSS_SELECTOR, css)

    async def exists(self, css: str) -> bool:
        return bool(await self.find_all(css))

    async def text(self, css: str = "body") -> str:
        return await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text)

    async def texts(self, css: str) -> list[str]:
        return await self.call(lambda: [e.text for e in
                                        self.driver.find_elements(By.CSS_SELECTOR, css)])

    async def attribute(self, css: str, name: str) -> str | None:
        return await self.call(
            lambda: self.driver.find_element(By.CSS_SELECTOR, css).get_attribute(name))

    async def fill(self, css: str, text: str) -> None:
        def do() -> None:
            element = self.driver.find_element(By.CSS_SELECTOR, css)
            element.clear()
            element.send_keys(text)
        await self.call(do)

    async def click(self, css: str) -> None:
        await self.call(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def script(self, source: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, source, *args)

    async def wait_for(self, predicate: Callable[[WebDriver], Any], timeout: float = 5.0,
                       what: str = "the page") -> Any:
        """Poll ``predicate(driver)`` (run in the worker thread) until it is truthy."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                result = await self.call(predicate, self.driver)
                if result:
                    return result
            except (NoSuchElementException, StaleElementReferenceException) as exc:
                last = exc
            if time.monotonic() > deadline:
                page = await self.call(lambda: self.driver.current_url)
                raise AssertionError(f"timed out after {timeout}s waiting for {what} on "
                                     f"{page} (last error: {last})")
            await asyncio.sleep(0.05)

    async def wait_text(self, css: str, text: str, timeout: float = 5.0) -> None:
        await self.wait_for(
            lambda d: text in d.find_element(By.CSS_SELECTOR, css).text, timeout,
            what=f"{text!r} in {css}")

    async def cookie(self, name: str) -> dict[str, Any] | None:
        return await self.call(self.driver.get_cookie, name)

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        saved = await self.call(self.driver.save_screenshot, str(path))
        assert saved, f"could not save {path}"
        return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the test module."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make system-deps` (Debian chromium "
                    "and chromium-driver)")
    profile = tempfile.mkdtemp(prefix="slb-chromium-")
    driver = start_chromium(profile)
    try:
        yield Browser(driver)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
