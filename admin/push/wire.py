"""What travels between a pusher and a node's control API: requests, JSON bodies, error texts.

``NodeClient`` is one node's connection: every request carries the node's token and the
leader's term (``X-SLB-Term``, fencing: admin.ha), goes over one keep-alive connection, and is
retried once on a fresh connection when the pooled one breaks before any answer (why: the
``admin.push.pusher`` docstring). Failures become ``Failed``, which says whether the node's
state is unknown afterwards.

Why not a general HTTP client: a health flip sends one small PATCH to each of 50 nodes at once,
all from the admin's one event loop, and a general client's per-request Python work (httpx:
about 1.5 ms of the loop per request, measured with py-spy during flips) is what made the 50th
node wait for the 49 before it: ~80 ms per flip. Here a request is one preformatted write on a
connection the client keeps (an ``asyncio.Protocol``), and the answer is parsed by httptools
(the C parser the node itself uses): about a tenth of that. Only what the control API needs is
spoken: HTTP/1.1 with ``Content-Length`` bodies (the node always sends one; an answer that
ends with the connection instead counts as a broken connection), ``http://`` and
``https://`` (httpx's default TLS context, so certificates verify as before), one request at a
time per connection.

A node answers errors as ``{"error", "message", "details": [...]}``; ``http_error`` turns one
into the line shown as a node's ``last_error``, whatever the node sent (JSON or not).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import ssl
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import httptools
import httpx

if TYPE_CHECKING:
    from admin.push.targets import NodeTarget

log = logging.getLogger("admin.push")
TERM_HEADER = "X-SLB-Term"
KEEPALIVE_EXPIRY = 60.0  # seconds a node's idle connection is kept (reconcile: every 10 s)


class Failed(Exception):
    """A push or check that did not succeed; retried with backoff."""

    def __init__(self, message: str, *, recheck: bool = False) -> None:
        super().__init__(message)
        self.recheck = recheck  # the node's state is unknown now: GET it before pushing


class Reply:
    """A node's answer: its status and body."""

    __slots__ = ("content", "status_code")

    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code = status_code
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class _Broken(Exception):
    """The connection ended (or sent garbage) before a whole answer: retried once."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` sends one request and waits for its answer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future[Reply] | None = None
        self.body: list[bytes] = []
        self.open = True
        self.reusable = True  # False once an answer said ``Connection: close``
        self.idle_since = loop.time()

    async def exchange(self, request: bytes, timeout: float) -> Reply:
        """Send ``request`` and wait for its answer; TimeoutError after ``timeout`` seconds."""
        assert self.transport is not None and self.answer is None
        self.answer = self.loop.create_future()
        self.body = []
        timer = self.loop.call_later(timeout, self._time_out)
        self.transport.write(request)
        try:
            return await self.answer
        finally:
            timer.cancel()
            self.answer = None
            self.idle_since = self.loop.time()

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()  # nothing is owed to the node: no graceful close

    # -- asyncio.Protocol and the parser's callbacks ----------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(_Broken(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(_Broken(f"connection closed: {exc}" if exc else "connection closed"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.reusable = self.parser.should_keep_alive()
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(Reply(self.parser.get_status_code(), b"".join(self.body)))

    def _time_out(self) -> None:
        self._fail(TimeoutError())

    def _fail(self, exc: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc)


class NodeClient:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reconnects = 0  # requests retried on a fresh connection (a stale pooled one)
        self._connection: _Connection | None = None
        self._url = ""  # the control URL the connection goes to

    async def aclose(self) -> None:
        self._drop()

    async def request(self, target: NodeTarget, term: int | None, method: str, path: str,
                      body: bytes | None = None) -> Reply:
        request = _format(target, term, method, path, body)
        retried = False
        while True:
            try:
                left = self.timeout
                connection = self._kept(target.control_url)
                if connection is None:
                    clock = asyncio.get_running_loop().time
                    started = clock()
                    async with asyncio.timeout(left):
                        connection = await self._connect(target.control_url)
                    left -= clock() - started  # one deadline for connect and answer
                # (the answer's own timer, not an asyncio.timeout and its task bookkeeping:
                # a 50-node fan-out's CPU 8.8 -> 7.7 ms, nodes answering late as real ones do)
                reply = await connection.exchange(request, max(left, 0.0))
            except TimeoutError:
                self._drop()  # a late answer must not be read as the next request's
                # a change may or may not have been applied: find out before the next push
                raise Failed(f"{method} {path}: timed out", recheck=True) from None
            except _Broken as exc:
                self._drop()
                if retried:
                    raise Failed(f"{method} {path}: {exc}", recheck=True) from None
                retried = True  # a stale pooled connection: once more, on a fresh one
                self.reconnects += 1
                log.info("node %s: %s %s: %s; retrying on a new connection", target.name,
                         method, path, exc)
                continue
            except OSError as exc:  # (ssl.SSLError too: a handshake that failed)
                # refused, unreachable: a GET changed nothing, a change was not received
                self._drop()
                raise Failed(f"{method} {path}: ConnectError: {exc.strerror or exc}",
                             recheck=method != "GET") from None
            if not self._connection or not self._connection.reusable:
                self._drop()
            return reply

    def _kept(self, url: str) -> _Connection | None:
        """The kept connection to ``url`` if it is still good."""
        kept = self._connection
        if kept is not None and kept.open and self._url == url \
                and kept.loop.time() - kept.idle_since < KEEPALIVE_EXPIRY:
            return kept
        return None

    async def _connect(self, url: str) -> _Connection:
        """A new connection to ``url``, kept in place of the one before."""
        loop = asyncio.get_running_loop()
        self._drop()
        parts = urlsplit(url)
        tls = _tls_context() if parts.scheme == "https" else None
        port = parts.port or (443 if tls is not None else 80)
        _, connection = await loop.create_connection(
            lambda: _Connection(loop), parts.hostname or "", port, ssl=tls)
        self._connection, self._url = connection, url
        return connection

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default context (its CA bundle, verification on), made once: loading the CA
    bundle for every new connection would cost milliseconds each."""
    return httpx.create_ssl_context()


