"""Agent-side check execution: TTL expiry and HTTP/TCP probes, as a Consul agent runs them.

* TTL: the check goes critical with output "TTL expired" when no pass/warn/fail/update arrives
  within its TTL (every update restarts the timer). The timer runs on the double's
  :mod:`clock`, like session TTLs, so a test on a ManualClock can move a check past its TTL and
  see the sessions bound to it invalidated (sessions.py) without waiting.
* HTTP: GET every ``interval`` with ``timeout`` (default 10s); 2xx passing, 429 warning,
  anything else or a failed connection critical. Output "HTTP GET <url>: <code> <reason>
  Output: <body>".
* TCP: a connect every ``interval``: passing "TCP connect <addr>: Success", else critical.
* ``SuccessBeforePassing``/``FailuresBeforeCritical``: consecutive results needed to change
  status; the counters start full, so the first result after registration applies at once.

Differences from Consul: the first probe runs right away (Consul waits a random stagger of up
to one interval) and HTTPS targets are not supported.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from dataclasses import dataclass
from urllib.parse import urlsplit

from .clock import Clock, Timer
from .state import CRITICAL, PASSING, WARNING, Catalog, Check, key_of

MAX_OUTPUT = 4096


@dataclass
class CheckDefinition:
    ttl: float = 0.0
    http: str = ""
    method: str = "GET"
    header: dict[str, list[str]] | None = None
    tcp: str = ""
    interval: float = 0.0
    timeout: float = 10.0
    success_before_passing: int = 0
    failures_before_critical: int = 0


class CheckRunner:
    def __init__(self, catalog: Catalog, clock: Clock) -> None:
        self._catalog = catalog
        self._clock = clock
        self._timers: dict[tuple[str, str], Timer] = {}
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._defs: dict[tuple[str, str], CheckDefinition] = {}
        catalog.listeners.append(self._on_catalog_change)

    def has_ttl(self, node: str, check_id: str) -> bool:
        definition = self._defs.get((key_of(node), key_of(check_id)))
        return definition is not None and definition.ttl > 0

    def start(self, chk: Check, definition: CheckDefinition) -> None:
        key = (key_of(chk.node), key_of(chk.check_id))
        self.stop(key)
        self._defs[key] = definition
        if definition.ttl > 0:
            self._arm(key)
        elif definition.http or definition.tcp:
            task = asyncio.get_running_loop().create_task(
                self._probe_loop(chk.node, chk.check_id, definition))
            self._tasks[key] = task

    def ttl_update(self, node: str, check_id: str, status: str, output: str) -> None:
        key = (key_of(node), key_of(check_id))
        self._catalog.update_check(node, check_id, status=status, output=output[:MAX_OUTPUT])
        if key in self._defs:
            self._arm(key)

    def _arm(self, key: tuple[str, str]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        ttl = self._defs[key].ttl
        self._timers[key] = self._clock.call_at(self._clock.now() + ttl,
                                                lambda: self._expire(key))

    def _expire(self, key: tuple[str, str]) -> None:
        self._timers.pop(key, None)
        chk = self._catalog.checks.get(key)
        if chk is None:
            return
        output = ("TTL expired (last output before timeout follows): " + chk.output
                  if chk.output else "TTL expired")
        self._catalog.update_check(chk.node, chk.check_id, status=CRITICAL, output=output)

    async def _probe_loop(self, node: str, check_id: str, definition: CheckDefinition) -> None:
        successes = definition.success_before_passing
        failures = definition.failures_before_critical
        while True:
            if definition.http:
                status, output = await self._probe_http(definition)
            else:
                status, output = await self._probe_tcp(definition)
            if self._catalog.check(node, check_id) is None:
                return
            if status in (PASSING, WARNING):
                successes += 1
                failures = 0
                apply = successes >= definition.success_before_passing
            else:
                failures += 1
                successes = 0
                apply = failures >= definition.failures_before_critical
            if apply:
                self._catalog.update_check(node, check_id, status=status,
                                           output=output[:MAX_OUTPUT])
            await asyncio.sleep(definition.interval)

    async def _probe_http(self, definition: CheckDefinition) -> tuple[str, str]:
        url = definition.http
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            return CRITICAL, f"the Consul double only probes http:// URLs, not {url!r}"
        port = parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"{definition.method} {target} HTTP/1.1", f"Host: {parts.netloc}",
                 "User-Agent: Consul Health Check", "Accept: text/plain, text/*, */*",
                 "Connection: close"]
        for name, values in (definition.header or {}).items():
            lines += [f"{name}: {v}" for v in values]
        writer = None
        try:
            async with asyncio.timeout(definition.timeout):
                reader, writer = await asyncio.open_connection(parts.hostname, port)
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                status_line = await reader.readline()
                code = int(status_line.split()[1])
                body = b""
                while True:  # headers, then the body up to EOF
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                if definition.method != "HEAD":
                    body = await reader.read(MAX_OUTPUT)
        except TimeoutError:
            return CRITICAL, (f"{definition.method} {url}: (Client.Timeout exceeded while "
                              "awaiting headers)")
        except (OSError, ValueError, IndexError) as exc:
            return CRITICAL, f"{definition.method} {url}: {exc}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        try:
            reason = http.HTTPStatus(code).phrase
        except ValueError:
            reason = ""
        output = (f"HTTP {definition.method} {url}: {code} {reason} Output: "
                  f"{body.decode('utf-8', 'replace')}")
        if 200 <= code < 300:
            return PASSING, output
        if code == 429:
            return WARNING, output
        return CRITICAL, output

    async def _probe_tcp(self, definition: CheckDefinition) -> tuple[str, str]:
        host, _, port = definition.tcp.rpartition(":")
        writer = None
        try:
            async with asyncio.timeout(definition.timeout):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
        except (OSError, ValueError, TimeoutError) as exc:
            return CRITICAL, f"dial tcp {definition.tcp}: {exc or 'i/o timeout'}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return PASSING, f"TCP connect {definition.tcp}: Success"

    def _on_catalog_change(self, chk: Check | None, node: str, check_id: str) -> None:
        if chk is None:  # removed
            self.stop((key_of(node), key_of(check_id)))

    def stop(self, key: tuple[str, str]) -> None:
        self._defs.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for key in list(self._defs):
            self.stop(key)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
