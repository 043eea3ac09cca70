"""What the edge does before any handler runs, so no handler can forget it.

- ``BodyLimit`` (ASGI middleware): a request body over ``MAX_BODY`` (1 MiB) is answered 413
  before the app sees it. The admin's largest real body, a group with thousands of static
  members, is a few hundred KiB; without a cap one request could fill the store and every page
  that shows it. A declared ``Content-Length`` over the cap is refused unread; a chunked body is
  read only up to the cap.
- The UI's pages carry CSP, ``X-Frame-Options: DENY`` and ``no-store`` from
  ``admin.web.ui.pages.harden``, which every page and redirect goes through.
- ``LoginLimiter``: failed logins are counted per client address; after ``LOGIN_FAILURES`` in
  ``LOGIN_WINDOW`` seconds that client gets 429 until the oldest failure leaves the window,
  which turns guessing a token into years of work without locking the real user out for long.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from slb.errors import error_body

MAX_BODY = 1024 * 1024
LOGIN_FAILURES = 5
LOGIN_WINDOW = 60.0  # seconds
TRACKED_CLIENTS = 10000  # failed-login histories kept; the oldest go first

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
App = Callable[[Scope, Receive, Send], Any]


class BodyLimit:
    def __init__(self, app: App, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        # read the body here (bounded), then hand the app a receive that replays it
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # the client went away: the app sees it as before
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return dict(await receive())

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(error_body("too_large", f"the body is larger than {self.limit} "
                                     "bytes", [f"body: at most {self.limit} bytes"])).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we get here
    return None


class LoginLimiter:
    """Failed logins per client address in a sliding window."""

    def __init__(self, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window = window
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        if client not in self._seen:
            return 0.0
        times = self._recent(client)
        if len(times) < self.failures:
            return 0.0
        return max(0.0, times[0] + self.window - self.clock())

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        while len(self._seen) > TRACKED_CLIENTS:
            self._seen.pop(next(iter(self._seen)))

    def _recent(self, client: str) -> deque[float]:
        times = self._seen.setdefault(client, deque(maxlen=self.failures))
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        return times
