"""``admin.web.guards``: the body limit and the login rate limit, through the app in-process."""

from __future__ import annotations

import re

import httpx

from admin.app import create_app
from admin.domain.service import AdminService
from admin.domain.store import Store
from admin.settings import AdminConfig, ApiToken
from admin.web.guards import LOGIN_FAILURES, LOGIN_WINDOW, MAX_BODY, LoginLimiter

ADA = ApiToken(name="ada", token="admin-token-0123", role="admin")


def client() -> httpx.AsyncClient:
    app = create_app(AdminConfig(tokens=[ADA]), AdminService(Store(":memory:")))
    # not a loopback name: the login cookie is not Secure, so httpx sends it over http
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://admin.test")


async def test_a_body_over_one_mib_is_413_before_any_handler() -> None:
    async with client() as api:
        headers = {"Authorization": f"Bearer {ADA.token}", "Content-Type": "application/json"}
        reply = await api.post("/api/v1/activate", content=b" " * (MAX_BODY + 1),
                               headers=headers)
        assert reply.status_code == 413 and reply.json()["error"] == "too_large"

        async def chunks():  # no Content-Length: counted as it arrives
            for _ in range(3):
                yield b" " * (MAX_BODY // 2)

        streamed = await api.post("/api/v1/activate", content=chunks(), headers=headers)
        assert streamed.status_code == 413
        small = await api.post("/api/v1/activate", json={"reason": "ok"}, headers=headers)
        assert small.status_code in (200, 202), small.text  # passes through whole


async def login(browser: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await browser.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await browser.post("/ui/login", data={"csrf": csrf.group(1), "token": token})


async def test_failed_logins_are_limited_per_client_even_for_the_right_token() -> None:
    async with client() as browser:
        for _ in range(LOGIN_FAILURES):
            assert (await login(browser, "wrong-token-0123")).status_code == 401
        limited = await login(browser, ADA.token)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= LOGIN_WINDOW


def test_the_limit_lifts_as_failures_leave_the_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(failures=2, window=60, clock=lambda: now[0])
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    now[0] = 30
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 30
    assert limiter.retry_after("10.0.0.2") == 0  # per client
    now[0] = 60.5
    assert limiter.retry_after("10.0.0.1") == 0