def _format(target: NodeTarget, term: int | None, method: str, path: str,
            body: bytes | None) -> bytes:
    """The request's bytes: its line, headers and body."""
    head = _head(target.control_url, target.token, term, method, path, body is not None)
    if body is None:
        return head + b"\r\n"
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


@functools.lru_cache(maxsize=1024)
def _head(url: str, token: str | None, term: int | None, method: str, path: str,
          with_body: bool) -> bytes:
    """A request's line and headers but its length, made once per node, term and request
    (the same PATCH goes to every node on every flip: a request's bytes 2.3 -> 0.4 us).
    Bounded: the kinds of request times the nodes, with room for a few terms."""
    parts = urlsplit(url)
    lines = [f"{method} {parts.path.rstrip('/')}{path} HTTP/1.1", f"Host: {parts.netloc}",
             "Accept: application/json"]
    if term is not None:
        lines.append(f"{TERM_HEADER}: {term}")  # fencing: see admin.ha
    if token is not None:
        if any(c in token for c in "\r\n\0"):
            raise Failed(f"{method} {path}: the node's token holds a line break or NUL")
        lines.append(f"Authorization: Bearer {token}")
    if with_body:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def json_or_empty(response: Reply) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def http_error(method: str, path: str, response: Reply) -> str:
    body = json_or_empty(response)
    text = f"{method} {path}: HTTP {response.status_code}"
    reason = body.get("error")
    message = body.get("message") or response.text[:200].strip()
    if reason:
        text += f" {reason}"
    if message:
        text += f": {message}"
    details = body.get("details")
    if isinstance(details, list) and details:
        text += " (" + "; ".join(str(e) for e in details[:10]) + ")"
    return text
