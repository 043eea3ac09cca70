"""The admin's own HTTP health checks, for static members of groups that ask for them.

One task per checked member: ``GET path`` every ``interval`` with a ``timeout``; a 2xx or 3xx is
a pass (as nginx's and HAProxy's default checks). ``fails`` consecutive failures mark the member
critical, ``passes`` consecutive passes bring it back. On a change of verdict the group's
verdicts so far go to the sink (``admin.sources.MemberSink``) as one member set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx

from admin.domain.members import Discovered
from admin.sources import MemberSink

log = logging.getLogger("admin.checker")


class HttpChecker:
    """A ``MemberSource``: one checking task per static member of a checked group."""

    name = "check"

    def __init__(self, sink: MemberSink) -> None:
        self.sink = sink
        self.verdicts: dict[str, dict[str, Discovered]] = {}  # group -> address -> verdict
        self._tasks: dict[tuple[str, str], tuple[dict[str, Any], asyncio.Task[None]]] = {}
        self._client: httpx.AsyncClient | None = None

    def sync(self, groups: list[dict[str, Any]]) -> None:
        """Check exactly the static members of groups with a ``health_check``."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for group in groups:
            check = group.get("health_check")
            if check and not group.get("consul"):
                for member in group.get("members", []):
                    wanted[(group["name"], member["address"])] = check
        for key in list(self._tasks):
            check, task = self._tasks[key]
            if wanted.get(key) != check:
                task.cancel()
                del self._tasks[key]
        groups_left = {group for group, _ in wanted}
        self.verdicts = {g: v for g, v in self.verdicts.items() if g in groups_left}
        if self._client is None and wanted:
            self._client = httpx.AsyncClient()
        loop = asyncio.get_running_loop()
        for key, check in wanted.items():
            if key not in self._tasks:
                self._tasks[key] = (check, loop.create_task(self._run(key[0], key[1], check)))

    async def _run(self, group: str, address: str, check: dict[str, Any]) -> None:
        assert self._client is not None
        url = f"http://{address}{check.get('path', '/')}"
        fails_needed, passes_needed = check.get("fails", 3), check.get("passes", 1)
        fails = passes = 0
        healthy: bool | None = None
        while True:
            try:
                response = await self._client.get(url, timeout=check.get("timeout", 2.0))
                ok = response.status_code < 400
                detail = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, f"{type(exc).__name__}: {exc}"
            log.debug("check of %s in %s: %s", address, group, detail)  # changes: admin.health
            if ok:
                passes, fails = passes + 1, 0
                if healthy is not True and passes >= passes_needed:
                    healthy = True
                    self._report(group, address, "passing", detail)
            else:
                fails, passes = fails + 1, 0
                if healthy is not False and fails >= fails_needed:
                    healthy = False
                    self._report(group, address, "critical", detail)
            await asyncio.sleep(check.get("interval", 5.0))

    def _report(self, group: str, address: str, health: str, detail: str) -> None:
        verdicts = self.verdicts.setdefault(group, {})
        verdicts[address] = Discovered(address, health=health, health_detail=detail,
                                       source=self.name)
        self.sink.on_members(self.name, group, list(verdicts.values()))

    def error_counts(self) -> dict[str, int]:
        return {}  # a failed check is a verdict, not an error of the source

    async def close(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        for _, task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
